"""Lightning callbacks for block distillation: dropout schedule, sink initialisation, token weights, export;
and four that LitBlockCLI adds to every trainer: the finite-loss guard, the MLflow run in checkpoints, the
training monitor (learning rate, gradient norm, tokens/s, progress lines in log files) and the dataset record."""

from callbacks.block_dropout import BlockDropoutScheduler
from callbacks.dataset_record import DatasetRecord
from callbacks.export import StudentExporter
from callbacks.finite_loss import FiniteLossGuard, NonFiniteLossError
from callbacks.mlflow_run import MlflowRunInCheckpoint
from callbacks.sensitivity import AttentionSensitivityWeighting
from callbacks.sink_init import SinkTokenInitializer
from callbacks.training_monitor import TrainingMonitor

__all__ = ["AttentionSensitivityWeighting", "BlockDropoutScheduler", "DatasetRecord", "FiniteLossGuard", "MlflowRunInCheckpoint",
           "NonFiniteLossError", "SinkTokenInitializer", "StudentExporter", "TrainingMonitor"]
