"""``flex``: FlexAttention with one ``BlockMask`` per batch, built from the layout's ``mask_mod``.

The mask is computed once per batch (all layers share it). Backward needs a GPU; on CPU, torch
only runs the forward. With right padding (every batch lit-block builds) the ``BlockMask`` is built
from each query row's key interval -- ``[its block's start, itself]`` for isolated rows,
``[0, itself]`` for global ones -- tile by tile, instead of evaluating the predicate on every
(query, key) pair as ``create_block_mask`` does (``T x T / 128`` comparisons, not ``T x T``).
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


def key_intervals(layout: BlockLayout) -> tuple[torch.Tensor, torch.Tensor]:
    """``[B, T]`` first and last key each query row sees (``hi = -1`` for padding rows, which see none).

    Exact for right-padded layouts whose blocks are contiguous runs (as every ``BlockLayout`` builds them).
    """
    ids, valid = layout.block_ids, layout.attention_mask
    B, T = ids.shape
    pos = torch.arange(T, device=ids.device).expand(B, T)
    prev = torch.cat([torch.full_like(ids[:, :1], -2), ids[:, :-1]], dim=1)
    block_start = torch.cummax(torch.where(ids != prev, pos, 0), dim=1).values  # start of each row's block
    lo = torch.where(layout.query_is_global(), 0, block_start)
    hi = torch.where(valid, pos, -1)
    return lo, hi


def interval_mask_mod(lo: torch.Tensor, hi: torch.Tensor):
    """``mask_mod`` of key intervals: two loads indexed by the query row only (the same for every key tile),
    instead of the ``block_mask_mod``'s loads indexed by the key; 3-13% faster on an H200 (docs/attention_notes.md)."""

    def mask_mod(b, h, q_idx, kv_idx):
        return (kv_idx >= lo[b, q_idx]) & (kv_idx <= hi[b, q_idx])

    return mask_mod


def block_mask_from_intervals(layout: BlockLayout, tile: int = 128):
    """The layout's ``BlockMask`` from per-row key intervals; the same mask ``create_block_mask`` builds.

    Needs right padding (valid tokens a prefix of each row); partial tiles use the interval ``mask_mod``.
    """
    from torch.nn.attention.flex_attention import BlockMask

    ids = layout.block_ids
    B, T = ids.shape
    lo, hi = key_intervals(layout)
    n = -(-T // tile)
    exists = torch.arange(n * tile, device=ids.device) < T  # rows past T (the last tile's tail) do not exist
    pad = n * tile - T
    lo_t = torch.nn.functional.pad(lo, (0, pad)).view(B, n, tile, 1)
    hi_t = torch.nn.functional.pad(hi, (0, pad), value=-1).view(B, n, tile, 1)
    rows = exists.view(1, n, tile, 1)
    starts = torch.arange(n, device=ids.device) * tile
    ends = (starts + tile).clamp(max=T) - 1
    touches = (lo_t <= ends) & (hi_t >= starts) & (lo_t <= hi_t)  # [B, n, tile, n]: row meets key tile
    covers = (lo_t <= starts) & (hi_t >= ends)  # row sees the whole key tile
    any_ = (touches & rows).any(dim=2)
    full = (covers | ~rows).all(dim=2) & any_
    partial = any_ & ~full

    def packed(m: torch.Tensor):  # [B, n, n] bool -> counts [B, 1, n] and indices [B, 1, n, n], selected first
        return m.sum(-1, dtype=torch.int32)[:, None], torch.argsort((~m).to(torch.int8), dim=-1, stable=True).to(torch.int32)[:, None]

    (kv_num, kv_idx), (full_num, full_idx) = packed(partial), packed(full)
    return BlockMask.from_kv_blocks(kv_num, kv_idx, full_num, full_idx, BLOCK_SIZE=tile, mask_mod=interval_mask_mod(lo, hi),
                                    seq_lengths=(T, T))


def right_padded(layout: BlockLayout) -> bool:
    valid = layout.attention_mask.long()
    return bool((valid.cummin(dim=1).values == valid).all())


class FlexBlockAttention(BlockAttention):
    name = "flex"

    def __init__(self, layout: BlockLayout, compile: bool | None = None):
        from torch.nn.attention.flex_attention import create_block_mask

        super().__init__(layout)
        device = layout.block_ids.device
        T = layout.seq_len
        if right_padded(layout):
            self.block_mask = block_mask_from_intervals(layout)
        else:
            self.block_mask = create_block_mask(block_mask_mod(layout), layout.batch_size, None, T, T, device=device)
        # eager flex is a slow reference; compiled flex is the fused kernel (GPU)
        self.compile = device.type == "cuda" if compile is None else compile

    def __call__(self, query, key, value, scaling=None, dropout=0.0):
        from torch.nn.attention.flex_attention import flex_attention

        self._no_dropout(self.name, dropout)
        # inside a compiled layer, dynamo already compiles the call; outside, use the cached compiled function
        attend = _compiled_flex_attention() if self.compile and not torch.compiler.is_compiling() else flex_attention
        groups = query.shape[1] // key.shape[1]
        out = attend(query, key, value, block_mask=self.block_mask, scale=scaling, enable_gqa=groups > 1)
        return out.transpose(1, 2).contiguous()
