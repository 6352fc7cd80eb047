"""``cudnn``: block attention from cuDNN's dense kernels, merged by log-sum-exp (forward and backward).

For the layout most long-context prompts have -- context blocks of one length ``bs`` from position 0
(the last may be shorter), then global rows to the end, the same in every row of the batch, no
padding -- every part is a dense cuDNN call on zero-copy views of the inputs:

    keys ->   [ block 0 ][ block 1 ] ... [ block n-1 ][ global ]
    block i   causal within itself                              one batched causal call, [n, H, bs, D] views
    global    unmasked over all context keys         + causal   two calls, outputs merged by their log-sum-exps

The backward runs the same calls' cuDNN backward kernels, each given the *merged* output and
log-sum-exp (as ring attention does), so each part's gradients are those of the whole softmax.
On an H200 at 32k tokens in 512-token blocks: 11.9x dense causal attention forward, 9.0x forward +
backward (flex: 7.2x, 8.3x); flex is faster at 8k (``docs/attention_notes.md``). Other layouts are
refused with the reason (``uniform_blocks``); ``auto`` uses this backend only where it applies and pays.
"""

from __future__ import annotations

import torch

from lit_block.attention.base import BlockAttention, half_precision_inputs
from lit_block.layout import BlockLayout

aten = torch.ops.aten
MAX_HEAD_DIM = 128  # what cuDNN's attention kernels take on every GPU since Ampere


def head_dim_supported(head_dim: int) -> bool:
    return head_dim % 8 == 0 and head_dim <= MAX_HEAD_DIM


def uniform_blocks(layout: BlockLayout) -> tuple[int, int] | str:
    """``(block length, context rows)`` if ``layout`` is context blocks of one length from position 0 (the last may be
    shorter), then global rows to the end, the same in every row, without padding; otherwise the reason it is not."""
    ids, glob = layout.block_ids, layout.query_is_global()
    if not layout.attention_mask.bool().all():
        return "the cudnn backend takes no padding"
    if (ids != ids[:1]).any() or (glob != glob[:1]).any():
        return "the cudnn backend needs the same layout in every row of the batch"
    n_context = int((~glob[0]).sum())
    if n_context == 0 or n_context == layout.seq_len or glob[0, :n_context].any():
        return "the cudnn backend needs context blocks followed by global rows (no released blocks)"
    starts = torch.nonzero(torch.diff(ids[0, :n_context]) != 0).flatten() + 1
    lengths = torch.diff(torch.cat([starts.new_zeros(1), starts, starts.new_tensor([n_context])]))
    if torch.unique(ids[0, :n_context]).numel() != len(lengths):  # an id in two runs: one block the kernels would split
        return "the cudnn backend needs every context block to be one run of tokens"
    if (lengths[:-1] != lengths[0]).any() or lengths[-1] > lengths[0]:
        return "the cudnn backend needs context blocks of one length (the last may be shorter)"
    if lengths.min() < 2 or layout.seq_len - n_context < 2:
        return "the cudnn backend needs blocks and global runs of at least 2 tokens (cuDNN refuses 1 x 1 attention)"
    return int(lengths[0]), n_context


def _physical(x: torch.Tensor, groups: int = 1) -> torch.Tensor:
    """``x`` as a ``[B, H, T, D]`` view of ``[B, T, H, D]`` memory (transformers' layout, in which every block is a
    strided view), key/value heads repeated ``groups`` times; no copy when it already is and ``groups == 1``."""
    x = x.transpose(1, 2)
    if groups > 1:  # grouped-query attention: one key/value head per query head
        x = x.repeat_interleave(groups, dim=2)
    return x.contiguous().transpose(1, 2)


def _sum_groups(g: torch.Tensor, groups: int) -> torch.Tensor:
    """Gradient of ``_physical(x, groups)``: ``[1, H, T, D]`` summed over each key/value head's query heads."""
    if groups == 1:
        return g
    _, H, T, D = g.shape
    return g.transpose(1, 2).unflatten(2, (H // groups, groups)).sum(3).transpose(1, 2)


def _fwd(q, k, v, causal: bool, scale):
    """cuDNN attention on ``[N, H, L, D]`` (strided views): output, log-sum-exp and the state its backward needs."""
    out, lse, cq, ck, mq, mk, seed, offset, _ = aten._scaled_dot_product_cudnn_attention(
        q, k, v, None, True, 0.0, causal, False, scale=scale)
    return out, lse, (cq, ck, mq, mk, seed, offset)


def _bwd(dout, q, k, v, out, lse, state, causal: bool, scale):
    cq, ck, mq, mk, seed, offset = state
    return aten._scaled_dot_product_cudnn_attention_backward(
        dout, q, k, v, out, lse, seed, offset, None, cq, ck, mq, mk, 0.0, causal, scale=scale)


def _block_groups(bs: int, n_context: int) -> list[tuple[int, int, int]]:
    """``(start, blocks, length)`` runs of equal blocks: the full blocks, then the shorter last one if any."""
    n, rest = divmod(n_context, bs)
    return [(0, n, bs)] * (n > 0) + [(n * bs, 1, rest)] * (rest > 0)


def _view(x: torch.Tensor, group: tuple[int, int, int]) -> torch.Tensor:
    """``[1, H, T, D]`` -> the group's blocks as a ``[blocks, H, length, D]`` view (no copy)."""
    start, n, length = group
    return x[0, :, start:start + n * length].unflatten(1, (n, length)).transpose(0, 1)


def _row_forward(q, k, v, out, bs: int, Lc: int, scale):
    """One row: ``[1, H, T, D]`` q, k, v; writes ``out`` (``[1, H, T, D]`` view). Returns what its backward needs."""
    _, H, T, D = q.shape
    G = T - Lc
    lse_blocks, st_blocks = [], []
    for group in _block_groups(bs, Lc):  # each block causal within itself: one batched call per group
        out_b, lse_b, st_b = _fwd(_view(q, group), _view(k, group), _view(v, group), True, scale)
        _view(out, group).copy_(out_b)
        lse_blocks.append(lse_b)
        st_blocks.append(st_b)
    qg = q[:, :, Lc:].contiguous()  # [1, H, G, D] contiguous (a few MB)
    out_c, lse_c, st_c = _fwd(qg, k[:, :, :Lc], v[:, :, :Lc], False, scale)  # global rows, context keys
    out_s, lse_s, st_s = _fwd(qg, k[:, :, Lc:], v[:, :, Lc:], True, scale)  # global rows, their own keys
    parts = torch.stack([lse_c.reshape(H, G), lse_s.reshape(H, G)]).float()
    lse = torch.logsumexp(parts, dim=0)  # [H, G]: the global rows' normaliser over all their keys
    weights = torch.exp(parts - lse)[..., None]  # [2, H, G, 1]
    out[0, :, Lc:].copy_((torch.cat([out_c, out_s]).float() * weights).sum(0))
    return [qg, lse.reshape(lse_c.shape), lse.reshape(lse_s.shape), *lse_blocks], (st_c, st_s, *st_blocks)


def _row_backward(dout, q, k, v, out, dq, dk, dv, saved, states, bs: int, Lc: int, scale) -> None:
    """One row's gradients into ``dq, dk, dv`` (``[1, H, T, D]`` views); every part given the merged output and lse."""
    qg, lse_c, lse_s, *lse_blocks = saved
    st_c, st_s, *st_blocks = states
    for group, lse_b, st_b in zip(_block_groups(bs, Lc), lse_blocks, st_blocks):
        grads = _bwd(_view(dout, group), _view(q, group), _view(k, group), _view(v, group), _view(out, group),
                     lse_b, st_b, True, scale)
        for g, d in zip((dq, dk, dv), grads):
            _view(g, group).copy_(d)
    og, dog = out[:, :, Lc:].contiguous(), dout[:, :, Lc:].contiguous()  # [1, H, G, D], like qg
    dq_c, dk_c, dv_c = _bwd(dog, qg, k[:, :, :Lc], v[:, :, :Lc], og, lse_c, st_c, False, scale)
    dq_s, dk_s, dv_s = _bwd(dog, qg, k[:, :, Lc:], v[:, :, Lc:], og, lse_s, st_s, True, scale)
    dq[:, :, Lc:] = dq_c + dq_s
    dk[:, :, :Lc] += dk_c  # context keys: their own block's gradient plus the global rows'
    dv[:, :, :Lc] += dv_c
    dk[:, :, Lc:], dv[:, :, Lc:] = dk_s, dv_s


class _MergedCudnnAttention(torch.autograd.Function):
    """``[B, H, T, D]`` q, k, v -> ``[B, T, H, D]``: blocks of ``bs`` (the last may be shorter) over the first
    ``n_context`` rows, global rows after. Rows are handled one by one inside (slicing outside would make autograd
    zero-fill and copy every input's gradient)."""

    @staticmethod
    def forward(ctx, q, k, v, bs: int, n_context: int, scale):
        B, H, T, D = q.shape
        groups = H // k.shape[1]  # grouped-query attention: heads repeated per row, only the originals saved
        out = q.new_empty(B, T, H, D)  # transformers' layout for the attention output
        saved, states = [], []
        for b in range(B):
            kb, vb = _physical(k[b:b + 1], groups), _physical(v[b:b + 1], groups)
            tensors, row_states = _row_forward(q[b:b + 1], kb, vb, out[b:b + 1].transpose(1, 2), bs, n_context, scale)
            saved += tensors
            states.append(row_states)
        ctx.save_for_backward(q, k, v, out, *saved)
        ctx.states, ctx.sizes, ctx.scale = states, (bs, n_context, groups), scale
        return out

    @staticmethod
    def backward(ctx, dout):
        q, k, v, out, *saved = ctx.saved_tensors
        (bs, Lc, groups), scale = ctx.sizes, ctx.scale
        B, H, T, D = q.shape
        dout, out = dout.contiguous().transpose(1, 2), out.transpose(1, 2)  # [B, H, T, D] views
        dq = q.new_empty(B, T, H, D).transpose(1, 2)  # transformers' physical layout
        dk, dv = (k.new_empty(B, T, k.shape[1], D).transpose(1, 2) for _ in range(2))
        per_row = len(saved) // B
        for b in range(B):
            kb, vb = _physical(k[b:b + 1], groups), _physical(v[b:b + 1], groups)
            dkb, dvb = torch.empty_like(kb), torch.empty_like(vb)  # per query head, summed over groups below
            _row_backward(dout[b:b + 1], q[b:b + 1], kb, vb, out[b:b + 1], dq[b:b + 1], dkb, dvb,
                          saved[b * per_row:(b + 1) * per_row], ctx.states[b], bs, Lc, scale)
            dk[b:b + 1], dv[b:b + 1] = _sum_groups(dkb, groups), _sum_groups(dvb, groups)
        return dq, dk, dv, None, None, None


class CudnnBlockAttention(BlockAttention):
    name = "cudnn"

    def __init__(self, layout: BlockLayout):
        super().__init__(layout)
        plan = uniform_blocks(layout)
        if isinstance(plan, str):
            raise ValueError(f"{plan}; use flex or auto")
        self.block_len, self.n_context = plan

    @torch.compiler.disable  # a graph break in a compiled layer: the autograd function runs eagerly
    def __call__(self, query, key, value, scaling=None, dropout=0.0):
        self._no_dropout(self.name, dropout)
        if not head_dim_supported(query.shape[-1]):
            raise ValueError(f"the cudnn backend takes head dims that are multiples of 8 up to {MAX_HEAD_DIM}, got "
                             f"{query.shape[-1]}; use flex")
        query, key, value = half_precision_inputs(self.name, query, key, value)
        query, key, value = _physical(query), _physical(key), _physical(value)
        return _MergedCudnnAttention.apply(query, key, value, self.block_len, self.n_context, scaling)
