"""``BlockDropoutScheduler``: how often each context block is released to full attention.

Released blocks attend to everything before them for one step, so every block in turn becomes a
query over block-encoded context and yields a distillation signal (DESIGN.md section 2). The
probability follows a schedule over optimizer steps; its state is saved with checkpoints.
"""

from __future__ import annotations

import math

import lightning as L

from lit_block.errors import UsageError, check_number

SCHEDULES = ("constant", "linear", "cosine")


class BlockDropoutScheduler(L.Callback):
    def __init__(self, start: float = 0.0, end: float = 0.3, schedule: str = "linear", total_steps: int | None = None,
                 warmup_steps: int = 0):
        if schedule not in SCHEDULES:
            raise UsageError(f"schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
        check_number("start", start, low=0, high=1)  # release probabilities
        check_number("end", end, low=0, high=1)
        if total_steps is not None:
            check_number("total_steps", total_steps, low=1, integer=True)
        check_number("warmup_steps", warmup_steps, low=0, integer=True)
        self.start, self.end, self.schedule = start, end, schedule
        self.total_steps, self.warmup_steps = total_steps, warmup_steps
        self.probability = start

    def value(self, step: int, total: int) -> float:
        """The release probability at optimizer step ``step`` of ``total``."""
        if self.schedule == "constant":
            return self.end
        if step < self.warmup_steps:
            return self.start
        frac = min(1.0, (step - self.warmup_steps) / max(1, total - self.warmup_steps))
        if self.schedule == "cosine":
            frac = (1 - math.cos(math.pi * frac)) / 2
        return self.start + (self.end - self.start) * frac

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        total = self.total_steps or trainer.estimated_stepping_batches
        self.probability = self.value(trainer.global_step, int(total))
        pl_module.release_probability = self.probability

    def state_dict(self) -> dict:
        return {"probability": self.probability, "start": self.start, "end": self.end, "schedule": self.schedule}

    def load_state_dict(self, state: dict) -> None:
        self.probability = state["probability"]
