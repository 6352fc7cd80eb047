"""LightningDataModules of lit-block and the corpus builders they read."""

from datamodules.distill import DistillDataModule
from datamodules.semantic_seg import SemanticSegDataModule
from datamodules.text_blocks import TextBlocksDataModule

__all__ = ["DistillDataModule", "SemanticSegDataModule", "TextBlocksDataModule"]
