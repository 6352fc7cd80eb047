"""``FiniteLossGuard``: stop training at the first non-finite loss, with an error naming the step.

Lightning has nothing that does this (``detect_anomaly`` is slow autograd debugging; ``EarlyStopping``'s
``check_finite`` stops quietly and the run ends FINISHED). The loss is checked before its backward, so
no NaN gradient reaches the weights or a checkpoint; the error fails ``fit`` and its MLflow run
(FAILED). ``LitBlockCLI`` adds it to every trainer. The check reads the loss on the host: one
device sync per checked step (``every_n_steps`` spaces them out).
"""

from __future__ import annotations

import lightning as L
import torch

from lit_block.errors import UsageError


class NonFiniteLossError(UsageError):
    """The training loss became NaN or infinite (settings, data or numerics: not a bug in lit-block)."""


class FiniteLossGuard(L.Callback):
    def __init__(self, every_n_steps: int = 1):
        if not isinstance(every_n_steps, int) or every_n_steps < 1:
            raise UsageError(f"FiniteLossGuard every_n_steps must be a positive integer, got {every_n_steps!r}")
        self.every_n_steps = every_n_steps
        self._batch = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._batch = batch_idx  # for the message: which batch of the epoch

    def on_before_backward(self, trainer, pl_module, loss: torch.Tensor) -> None:
        if trainer.global_step % self.every_n_steps:
            return
        if not bool(torch.isfinite(loss.detach()).all()):  # the host sync of the check
            value = loss.detach().float().mean().item()  # nan, inf or -inf
            raise NonFiniteLossError(
                f"training loss is {value} at global step {trainer.global_step} (epoch {trainer.current_epoch}, "
                f"batch {self._batch}); training stopped: check the learning rate, temperature and data")
