"""``LitBlockCLI``: the LightningCLI behind ``lit-block fit/validate/test/predict``."""

from __future__ import annotations

from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningCLI

from lit_block.cli import LIGHTNING_SUBCOMMANDS
from lit_block.tracking import LitBlockMLFlowLogger, MLflowSaveConfigCallback, name_and_tag_run


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
