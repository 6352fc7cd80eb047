"""``LitBlockCLI``: the LightningCLI behind ``lit-block fit/validate/test/predict``."""

from __future__ import annotations

from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningCLI

from lit_block.cli import LIGHTNING_SUBCOMMANDS
from lit_block.tracking import LitBlockMLFlowLogger, MLflowSaveConfigCallback, name_and_tag_run


def interpolation_mode() -> str:
    """``omegaconf+`` (interpolation after all configs and overrides merge), with ``${model...}`` paths
    read from the config's root rather than the subcommand's; plain ``omegaconf`` on older jsonargparse."""
    from jsonargparse import set_parsing_settings

    try:
        set_parsing_settings(omegaconf_absolute_to_relative_paths=True)
    except TypeError:  # jsonargparse without the setting
        return "omegaconf"
    return "omegaconf+"


def model_language_model(model) -> str:
    """The language model a module config names (its tokenizer is the data's): ``teacher`` or ``model_name_or_path``."""
    args = model.get("init_args") or {}
    return args.get("teacher") or args.get("model_name_or_path") or "smollm2-135m"


class LitBlockCLI(LightningCLI):
    """LightningCLI in subclass mode: any LightningModule / LightningDataModule by ``class_path``.

    Defaults: MLflow logger (sqlite ``./mlflow.db``), the resolved config logged as an MLflow
    artifact, OmegaConf interpolation (``${...}``) resolved after every ``--config`` file and
    command-line override is merged (jsonargparse's ``omegaconf+`` mode), and the data's tokenizer
    linked to the model's language model (never repeated in YAML).
    """

    def __init__(self, args: list[str] | None = None, run: bool = True):
        omegaconf = {"parser_mode": interpolation_mode()}
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

    def add_arguments_to_parser(self, parser) -> None:
        # derived, not repeated: a DataModule with a `tokenizer` gets the model's language model
        parser.link_arguments("model", "data.init_args.tokenizer", compute_fn=model_language_model)

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        name_and_tag_run(config.trainer.logger, self.subcommand or "run", config.model.class_path, config.data.class_path)

    def _report_run(self) -> None:
        logger = self.trainer.logger
        if isinstance(logger, LitBlockMLFlowLogger) and logger._run_id is not None:
            print(f"\nMLflow run {logger.run_id} in experiment {logger._experiment_name!r}")
            print(f"  browse: mlflow ui --backend-store-uri {logger._tracking_uri}")

    after_fit = after_validate = after_test = after_predict = _report_run
