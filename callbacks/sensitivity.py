"""``AttentionSensitivityWeighting``: weight tokens by how much block attention changes the teacher.

For each position, the divergence ``KL(teacher_full || teacher_block)`` measures how sensitive its
prediction is to losing cross-block context. Weights are that divergence normalised to mean 1 over
the valid positions of the batch, sharpened or flattened by ``1 / temperature``, and clipped to
``[min_weight, max_weight]``. The step (``lit_block.distillation_step``) computes them from the
teacher's block-attention pass, reusing the full-attention states its loss needs; this callback only
hands the module those three numbers when training starts, and takes them back when it ends.
"""

from __future__ import annotations

import lightning as L

from lit_block.distillation_step import SensitivityWeighting


class AttentionSensitivityWeighting(L.Callback):
    def __init__(self, temperature: float = 1.0, min_weight: float = 0.1, max_weight: float = 10.0):
        self.settings = SensitivityWeighting(temperature, min_weight, max_weight)  # checks the numbers

    def on_fit_start(self, trainer, pl_module) -> None:
        pl_module.sensitivity = self.settings

    def on_fit_end(self, trainer, pl_module) -> None:
        pl_module.sensitivity = None  # a later fit without this callback trains unweighted
