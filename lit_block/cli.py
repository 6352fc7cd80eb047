"""The ``lit-block`` command: LightningCLI experiments plus the framework's own subcommands.

    lit-block fit --config experiments/demo/teacher_block_nll.yaml --config my_overrides.yaml
    lit-block validate --config experiments/demo/teacher_block_nll.yaml
    lit-block bench attention --lengths 8192
"""

from __future__ import annotations

import importlib
import sys

LIGHTNING_SUBCOMMANDS = {
    "fit": "train a model (LightningCLI)",
    "validate": "evaluate on the validation set (LightningCLI)",
    "test": "evaluate on the test set (LightningCLI)",
    "predict": "run predictions (LightningCLI)",
}


# the framework's own subcommands: name -> (help, the module whose main(argv) runs it); modules are
# imported only when their subcommand runs, so `lit-block --help` stays fast
FRAMEWORK_SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "pipeline": ("the whole workflow on the embedded defaults: corpus, segmenter, distill, evaluate, sweep, compare",
                 "lit_block.pipeline"),
    "data": ("build the SemanticSeg-style corpus (`data build`, `data sources`, `data import`)", "datamodules.corpus.cli"),
    "segment": ("cut a text file into blocks (trained segmenter or a baseline)", "lit_block.segmentation.cli"),
    "eval-seg": ("the segmenter and every baseline on the corpus's test split, logged to MLflow",
                 "lit_block.segmentation.evaluation"),
    "eval-lm": ("global-block NLL, KL to the teacher and gap recovered for exported students", "lit_block.evaluation_lm"),
    "eval-rag": ("RAG-style QA with every passage a cached block: EM, F1, substring match", "lit_block.rag.evaluation"),
    "sweep": ("run a command over a grid of config values, as nested MLflow runs (resumable)", "lit_block.sweep"),
    "compare": ("table and plots of MLflow runs (a sweep's children, tags, a filter)", "lit_block.compare"),
    "bench": ("benchmarks that print a table (attention, segment, ttft)", "lit_block.benchmarks"),
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
        module = importlib.import_module(FRAMEWORK_SUBCOMMANDS[argv[0]][1])
        return module.main(argv[1:])
    if argv[0] not in LIGHTNING_SUBCOMMANDS and not argv[0].startswith("-"):
        known = ", ".join([*LIGHTNING_SUBCOMMANDS, *FRAMEWORK_SUBCOMMANDS])
        print(f"lit-block: unknown subcommand {argv[0]!r}; choose one of {known}", file=sys.stderr)
        return 2
    from lit_block.lightning_cli import LitBlockCLI  # imported here: Lightning takes seconds to import

    LitBlockCLI(args=argv if argv != sys.argv[1:] else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
