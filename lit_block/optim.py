"""The training modules' optimizer and learning-rate schedule, set from config.

    model:
      init_args:
        learning_rate: 2.0e-5
        schedule: {warmup_steps: 20, decay: cosine, min_lr_ratio: 0.1}

AdamW over parameter groups (the student's weights, and the sinks at their own rate); every group's
rate follows the same multiplier: a linear warm-up from 0 over ``warmup_steps`` optimizer steps,
then ``constant``, ``linear`` or ``cosine`` decay to ``min_lr_ratio`` of the base rate at the last
step (the trainer's ``estimated_stepping_batches``). The multiplier scales each group's own rate, so
the sinks keep their ratio to the weights. LightningCLI's ``--optimizer`` / ``--lr_scheduler`` would
replace the groups with one: use these settings instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from lit_block.errors import UsageError, check_number

DECAYS = ("constant", "linear", "cosine")


@dataclass
class LRSchedule:
    warmup_steps: int = 0
    decay: str = "constant"
    min_lr_ratio: float = 0.0

    def __post_init__(self):
        check_number("schedule.warmup_steps", self.warmup_steps, low=0, integer=True)
        check_number("schedule.min_lr_ratio", self.min_lr_ratio, low=0, high=1)
        if self.decay not in DECAYS:
            raise UsageError(f"schedule.decay must be one of {', '.join(DECAYS)}, got {self.decay!r}")

    def multiplier(self, step: int, total_steps: int) -> float:
        """The factor on every group's base rate at optimizer step ``step`` (0-based) of ``total_steps``."""
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps  # never 0: the first step already learns
        if self.decay == "constant":
            return 1.0
        span = max(1, total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        shape = 1 - progress if self.decay == "linear" else 0.5 * (1 + math.cos(math.pi * progress))
        return self.min_lr_ratio + (1 - self.min_lr_ratio) * shape


def optimizer_and_schedule(groups: list[dict], schedule: LRSchedule | None, total_steps: int):
    """What ``configure_optimizers`` returns: AdamW over ``groups`` (each with its ``lr``), and the schedule
    stepped every optimizer step."""
    optimizer = torch.optim.AdamW(groups)
    schedule = schedule or LRSchedule()
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: schedule.multiplier(step, total_steps))
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step", "name": "lr"}}
