"""Other segmentation datasets (e.g. the paper's released SemanticSeg) in this corpus's schema.

    lit-block data import PATH_OR_HUB_ID --output data/external --segments-column segments

A source is a folder written by ``save_to_disk``, a local ``.json``/``.jsonl``/``.parquet``/``.csv``
file, or a hub id (for users with hub access). Documents come either as a list of segment texts
(``--segments-column``) or as text plus boundary character offsets (``--boundaries-column``);
per-level columns (``--level-columns coarse=chapters fine=paragraphs``) fill each level, otherwise
the one boundary set fills all three.
"""

from __future__ import annotations

from pathlib import Path

from datamodules.corpus.schema import LEVELS
from lit_block.errors import UsageError

FILE_FORMATS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}


def _load(source: str):
    from datasets import DatasetDict, load_dataset, load_from_disk

    path = Path(source)
    if path.is_dir() and ((path / "dataset_dict.json").is_file() or (path / "dataset_info.json").is_file()):
        data = load_from_disk(str(path))
    elif path.is_file():
        if path.suffix not in FILE_FORMATS:
            raise UsageError(f"{path}: unsupported file type {path.suffix!r}; use one of {sorted(FILE_FORMATS)}")
        data = load_dataset(FILE_FORMATS[path.suffix], data_files=str(path))
    elif path.exists():
        raise UsageError(f"{source}: a folder without dataset_dict.json or dataset_info.json (not written by "
                         "save_to_disk); give such a folder or a data file")
    else:
        try:
            data = load_dataset(source)  # a hub id
        except (OSError, ValueError) as err:  # datasets' not-found and offline errors
            raise UsageError(f"{source}: no such file or folder, and it could not be loaded as a hub dataset "
                             f"({' '.join(str(err).split())[:300]})") from err
    return data if isinstance(data, DatasetDict) else DatasetDict({"train": data})


def _offsets_from_segments(segments: list[str], joiner: str) -> tuple[str, list[int]]:
    text, starts = "", []
    for i, seg in enumerate(segments):
        if i:
            text += joiner
            starts.append(len(text))
        text += seg
    return text, starts


def _offsets(value, where: str, length: int) -> list[int]:
    """Boundary offsets as ints in ``(0, length)``: a list of whole numbers, nothing else."""
    if value is None or isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise UsageError(f"{where}: expected a list of character offsets, got {value!r:.80}")
    out = []
    for o in value:
        if isinstance(o, bool) or not isinstance(o, (int, float)) or (isinstance(o, float) and not o.is_integer()):
            raise UsageError(f"{where}: offset {o!r} is not a whole number of characters")
        if not 0 < o < length:
            raise UsageError(f"{where}: offset {int(o)} is outside the text (length {length})")
        out.append(int(o))
    return out


def convert_row(row: dict, index: int, split: str, source: str, columns: dict, joiner: str) -> dict:
    """One external row in this corpus's schema; a missing column, a bad value or a bad offset is named."""
    def column(key: str, name: str | None = None):
        name = name or columns[key]
        if name not in row:
            raise UsageError(f"{source}: column {name!r} (for {key}) not found; columns are {sorted(row)}")
        return row[name]

    where = f"{source} ({split} row {index})"
    if columns.get("segments"):
        segments = column("segments")
        if isinstance(segments, (str, bytes)) or not isinstance(segments, (list, tuple)) or not segments \
                or not all(isinstance(seg, str) for seg in segments):
            raise UsageError(f"{where}: column {columns['segments']!r} must hold a non-empty list of segment "
                             f"texts, got {segments!r:.80}")
        text, bounds = _offsets_from_segments(list(segments), joiner)
        bounds = _offsets(bounds, f"{where}: an empty segment at either end; its boundary", len(text))
    else:
        text = column("text")
        if not isinstance(text, str) or not text.strip():
            raise UsageError(f"{where}: column {columns['text']!r} must hold a non-empty text, got {text!r:.80}")
        bounds = _offsets(column("boundaries"), f"{where} column {columns['boundaries']!r}", len(text))
    per_level = {lv: bounds for lv in LEVELS}
    for lv, name in (columns.get("levels") or {}).items():
        if lv not in LEVELS:
            raise UsageError(f"unknown level {lv!r} in --level-columns; levels are {', '.join(LEVELS)}")
        per_level[lv] = _offsets(column(lv, name), f"{where} column {name!r}", len(text))
    category = row.get(columns["category"], "external") if columns.get("category") else "external"
    out = {"id": f"{Path(source).name}-{split}-{index:06d}", "text": text, "category": str(category),
           "source": source, "split": split}
    out.update({f"boundaries_{lv}": sorted(set(per_level[lv])) for lv in LEVELS})
    return out


def import_dataset(source: str, output: str, columns: dict, joiner: str = "\n\n", overwrite: bool = False) -> dict[str, int]:
    """Convert ``source`` and save it at ``output`` (atomically; never over the source or a folder lit-block did
    not write unless ``overwrite``); returns documents per split."""
    from datasets import Dataset, DatasetDict

    from lit_block.output_dir import check_not_inside, check_output, output_dir

    if not columns.get("segments") and not columns.get("boundaries"):
        raise UsageError("give --segments-column or --boundaries-column (with --text-column)")
    if Path(source).exists():
        check_not_inside(output, source)
    check_output(output, overwrite)
    data = _load(source)
    converted = {
        split: Dataset.from_list([convert_row(r, i, split, source, columns, joiner) for i, r in enumerate(rows)])
        for split, rows in data.items()
    }
    with output_dir(output, overwrite, command="data import") as staging:
        DatasetDict(converted).save_to_disk(str(staging))
    return {split: len(rows) for split, rows in converted.items()}
