"""``sdpa``: the reference backend, a dense boolean mask through PyTorch's SDPA (CPU and GPU)."""

from __future__ import annotations

import torch.nn.functional as F

from lit_block.attention.base import BlockAttention
from lit_block.layout import BlockLayout


class SdpaBlockAttention(BlockAttention):
    name = "sdpa"

    def __init__(self, layout: BlockLayout):
        super().__init__(layout)
        self.mask = layout.dense_mask()  # [B, 1, T, T], built once and shared by every layer

    def __call__(self, query, key, value, scaling=None, dropout=0.0):
        groups = query.shape[1] // key.shape[1]
        if groups > 1:  # the masked SDPA kernels take equal head counts; expand K/V (a view, then a copy)
            key = key.repeat_interleave(groups, dim=1)
            value = value.repeat_interleave(groups, dim=1)
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=self.mask, dropout_p=dropout, scale=scaling)
        return out.transpose(1, 2).contiguous()
