"""``lit-block data ...``: build the corpus, or describe its sources."""

from __future__ import annotations

import dataclasses

from datamodules.corpus.build import BuildConfig, build
from lit_block.errors import UsageError


def _build(args) -> int:
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


def _sources(args) -> int:
    from datamodules.corpus.sources import all_sources, heldout_sources

    print("| source | category | license | coarse / middle / fine | packages |\n|---|---|---|---|---|")
    for s in all_sources():
        pk = ", ".join(f"{p.manager}:{p.name}={p.version}" for p in s.packages)
        print(f"| {s.name} | {s.category} | {s.license} | {' / '.join(s.level_names)} | {pk} |")
    # held-out evaluation families: listed apart, marked; only `data build --heldout` builds them
    for s in heldout_sources():
        pk = ", ".join(f"{p.manager}:{p.name}={p.version}" for p in s.packages)
        print(f"| {s.name} (held-out) | {s.category} (held-out) | {s.license} | {' / '.join(s.level_names)} | {pk} |")
    print("\n(held-out): evaluation-only families, never in the default build; `lit-block data build --heldout` "
          "builds only them, all in the test split")
    return 0


def _import(args) -> int:
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


def build_parser():
    from lit_block.command_line import command_parser

    d = BuildConfig()
    b = command_parser("lit-block data build", "Fetch, parse and write the corpus (a Hugging Face dataset on disk).")
    b.add_argument("--output", default=d.output, help="dataset folder (replaced atomically)")
    b.add_argument("--overwrite", action="store_true", help="replace --output even if lit-block did not write it "
                   "(it is never replaced otherwise)")
    b.add_argument("--cache-dir", default=d.cache_dir, help="package cache (null: $LIT_BLOCK_CACHE/corpus)")
    b.add_argument("--tokenizer", default=d.tokenizer, help="tokenizer for token counts")
    b.add_argument("--sources", nargs="+", default=d.sources, help="only these sources (null: all of "
                   "`lit-block data sources`)")
    b.add_argument("--min-tokens", type=int, default=d.min_tokens, help="shorter documents are skipped")
    b.add_argument("--max-tokens", type=int, default=d.max_tokens, help="longer documents are cut at a boundary")
    b.add_argument("--max-raw-chars", type=int, default=d.max_raw_chars, help="text parsed per source")
    b.add_argument("--seed", type=int, default=d.seed, help="seed of the train/validation/test assignment")
    b.add_argument("--offline", action="store_true", help="use the package cache only")
    b.add_argument("--heldout", action="store_true", help="build ONLY the held-out evaluation families (marked "
                   "in `lit-block data sources`; never in the default build), every document in the test split, "
                   "into data/heldout-families unless --output names another folder")
    i = command_parser("lit-block data import", "Convert another segmentation dataset (local or hub) to this schema.")
    i.add_argument("source", help="a save_to_disk folder, a .json/.jsonl/.parquet/.csv file, or a hub id")
    i.add_argument("--output", required=True, help="dataset folder (written atomically; never the source itself)")
    i.add_argument("--overwrite", action="store_true", help="replace --output even if lit-block did not write it")
    i.add_argument("--text-column", default="text", help="column holding the document text")
    i.add_argument("--segments-column", help="column holding a list of segment texts")
    i.add_argument("--boundaries-column", help="column holding boundary character offsets")
    i.add_argument("--category-column", help="column holding each document's category (default: none)")
    i.add_argument("--level-columns", nargs="+", help="LEVEL=COLUMN, e.g. coarse=chapters")
    i.add_argument("--joiner", default="\n\n", help="text put between segments")
    p = command_parser("lit-block data", "The SemanticSeg-style corpus.")
    sub = p.add_subcommands(dest="command")
    sub.add_subcommand("build", b, help="fetch, parse and write the corpus (a Hugging Face dataset on disk)")
    sub.add_subcommand("sources", command_parser("lit-block data sources", "List the corpus's source adapters."),
                       help="list the source adapters")
    sub.add_subcommand("import", i, help="convert another segmentation dataset (local or hub) to this schema")
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    return {"build": _build, "sources": _sources, "import": _import}[args.command](args[args.command])
