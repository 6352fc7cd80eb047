"""``varlen`` and ``flash``: split the layout into block-diagonal rows and global rows.

* Rows of isolated context blocks form one variable-length batch (each block its own causal
  sequence): one varlen kernel call for the whole batch.
* Rows that see everything (the global block, released blocks) come in runs ``[s, e)``; each run
  attends to keys ``[0, e)`` of its sample with a lower-right-aligned causal mask.

The plan is computed once per batch (one host sync) and shared by every layer. Both backends need
right padding (padding only after a sample's last real token).
"""

from __future__ import annotations

import functools
import inspect

import torch
import torch.nn.functional as F

from lit_block.attention.base import BlockAttention, half_precision_inputs
from lit_block.layout import BlockLayout


class SplitPlan:
    """Index sets and offsets that turn a layout into a varlen call plus global-run calls."""

    def __init__(self, layout: BlockLayout):
        valid = layout.attention_mask
        B, T = valid.shape
        # right padding: the valid tokens of each sample are a prefix
        if (valid.long().cummin(dim=1).values != valid.long()).any():
            raise ValueError("the varlen/flash backends need right padding (padding after the last real token)")
        query_global = layout.query_is_global() & valid
        isolated = valid & ~query_global

        # isolated rows, flattened over the batch; a new sequence starts where (sample, block) changes
        self.isolated_index = torch.nonzero(isolated.flatten()).flatten()
        seq_key = (torch.arange(B, device=valid.device)[:, None] * (T + 1) + layout.block_ids + 1).flatten()
        keys = seq_key[self.isolated_index]
        starts = torch.ones_like(keys, dtype=torch.bool)
        starts[1:] = keys[1:] != keys[:-1]
        start_pos = torch.nonzero(starts).flatten()
        n = len(self.isolated_index)
        cu = torch.cat([start_pos, torch.tensor([n], device=valid.device)]).to(torch.int32)
        self.cu_seqlens = cu
        self.max_len = int((cu[1:] - cu[:-1]).max()) if len(cu) > 1 else 0

        # global runs: maximal stretches of consecutive global rows, as (sample, start, end)
        glob = query_global.cpu()
        self.global_runs: list[tuple[int, int, int]] = []
        for b in range(B):
            row = glob[b].tolist()
            t = 0
            while t < T:
                if row[t]:
                    s = t
                    while t < T and row[t]:
                        t += 1
                    self.global_runs.append((b, s, t))
                else:
                    t += 1
        rows = [b * T + torch.arange(s, e) for b, s, e in self.global_runs]
        self.global_index = (torch.cat(rows) if rows else torch.empty(0, dtype=torch.long)).to(valid.device)


def _flatten(x: torch.Tensor) -> torch.Tensor:
    """``[B, H, T, D] -> [B*T, H, D]``."""
    B, H, T, D = x.shape
    return x.transpose(1, 2).reshape(B * T, H, D)


class _SplitBlockAttention(BlockAttention):
    """Shared driver: isolated rows through ``_isolated``, global runs through ``_global_run``."""

    name = "split"

    def __init__(self, layout: BlockLayout):
        super().__init__(layout)
        self.plan = SplitPlan(layout)

    def _isolated(self, q, k, v, scaling):  # [N, H, D] each, packed by plan.cu_seqlens
        raise NotImplementedError

    def _global_run(self, q, k, v, scaling):  # q [1, H, Lq, D], k/v [1, Hkv, Lk, D], lower-right causal
        raise NotImplementedError

    def __call__(self, query, key, value, scaling=None, dropout=0.0):
        self._no_dropout(self.name, dropout)
        query, key, value = half_precision_inputs(self.name, query, key, value)
        B, H, T, D = query.shape
        plan = self.plan
        out = query.new_zeros(B * T, H, D)
        if len(plan.isolated_index):
            idx = plan.isolated_index
            iso = self._isolated(_flatten(query)[idx], _flatten(key)[idx], _flatten(value)[idx], scaling)
            out = out.index_copy(0, idx, iso)
        if plan.global_runs:
            parts = [
                self._global_run(query[b : b + 1, :, s:e], key[b : b + 1, :, :e], value[b : b + 1, :, :e], scaling)
                for b, s, e in plan.global_runs
            ]  # each [e - s, H, D]
            out = out.index_copy(0, plan.global_index, torch.cat(parts))
        return out.view(B, T, H, D)


@functools.cache
def _varlen_api() -> tuple[dict, bool]:
    """How this torch spells causality (``is_causal`` in 2.10-2.11, ``window_size`` later) and GQA support."""
    from torch.nn.attention.varlen import varlen_attn

    params = inspect.signature(varlen_attn).parameters
    causal = {"is_causal": True} if "is_causal" in params else {"window_size": (-1, 0)}
    return causal, "enable_gqa" in params


class VarlenBlockAttention(_SplitBlockAttention):
    """PyTorch's ``varlen_attn`` for isolated blocks, SDPA with a lower-right causal bias for global rows."""

    name = "varlen"

    def _isolated(self, q, k, v, scaling):
        from torch.nn.attention.varlen import varlen_attn

        causal, has_gqa = _varlen_api()
        extra = {}
        if k.shape[1] != q.shape[1]:
            if has_gqa:
                extra["enable_gqa"] = True
            else:  # older torch: expand K/V heads
                groups = q.shape[1] // k.shape[1]
                k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
        cu, m = self.plan.cu_seqlens, self.plan.max_len
        return varlen_attn(q, k, v, cu, cu, m, m, scale=scaling, **causal, **extra)

    def _global_run(self, q, k, v, scaling):
        from torch.nn.attention.bias import causal_lower_right

        groups = q.shape[1] // k.shape[1]
        if groups > 1:
            k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
        bias = causal_lower_right(q.shape[2], k.shape[2])
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=scaling)[0].transpose(0, 1)


class FlashBlockAttention(_SplitBlockAttention):
    """flash-attn's varlen kernel for isolated blocks and its bottom-right causal kernel for global rows."""

    name = "flash"

    def _isolated(self, q, k, v, scaling):
        from flash_attn import flash_attn_varlen_func

        cu, m = self.plan.cu_seqlens, self.plan.max_len
        return flash_attn_varlen_func(q, k, v, cu, cu, m, m, softmax_scale=scaling, causal=True)

    def _global_run(self, q, k, v, scaling):
        from flash_attn import flash_attn_func

        # flash-attn aligns the causal mask bottom-right when there are fewer queries than keys
        out = flash_attn_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), softmax_scale=scaling, causal=True)
        return out[0]
