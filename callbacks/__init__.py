"""Lightning callbacks for block distillation: dropout schedule, sink initialisation, token weights, export;
and two that LitBlockCLI adds to every trainer: the finite-loss guard and the MLflow run in checkpoints."""

from callbacks.block_dropout import BlockDropoutScheduler
from callbacks.export import StudentExporter
from callbacks.finite_loss import FiniteLossGuard, NonFiniteLossError
from callbacks.mlflow_run import MlflowRunInCheckpoint
from callbacks.sensitivity import AttentionSensitivityWeighting
from callbacks.sink_init import SinkTokenInitializer

__all__ = ["AttentionSensitivityWeighting", "BlockDropoutScheduler", "FiniteLossGuard", "MlflowRunInCheckpoint",
           "NonFiniteLossError", "SinkTokenInitializer", "StudentExporter"]
