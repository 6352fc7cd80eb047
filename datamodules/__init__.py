"""LightningDataModules of lit-block and the corpus builders they read."""

from datamodules.text_blocks import TextBlocksDataModule

__all__ = ["TextBlocksDataModule"]
