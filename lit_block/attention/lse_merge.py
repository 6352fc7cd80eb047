"""Merging two parts of the same rows' attention by log-sum-exp, in place: one Triton launch on CUDA.

A row that attends to keys computed in two calls (its own causal part, and the keys before it) has two partial
softmax outputs ``o_1, o_2`` with log-sum-exps ``l_1, l_2``; the whole softmax's are

    l = log(exp(l_1) + exp(l_2)),    o = o_1 + exp(l_2 - l) * (o_2 - o_1)

In eager PyTorch that is eight small kernels (and eight host calls) per merge; the ``cudnn`` backend merges once
per layer at 8k tokens, where its forward is a quarter of a millisecond, so the host calls show. The Triton kernel
reads each part once and writes the output and both log-sum-exps in one pass. Without Triton (CPU installs) or for
layouts it does not take, the same arithmetic runs as torch ops.
"""

from __future__ import annotations

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU installs: the torch path below is used
    triton = None

ROWS_PER_PROGRAM = 32

if triton is not None:

    @triton.jit
    def _merge_rows(out_ptr, lse_ptr, part_ptr, part_lse_ptr, H, L,
                    so_b, so_l, so_h, sl_b, sl_h, sl_l, sp_b, sp_h, sp_l, sq_b, sq_h, sq_l,
                    D: tl.constexpr, DP: tl.constexpr, ROWS: tl.constexpr):
        bh = tl.program_id(0).to(tl.int64)  # one (batch row, head) each; int64: offsets can pass 2^31
        b, h = bh // H, bh % H
        rows = tl.program_id(1).to(tl.int64) * ROWS + tl.arange(0, ROWS)
        keep = rows < L
        cols = tl.arange(0, DP)
        keep2 = keep[:, None] & (cols < D)[None, :]
        lse_at = lse_ptr + b * sl_b + h * sl_h + rows * sl_l
        part_lse_at = part_lse_ptr + b * sq_b + h * sq_h + rows * sq_l
        l1 = tl.load(lse_at, mask=keep, other=0.0)
        l2 = tl.load(part_lse_at, mask=keep, other=0.0)
        top = tl.maximum(l1, l2)
        top = tl.where(top == float("-inf"), 0.0, top)  # neither part has keys: lse stays -inf, not NaN
        lse = top + tl.log(tl.exp(l1 - top) + tl.exp(l2 - top))
        w = tl.where(lse == float("-inf"), 0.0, tl.exp(l2 - lse))[:, None]  # the second part's share of the softmax
        out_at = out_ptr + b * so_b + h * so_h + rows[:, None] * so_l + cols[None, :]
        part_at = part_ptr + b * sp_b + h * sp_h + rows[:, None] * sp_l + cols[None, :]
        o1 = tl.load(out_at, mask=keep2, other=0.0).to(tl.float32)
        o2 = tl.load(part_at, mask=keep2, other=0.0).to(tl.float32)
        tl.store(out_at, (o1 + w * (o2 - o1)).to(out_ptr.dtype.element_ty), mask=keep2)
        tl.store(lse_at, lse, mask=keep)
        tl.store(part_lse_at, lse, mask=keep)


def merge_into(out: torch.Tensor, lse: torch.Tensor, part: torch.Tensor, part_lse: torch.Tensor) -> None:
    """Merge ``part`` into ``out`` in place. ``out``: ``[B, L, H, D]`` (a view of the layer's output) holding one part,
    ``lse``: its ``[B, H, L]`` fp32 log-sum-exp; ``part``: ``[B, H, L, D]``, ``part_lse``: ``[B, H, L]`` fp32, the other
    part. Afterwards ``out`` is the whole softmax's output and *both* ``lse`` and ``part_lse`` hold its log-sum-exp."""
    B, L, H, D = out.shape
    if _triton_applies(out, lse, part, part_lse):
        grid = (B * H, triton.cdiv(L, ROWS_PER_PROGRAM))
        _merge_rows[grid](out, lse, part, part_lse, H, L,
                          out.stride(0), out.stride(1), out.stride(2), *lse.stride(), *part.stride()[:3],
                          *part_lse.stride(), D=D, DP=triton.next_power_of_2(D), ROWS=ROWS_PER_PROGRAM)
        return
    merged = torch.logaddexp(part_lse, lse)  # the normaliser over both parts' keys
    w = torch.exp(part_lse - merged).nan_to_num_(0.0).transpose(1, 2)[..., None]  # [B, L, H, 1]: part's share
    out.copy_(out.float().lerp_(part.transpose(1, 2).float(), w))  # w * part + (1 - w) * out
    lse.copy_(merged)
    part_lse.copy_(merged)


def _triton_applies(out, lse, part, part_lse) -> bool:
    """CUDA tensors with contiguous head dims, fp32 log-sum-exps, and Triton installed."""
    return (triton is not None and out.is_cuda and out.stride(-1) == 1 and part.stride(-1) == 1
            and lse.dtype == part_lse.dtype == torch.float32 and out.dtype == part.dtype)
