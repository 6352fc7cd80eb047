"""``lit-block bench NAME``: benchmarks that print a table (speed figures are ratios to a baseline run alongside)."""

from __future__ import annotations

import importlib

from lit_block.errors import UsageError

# name -> the module whose build_parser() and main(argv) run it (imported only when it runs)
BENCHES = {"attention": "lit_block.benchmarks.attention", "segment": "lit_block.benchmarks.segmentation",
           "ttft": "lit_block.benchmarks.ttft", "distill": "lit_block.benchmarks.distill_step",
           "serve": "lit_block.benchmarks.serve"}


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage: lit-block bench {{{','.join(BENCHES)}}} [options]   (lit-block bench NAME --help for its options)")
        return 0 if argv else 2
    if argv[0] not in BENCHES:
        raise UsageError(f"unknown benchmark {argv[0]!r}; choose one of {', '.join(BENCHES)}")
    return importlib.import_module(BENCHES[argv[0]]).main(argv[1:])
