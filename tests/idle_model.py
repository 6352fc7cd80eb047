"""A demo model for tests whose fits run until they are stopped: each step sleeps, so such a fit holds no CPU core
while its test waits (two of them training flat out would halve what the suite's other worker gets)."""

from __future__ import annotations

import time

from lightning.pytorch.demos.boring_classes import BoringModel

IDLE_MODEL = f"--model={__name__}.IdleBoringModel"  # importable where the tests folder is on PYTHONPATH


class IdleBoringModel(BoringModel):
    def training_step(self, batch, batch_idx):
        time.sleep(0.2)
        return super().training_step(batch, batch_idx)
