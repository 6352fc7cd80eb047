"""The ``lit-block`` command: LightningCLI experiments plus the framework's own subcommands.

    lit-block fit --config experiments/demo/teacher_block_nll.yaml --config my_overrides.yaml
    lit-block validate --config experiments/demo/teacher_block_nll.yaml
    lit-block bench attention --lengths 8192
"""

from __future__ import annotations

import sys
from collections.abc import Callable

LIGHTNING_SUBCOMMANDS = {
    "fit": "train a model (LightningCLI)",
    "validate": "evaluate on the validation set (LightningCLI)",
    "test": "evaluate on the test set (LightningCLI)",
    "predict": "run predictions (LightningCLI)",
}


def _bench(argv: list[str]) -> int:
    from lit_block.benchmarks import main as bench_main

    return bench_main(argv)


def _data(argv: list[str]) -> int:
    from datamodules.corpus.cli import main as data_main

    return data_main(argv)


def _segment(argv: list[str]) -> int:
    from lit_block.segmentation.cli import main as segment_main

    return segment_main(argv)


def _eval_seg(argv: list[str]) -> int:
    from lit_block.segmentation.evaluation import main as eval_main

    return eval_main(argv)


def _eval_lm(argv: list[str]) -> int:
    from lit_block.evaluation_lm import main as eval_lm_main

    return eval_lm_main(argv)


def _eval_rag(argv: list[str]) -> int:
    from lit_block.rag.evaluation import main as eval_rag_main

    return eval_rag_main(argv)


# the framework's own subcommands: name -> (help, entry point taking the remaining argv)
FRAMEWORK_SUBCOMMANDS: dict[str, tuple[str, Callable[[list[str]], int]]] = {
    "data": ("build the SemanticSeg-style corpus (`data build`, `data sources`, `data import`)", _data),
    "segment": ("cut a text file into blocks (trained segmenter or a baseline)", _segment),
    "eval-seg": ("the segmenter and every baseline on the corpus's test split, logged to MLflow", _eval_seg),
    "eval-lm": ("global-block NLL, KL to the teacher and gap recovered for exported students", _eval_lm),
    "eval-rag": ("RAG-style QA with every passage a cached block: EM, F1, substring match", _eval_rag),
    "bench": ("benchmarks that print a table (attention, segment, ttft)", _bench),
}


def _print_help() -> None:
    print("usage: lit-block SUBCOMMAND [options]\n\nBlock attention experiments (LightningCLI + MLflow).\n\nsubcommands:")
    rows = dict(LIGHTNING_SUBCOMMANDS)
    rows.update({name: help_ for name, (help_, _) in FRAMEWORK_SUBCOMMANDS.items()})
    for name, help_ in rows.items():
        print(f"  {name:<10} {help_}")
    print("\n`lit-block SUBCOMMAND --help` shows a subcommand's options; LightningCLI ones take --config YAML (repeatable).")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        _print_help()
        return 0
    if argv[0] in FRAMEWORK_SUBCOMMANDS:
        return FRAMEWORK_SUBCOMMANDS[argv[0]][1](argv[1:])
    if argv[0] not in LIGHTNING_SUBCOMMANDS and not argv[0].startswith("-"):
        known = ", ".join([*LIGHTNING_SUBCOMMANDS, *FRAMEWORK_SUBCOMMANDS])
        print(f"lit-block: unknown subcommand {argv[0]!r}; choose one of {known}", file=sys.stderr)
        return 2
    from lit_block.lightning_cli import LitBlockCLI  # imported here: Lightning takes seconds to import

    LitBlockCLI(args=argv if argv != sys.argv[1:] else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
