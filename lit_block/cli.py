"""The ``lit-block`` command: LightningCLI experiments plus the framework's own subcommands.

    lit-block fit --config experiments/demo/teacher_block_nll.yaml --config my_overrides.yaml
    lit-block validate --config experiments/demo/teacher_block_nll.yaml
    lit-block bench attention --shapes 8192/512

An expected error (bad input, a missing file, a bad setting) prints one line naming the culprit and
exits with status 2; ``--debug`` (anywhere on the line) or ``LIT_BLOCK_DEBUG=1`` shows its traceback.
"""

from __future__ import annotations

import importlib
import os
import sys

from lit_block.errors import DEBUG_ENV, report

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
    "eval-lm": ("KL gap closed (and NLL gaps) of exported students on held-out samples", "lit_block.evaluation_lm"),
    "eval-rag": ("RAG-style QA with every passage a cached block: EM, F1, substring match", "lit_block.rag.evaluation"),
    "sweep": ("run a command over a grid of config values, as nested MLflow runs (resumable)", "lit_block.sweep"),
    "compare": ("table and plots of MLflow runs (a sweep's children, tags, a filter)", "lit_block.compare"),
    "bench": ("benchmarks that print a table (attention, distill, segment, serve, ttft)", "lit_block.benchmarks"),
    "serve": ("an OpenAI-compatible HTTP server whose context documents are cached blocks", "lit_block.serving.server"),
}


def _print_help() -> None:
    print("usage: lit-block SUBCOMMAND [options]\n\nBlock attention experiments (LightningCLI + MLflow).\n\nsubcommands:")
    rows = dict(LIGHTNING_SUBCOMMANDS)
    rows.update({name: help_ for name, (help_, _) in FRAMEWORK_SUBCOMMANDS.items()})
    for name, help_ in rows.items():
        print(f"  {name:<10} {help_}")
    print("\n`lit-block SUBCOMMAND --help` shows a subcommand's options; LightningCLI ones take --config YAML (repeatable).")


def main(argv: list[str] | None = None) -> int:
    from_command_line = argv is None
    argv = sys.argv[1:] if from_command_line else list(argv)
    if "--debug" in argv:  # tracebacks for every error, in this process and the commands it starts
        argv.remove("--debug")
        os.environ[DEBUG_ENV] = "1"
        if from_command_line:
            sys.argv.remove("--debug")  # LightningCLI reads sys.argv itself
    if not argv or argv[0] in ("-h", "--help"):
        _print_help()
        return 0
    if argv[0] not in LIGHTNING_SUBCOMMANDS and argv[0] not in FRAMEWORK_SUBCOMMANDS:
        known = ", ".join([*LIGHTNING_SUBCOMMANDS, *FRAMEWORK_SUBCOMMANDS])
        print(f"lit-block: unknown subcommand {argv[0]!r}; choose one of {known}", file=sys.stderr)
        return 2
    try:
        if argv[0] in FRAMEWORK_SUBCOMMANDS:
            try:
                return importlib.import_module(FRAMEWORK_SUBCOMMANDS[argv[0]][1]).main(argv[1:])
            except SystemExit as done:  # the parser's --help (0) or usage error (2, already printed): a status
                return done.code if isinstance(done.code, int) else 2
        from lit_block.lightning_cli import LitBlockCLI  # imported here: Lightning takes seconds to import

        LitBlockCLI(args=None if from_command_line else argv)
        return 0
    except BrokenPipeError:  # output piped into a reader that stopped (`| head`): nothing left to say
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - Python's exit flush would fail on the closed pipe again
        return 0
    except KeyboardInterrupt:  # Ctrl-C: what the command wrote is already consistent (runs end KILLED)
        print(f"lit-block {argv[0]}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # expected errors: one line and status 2; anything else keeps its traceback
        nested = argv[0] in ("data", "bench") and len(argv) > 1 and not argv[1].startswith("-")
        return report(" ".join(argv[:2] if nested else argv[:1]), err)


if __name__ == "__main__":
    sys.exit(main())
