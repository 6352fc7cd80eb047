"""``flex``: FlexAttention with one ``BlockMask`` per batch, built from the layout's ``mask_mod``.

The mask is computed once per batch (all layers share it). Backward needs a GPU; on CPU, torch
only runs the forward.
"""

from __future__ import annotations

import functools

import torch

from lit_block.attention.base import BlockAttention
from lit_block.layout import BlockLayout


@functools.cache
def _compiled_flex_attention():
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


def block_mask_mod(layout: BlockLayout):
    """The layout's predicate as a FlexAttention ``mask_mod(b, h, q, kv) -> bool``."""
    block_ids = layout.block_ids
    query_global = layout.query_is_global()
    valid = layout.attention_mask

    def mask_mod(b, h, q_idx, kv_idx):
        same_block = block_ids[b, q_idx] == block_ids[b, kv_idx]
        visible = query_global[b, q_idx] | same_block
        return (kv_idx <= q_idx) & visible & valid[b, kv_idx] & valid[b, q_idx]

    return mask_mod


class FlexBlockAttention(BlockAttention):
    name = "flex"

    def __init__(self, layout: BlockLayout, compile: bool | None = None):
        from torch.nn.attention.flex_attention import create_block_mask

        super().__init__(layout)
        device = layout.block_ids.device
        T = layout.seq_len
        self.block_mask = create_block_mask(block_mask_mod(layout), layout.batch_size, None, T, T, device=device)
        # eager flex is a slow reference; compiled flex is the fused kernel (GPU)
        self.compile = device.type == "cuda" if compile is None else compile

    def __call__(self, query, key, value, scaling=None, dropout=0.0):
        from torch.nn.attention.flex_attention import flex_attention

        self._no_dropout(self.name, dropout)
        attend = _compiled_flex_attention() if self.compile else flex_attention
        groups = query.shape[1] // key.shape[1]
        out = attend(query, key, value, block_mask=self.block_mask, scale=scaling, enable_gqa=groups > 1)
        return out.transpose(1, 2).contiguous()
