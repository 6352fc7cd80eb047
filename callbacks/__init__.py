"""Lightning callbacks for block distillation: dropout schedule, sink initialisation, token weights, export."""

from callbacks.block_dropout import BlockDropoutScheduler
from callbacks.export import StudentExporter
from callbacks.sensitivity import AttentionSensitivityWeighting
from callbacks.sink_init import SinkTokenInitializer

__all__ = ["AttentionSensitivityWeighting", "BlockDropoutScheduler", "SinkTokenInitializer", "StudentExporter"]
