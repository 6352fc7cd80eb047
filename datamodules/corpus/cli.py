"""``lit-block data ...``: build the corpus, or describe its sources."""

from __future__ import annotations

import argparse
import dataclasses

from datamodules.corpus.build import BuildConfig, build
from lit_block.errors import UsageError


def _build(args: argparse.Namespace) -> int:
    fields = {f.name for f in dataclasses.fields(BuildConfig)}
    cfg = BuildConfig(**{k: v for k, v in vars(args).items() if k in fields and v is not None})
    out, reports, fp = build(cfg)
    print("\n| source | category | raw docs | docs | tokens | skipped |\n|---|---|---|---|---|---|")
    for r in reports:
        skipped = r.error or ", ".join(f"{k}: {v}" for k, v in sorted(r.skipped.items())) or "-"
        print(f"| {r.name} | {r.category} | {r.raw_documents} | {r.documents} | {r.tokens:,} | {skipped} |")
    built = [r for r in reports if r.documents]
    print(f"\n{sum(r.documents for r in reports)} documents, {sum(r.tokens for r in reports):,} tokens, "
          f"{len({r.category for r in built})} categories from {len(built)}/{len(reports)} sources; "
          f"fingerprint {fp}\ndataset: {out}  (card: {out / 'README.md'})")
    return 0


def _sources(args: argparse.Namespace) -> int:
    from datamodules.corpus.sources import all_sources

    print("| source | category | license | coarse / middle / fine | packages |\n|---|---|---|---|---|")
    for s in all_sources():
        pk = ", ".join(f"{p.manager}:{p.name}={p.version}" for p in s.packages)
        print(f"| {s.name} | {s.category} | {s.license} | {' / '.join(s.level_names)} | {pk} |")
    return 0


def _import(args: argparse.Namespace) -> int:
    from datamodules.corpus.external import import_dataset

    bad = [item for item in args.level_columns or [] if "=" not in item]
    if bad:
        raise UsageError(f"--level-columns takes LEVEL=COLUMN, got {bad[0]!r}")
    levels = dict(item.split("=", 1) for item in args.level_columns or [])
    columns = {"text": args.text_column, "segments": args.segments_column, "boundaries": args.boundaries_column,
               "category": args.category_column, "levels": levels}
    counts = import_dataset(args.source, args.output, columns, joiner=args.joiner, overwrite=args.overwrite)
    print(f"imported {counts} into {args.output}")
    return 0


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="lit-block data", description="The SemanticSeg-style corpus.")
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="fetch, parse and write the corpus (a Hugging Face dataset on disk)")
    b.add_argument("--output", default=BuildConfig.output, help="dataset folder (replaced atomically)")
    b.add_argument("--overwrite", action="store_true", default=None,
                   help="replace --output even if lit-block did not write it (it is never replaced otherwise)")
    b.add_argument("--cache-dir", dest="cache_dir", help="package cache (default $LIT_BLOCK_CACHE/corpus)")
    b.add_argument("--tokenizer", help="tokenizer for token counts (default: the embedded teacher's)")
    b.add_argument("--sources", nargs="+", help="only these sources (see `lit-block data sources`)")
    b.add_argument("--min-tokens", dest="min_tokens", type=int)
    b.add_argument("--max-tokens", dest="max_tokens", type=int)
    b.add_argument("--max-raw-chars", dest="max_raw_chars", type=int, help="text parsed per source")
    b.add_argument("--seed", type=int)
    b.add_argument("--offline", action="store_true", default=None, help="use the cache only")
    b.set_defaults(run=_build)
    sub.add_parser("sources", help="list the source adapters").set_defaults(run=_sources)
    i = sub.add_parser("import", help="convert another segmentation dataset (local or hub) to this schema")
    i.add_argument("source", help="a save_to_disk folder, a .json/.jsonl/.parquet/.csv file, or a hub id")
    i.add_argument("--output", required=True, help="dataset folder (written atomically; never the source itself)")
    i.add_argument("--overwrite", action="store_true", help="replace --output even if lit-block did not write it")
    i.add_argument("--text-column", default="text")
    i.add_argument("--segments-column", help="column holding a list of segment texts")
    i.add_argument("--boundaries-column", help="column holding boundary character offsets")
    i.add_argument("--category-column")
    i.add_argument("--level-columns", nargs="+", help="LEVEL=COLUMN, e.g. coarse=chapters")
    i.add_argument("--joiner", default="\n\n", help="text put between segments (default: a blank line)")
    i.set_defaults(run=_import)
    args = p.parse_args(argv)
    return args.run(args)
