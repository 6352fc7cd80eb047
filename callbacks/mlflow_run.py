"""``MlflowRunInCheckpoint``: checkpoints remember their MLflow run, so a resumed fit continues it.

Every checkpoint gets a top-level ``lit_block_mlflow`` entry: ``{"run_id", "experiment_id",
"tracking_uri"}`` of the trainer's first MLflow logger. ``lit-block fit --ckpt_path X`` reads it
(``LitBlockCLI``) and passes ``run_id`` to the logger when that run is in the current store.
``LitBlockCLI`` adds this callback to every trainer.
"""

from __future__ import annotations

import lightning as L
from lightning.pytorch.loggers import MLFlowLogger

CHECKPOINT_KEY = "lit_block_mlflow"


class MlflowRunInCheckpoint(L.Callback):
    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        logger = next((lg for lg in trainer.loggers if isinstance(lg, MLFlowLogger)), None)
        if logger is None or getattr(logger, "_run_id", None) is None:
            return  # no MLflow run (yet): nothing to continue
        checkpoint[CHECKPOINT_KEY] = {"run_id": logger._run_id, "experiment_id": logger._experiment_id,
                                      "tracking_uri": logger._tracking_uri}


def checkpoint_run(checkpoint: dict) -> str | None:
    """The MLflow run id a checkpoint was written by, if any."""
    entry = checkpoint.get(CHECKPOINT_KEY) if isinstance(checkpoint, dict) else None
    return entry.get("run_id") if isinstance(entry, dict) else None
