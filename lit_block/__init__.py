"""lit-block: block attention for causal LMs, as reproducible Lightning experiments."""

from lit_block.layout import GLOBAL_BLOCK, BlockLayout, layout_from_tokens, pack_sample, pack_tokens
from lit_block.model import BlockAttentionLM

__all__ = ["GLOBAL_BLOCK", "BlockAttentionLM", "BlockLayout", "layout_from_tokens", "pack_sample", "pack_tokens"]
__version__ = "0.1.0"
