"""The ``lit-block`` command: LightningCLI experiments plus the framework's own subcommands.

    lit-block fit --config experiments/demo/teacher_block_nll.yaml --config my_overrides.yaml
    lit-block validate --config experiments/demo/teacher_block_nll.yaml
    lit-block bench attention --lengths 8192
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningCLI

from lit_block.tracking import LitBlockMLFlowLogger, MLflowSaveConfigCallback, name_and_tag_run

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


# the framework's own subcommands: name -> (help, entry point taking the remaining argv)
FRAMEWORK_SUBCOMMANDS: dict[str, tuple[str, Callable[[list[str]], int]]] = {
    "data": ("build the SemanticSeg-style corpus (`data build`, `data sources`)", _data),
    "bench": ("benchmarks that print a table (attention backends, ...)", _bench),
}


class LitBlockCLI(LightningCLI):
    """LightningCLI in subclass mode: any LightningModule / LightningDataModule by ``class_path``.

    Defaults: MLflow logger (sqlite ``./mlflow.db``), the resolved config logged as an MLflow
    artifact, OmegaConf interpolation (``${...}``) in YAML files.
    """

    def __init__(self, args: list[str] | None = None, run: bool = True):
        omegaconf = {"parser_mode": "omegaconf"}
        super().__init__(
            model_class=LightningModule,
            datamodule_class=LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            save_config_callback=MLflowSaveConfigCallback,
            save_config_kwargs={"save_to_log_dir": False, "overwrite": True},
            trainer_defaults={"logger": {"class_path": f"{LitBlockMLFlowLogger.__module__}.LitBlockMLFlowLogger"}},
            parser_kwargs={**omegaconf, **{name: omegaconf for name in LIGHTNING_SUBCOMMANDS}},
            args=args,
            run=run,
        )

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        name_and_tag_run(config.trainer.logger, self.subcommand or "run", config.model.class_path, config.data.class_path)

    def _report_run(self) -> None:
        logger = self.trainer.logger
        if isinstance(logger, LitBlockMLFlowLogger) and logger._run_id is not None:
            print(f"\nMLflow run {logger.run_id} in experiment {logger._experiment_name!r}")
            print(f"  browse: mlflow ui --backend-store-uri {logger._tracking_uri}")

    after_fit = after_validate = after_test = after_predict = _report_run


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
    LitBlockCLI(args=argv if argv != sys.argv[1:] else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
