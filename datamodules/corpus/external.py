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

FILE_FORMATS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}


def _load(source: str):
    from datasets import DatasetDict, load_dataset, load_from_disk

    path = Path(source)
    if path.is_dir() and ((path / "dataset_dict.json").is_file() or (path / "dataset_info.json").is_file()):
        data = load_from_disk(str(path))
    elif path.is_file():
        if path.suffix not in FILE_FORMATS:
            raise ValueError(f"{path}: unsupported file type {path.suffix!r}; use one of {sorted(FILE_FORMATS)}")
        data = load_dataset(FILE_FORMATS[path.suffix], data_files=str(path))
    else:
        data = load_dataset(source)  # a hub id
    return data if isinstance(data, DatasetDict) else DatasetDict({"train": data})


def _offsets_from_segments(segments: list[str], joiner: str) -> tuple[str, list[int]]:
    text, starts = "", []
    for i, seg in enumerate(segments):
        if i:
            text += joiner
            starts.append(len(text))
        text += seg
    return text, starts


def convert_row(row: dict, index: int, split: str, source: str, columns: dict, joiner: str) -> dict:
    """One external row in this corpus's schema; a missing column or a bad offset is named."""
    def column(key: str):
        name = columns[key]
        if name not in row:
            raise KeyError(f"{source}: column {name!r} (for {key}) not found; columns are {sorted(row)}")
        return row[name]

    if columns.get("segments"):
        text, bounds = _offsets_from_segments(list(column("segments")), joiner)
    else:
        text, bounds = column("text"), list(column("boundaries") or [])
    per_level = {lv: bounds for lv in LEVELS}
    for lv, name in (columns.get("levels") or {}).items():
        if lv not in LEVELS:
            raise ValueError(f"unknown level {lv!r}; levels are {LEVELS}")
        per_level[lv] = list(row[name])
    for lv, offsets in per_level.items():
        bad = [o for o in offsets if not 0 < o < len(text)]
        if bad:
            raise ValueError(f"{source} row {index}: {lv} boundary {bad[0]} is outside the text (length {len(text)})")
    category = row.get(columns["category"], "external") if columns.get("category") else "external"
    out = {"id": f"{Path(source).name}-{split}-{index:06d}", "text": text, "category": str(category),
           "source": source, "split": split}
    out.update({f"boundaries_{lv}": sorted(set(per_level[lv])) for lv in LEVELS})
    return out


def import_dataset(source: str, output: str, columns: dict, joiner: str = "\n\n") -> dict[str, int]:
    """Convert ``source`` and save it at ``output``; returns documents per split."""
    from datasets import Dataset, DatasetDict

    if not columns.get("segments") and not columns.get("boundaries"):
        raise ValueError("give --segments-column or --boundaries-column (with --text-column)")
    data = _load(source)
    converted = {
        split: Dataset.from_list([convert_row(r, i, split, source, columns, joiner) for i, r in enumerate(rows)])
        for split, rows in data.items()
    }
    DatasetDict(converted).save_to_disk(output)
    return {split: len(rows) for split, rows in converted.items()}
