"""MLflow as lit-block's default logger: sqlite tracking, artifacts beside it, config as artifact.

A run started by ``lit-block sweep`` learns where it belongs from the environment, so every
subcommand (LightningCLI or not) nests under the sweep's parent run without extra arguments:
``LIT_BLOCK_MLFLOW_EXPERIMENT`` (the sweep's experiment), ``LIT_BLOCK_MLFLOW_RUN_NAME`` and
``LIT_BLOCK_MLFLOW_TAGS`` (a JSON object; ``mlflow.parentRunId`` among them nests the run).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import MLFlowLogger

DEFAULT_EXPERIMENT = "lit-block"


def default_tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI`` if set, else a sqlite database ``./mlflow.db`` (absolute path)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path('mlflow.db').resolve()}"


def default_artifact_location(tracking_uri: str) -> str | None:
    """Artifacts of a sqlite store go to ``mlartifacts/`` beside the database file."""
    if tracking_uri.startswith("sqlite:///"):
        return str(Path(tracking_uri.removeprefix("sqlite:///")).parent / "mlartifacts")
    return None


class LitBlockMLFlowLogger(MLFlowLogger):
    """``MLFlowLogger`` whose defaults are lit-block's: sqlite store, named runs, tags."""

    def __init__(
        self,
        experiment_name: str = DEFAULT_EXPERIMENT,
        run_name: str | None = None,
        tracking_uri: str | None = None,
        tags: dict[str, Any] | None = None,
        artifact_location: str | None = None,
        log_model: bool = False,
        run_id: str | None = None,
    ):
        tracking_uri = tracking_uri or default_tracking_uri()
        super().__init__(
            experiment_name=experiment_name,
            run_name=run_name,
            tracking_uri=tracking_uri,
            tags=tags,
            artifact_location=artifact_location or default_artifact_location(tracking_uri),
            log_model=log_model,
            run_id=run_id,
        )


def sweep_context() -> dict[str, Any]:
    """What a sweep asked of this run through the environment: ``experiment``, ``run_name``, ``tags``."""
    tags = os.environ.get("LIT_BLOCK_MLFLOW_TAGS")
    try:
        tags = json.loads(tags) if tags else {}
    except json.JSONDecodeError as err:
        raise ValueError(f"LIT_BLOCK_MLFLOW_TAGS is not a JSON object: {tags!r} ({err})") from err
    return {"experiment": os.environ.get("LIT_BLOCK_MLFLOW_EXPERIMENT"), "run_name": os.environ.get("LIT_BLOCK_MLFLOW_RUN_NAME"),
            "tags": {str(k): str(v) for k, v in tags.items()}}


def name_and_tag_run(logger_config: Any, subcommand: str, model_class: str, data_class: str) -> None:
    """Fill an MLflow logger's config (a jsonargparse namespace) with a run name and tags, in place."""
    if not hasattr(logger_config, "class_path") or not logger_config.class_path.endswith("MLFlowLogger"):
        return
    args = logger_config.init_args
    model, data = model_class.rsplit(".", 1)[-1], data_class.rsplit(".", 1)[-1]
    sweep = sweep_context()
    if sweep["experiment"]:
        args.experiment_name = sweep["experiment"]
    if sweep["run_name"]:
        args.run_name = sweep["run_name"]
    if not args.get("run_name"):
        args.run_name = f"{subcommand}-{model}-{time.strftime('%Y%m%d-%H%M%S')}"
    tags = {"lit_block.subcommand": subcommand, "lit_block.model": model, "lit_block.data": data}
    args.tags = {**tags, **(args.get("tags") or {}), **sweep["tags"]}


class MLflowSaveConfigCallback(SaveConfigCallback):
    """Logs the resolved config of the run as the MLflow artifact ``config.yaml``."""

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        config = self.parser.dump(self.config, skip_none=False)
        for logger in trainer.loggers:
            if isinstance(logger, MLFlowLogger):
                logger.experiment.log_text(logger.run_id, config, "config.yaml")


def metric_key(name: str) -> str:
    """A table row name as an MLflow metric prefix: ``"teacher, full attention"`` -> ``teacher_full_attention``."""
    return "_".join("".join(c if c.isalnum() or c in "-." else " " for c in name).split())


def start_mlflow_run(experiment: str, run_name: str):
    """An MLflow run (a context manager) in ``experiment`` on lit-block's default store, for commands
    that log without a Trainer (``eval-seg``, ``eval-lm``)."""
    import mlflow

    sweep = sweep_context()
    experiment = sweep["experiment"] or experiment
    uri = default_tracking_uri()
    mlflow.set_tracking_uri(uri)
    if mlflow.get_experiment_by_name(experiment) is None:
        mlflow.create_experiment(experiment, artifact_location=default_artifact_location(uri))
    mlflow.set_experiment(experiment)
    return mlflow.start_run(run_name=sweep["run_name"] or run_name, tags=sweep["tags"] or None)
