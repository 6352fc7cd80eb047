"""A demo model for tests whose fits run until they are stopped: each step sleeps, so such a fit holds no CPU core
while its test waits (two of them training flat out would halve what the suite's other worker gets)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from lightning.pytorch.demos.boring_classes import BoringModel

IDLE_MODEL = f"--model={__name__}.IdleBoringModel"  # importable where the tests folder is on PYTHONPATH


def with_tests_on_path(env: dict[str, str]) -> dict[str, str]:
    """``env`` with the tests folder first on PYTHONPATH: a child process can import this module's classes."""
    return {**env, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), env.get("PYTHONPATH", "")])}


class IdleBoringModel(BoringModel):
    def training_step(self, batch, batch_idx):
        time.sleep(0.2)
        return super().training_step(batch, batch_idx)
