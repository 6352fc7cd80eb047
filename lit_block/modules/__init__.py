"""LightningModules of lit-block."""

from lit_block.modules.block_distillation import BlockDistillationModule
from lit_block.modules.block_finetune import BlockFinetuneModule

__all__ = ["BlockDistillationModule", "BlockFinetuneModule"]
