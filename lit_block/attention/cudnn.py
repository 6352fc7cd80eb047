"""``cudnn``: block attention from cuDNN's dense kernels, merged by log-sum-exp (forward and backward).

For the layout most long-context prompts and the distillation student have -- context blocks of one
length ``bs`` from position 0 (the last may be shorter), some of them released, then global rows to
the end, the same in every row of the batch, no padding -- every part is a dense cuDNN call on
zero-copy views of the inputs:

    keys ->    [ block 0 ][ block 1 ][ block 2 ] ... [ block n-1 ][ global ]
    block i    causal within itself                                         one batched causal call, [n, H, bs, D] views
    released 2 unmasked over the keys before it  + causal within itself      one more call, merged by log-sum-exp
    global     unmasked over all context keys                     + causal  one or two more calls, merged

When the blocks tile the rows and the global run is one block long (``tiled``), the global rows'
causal part is one more tile of the batched call, all rows of the batch go in one call, and that
call's output is the layer's output: no copies. The backward runs the same calls' cuDNN backward
kernels, each given the *merged* output and log-sum-exp (as ring attention does), so each part's
gradients are those of the whole softmax. Grouped-query attention goes to cuDNN as it is where this
torch's cuDNN takes it (``native_gqa``); merges are one Triton launch each (``lse_merge``). On an H200
(``docs/attention_notes.md``): 13.6x dense causal attention forward+backward at 32k tokens in 512-token
blocks, 3.3-3.7x at 8k. Other layouts are refused with the reason (``cudnn_plan``); ``auto`` uses this
backend only where it applies and pays.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from lit_block.attention.base import BlockAttention, half_precision_inputs
from lit_block.attention.lse_merge import merge_into
from lit_block.layout import BlockLayout

aten = torch.ops.aten
MAX_HEAD_DIM = 128  # what cuDNN's attention kernels take on every GPU since Ampere


def head_dim_supported(head_dim: int) -> bool:
    return head_dim % 8 == 0 and head_dim <= MAX_HEAD_DIM


@dataclass(frozen=True)
class CudnnPlan:
    """Context blocks of ``block_len`` over the first ``n_context`` rows (the last may be shorter), global rows after;
    ``released``: where each released block after the first starts (a released first block has nothing before it)."""

    block_len: int
    n_context: int
    released: tuple[int, ...] = ()

    def tiled(self, seq_len: int) -> bool:
        """Blocks tile the rows and the global run is one block long: one batched call covers every row."""
        return self.n_context % self.block_len == 0 and seq_len - self.n_context == self.block_len

    def prefix_runs(self, seq_len: int) -> list[tuple[int, int]]:
        """``(start, end)`` of every run whose rows also attend to all keys before it: each released block after
        the first, then the global rows."""
        return [(s, min(s + self.block_len, self.n_context)) for s in self.released] + [(self.n_context, seq_len)]


def cudnn_plan(layout: BlockLayout) -> CudnnPlan | str:
    """The plan for ``layout`` if it is context blocks of one length from position 0 (the last may be shorter), then
    global rows to the end, the same in every row, without padding; otherwise the reason it is not."""
    ids, glob = layout.block_ids, layout.query_is_global()
    if not layout.attention_mask.bool().all():
        return "the cudnn backend takes no padding"
    if (ids != ids[:1]).any() or (glob != glob[:1]).any():
        return "the cudnn backend needs the same layout in every row of the batch"
    n_context = int((ids[0] >= 0).sum())
    if n_context == 0 or n_context == layout.seq_len or (ids[0, :n_context] < 0).any():
        return "the cudnn backend needs context blocks followed by global rows"
    starts = torch.nonzero(torch.diff(ids[0, :n_context]) != 0).flatten() + 1
    starts = torch.cat([starts.new_zeros(1), starts])
    lengths = torch.diff(torch.cat([starts, starts.new_tensor([n_context])]))
    if torch.unique(ids[0, :n_context]).numel() != len(lengths):  # an id in two runs: one block the kernels would split
        return "the cudnn backend needs every context block to be one run of tokens"
    if (lengths[:-1] != lengths[0]).any() or lengths[-1] > lengths[0]:
        return "the cudnn backend needs context blocks of one length (the last may be shorter)"
    if lengths.min() < 2 or layout.seq_len - n_context < 2:
        return "the cudnn backend needs blocks and global runs of at least 2 tokens (cuDNN refuses 1 x 1 attention)"
    released = tuple(int(s) for s in starts[glob[0, starts]].tolist() if s > 0)
    return CudnnPlan(int(lengths[0]), n_context, released)


@functools.cache
def native_gqa(device: torch.device) -> bool:
    """Whether this torch's cuDNN attention takes fewer key/value heads than query heads, forward and backward (checked
    once per device on a tiny input against repeated heads); where it does not, the heads are repeated first."""
    if device.type != "cuda":
        return False
    gen = torch.Generator(device=device).manual_seed(0)
    q, dout = (torch.randn(1, 2, 16, 64, device=device, dtype=torch.bfloat16, generator=gen) for _ in range(2))
    k, v = (torch.randn(1, 1, 16, 64, device=device, dtype=torch.bfloat16, generator=gen) for _ in range(2))
    try:
        out, lse, state = _fwd(q, k, v, True, None)
        grads = _bwd(dout, q, k, v, out, lse, state, True, None)
    except RuntimeError:
        return False
    k2, v2 = k.expand(1, 2, 16, 64).contiguous(), v.expand(1, 2, 16, 64).contiguous()
    out2, lse2, state2 = _fwd(q, k2, v2, True, None)
    dq2, dk2, dv2 = _bwd(dout, q, k2, v2, out2, lse2, state2, True, None)
    want = (out2, dq2, dk2.sum(1, keepdim=True), dv2.sum(1, keepdim=True))
    got = (out, *grads)
    return all(a.shape == b.shape and torch.allclose(a.float(), b.float(), atol=2e-2) for a, b in zip(got, want))


def _is_physical(x: torch.Tensor) -> bool:
    """Whether ``[B, H, T, D]`` ``x`` is a view of contiguous ``[B, T, H, D]`` memory (read off its strides: no kernel
    launch, no dispatch; this backend's host time is a few dozen small calls per layer)."""
    B, H, T, D = x.shape
    return x.stride() == (T * H * D, D, H * D, 1) or (B == 1 and x.stride()[1:] == (D, H * D, 1))


def _physical(x: torch.Tensor, groups: int = 1) -> torch.Tensor:
    """``x`` as a ``[B, H, T, D]`` view of ``[B, T, H, D]`` memory (transformers' layout, in which every block is a
    strided view), key/value heads repeated ``groups`` times; ``x`` itself when it already is and ``groups == 1``."""
    if groups == 1 and _is_physical(x):
        return x
    x = x.transpose(1, 2)
    if groups > 1:  # grouped-query attention: one key/value head per query head
        x = x.repeat_interleave(groups, dim=2)
    return x.contiguous().transpose(1, 2)


def _sum_groups(g: torch.Tensor, groups: int) -> torch.Tensor:
    """Gradient of ``_physical(x, groups)``: ``[B, H, T, D]`` summed over each key/value head's query heads."""
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


def _prefix_forward(q, k, v, out, lse_of, runs: list[tuple[int, int]], scale) -> list:
    """Released blocks and the global rows attend to every earlier token: their causal part is already in ``out``
    (``[B, H, T, D]`` view) with its lse (``lse_of(start)``, a ``[B, H, L]`` view); here each run's part over the keys
    before it, merged into both in place. Returns each run's merged lse and state for the backward."""
    parts = []
    for s, e in runs:
        out_p, lse_p, st_p = _fwd(q[:, :, s:e], k[:, :, :s], v[:, :, :s], False, scale)
        lse_run = lse_of(s)
        merge_into(out[:, :, s:e].transpose(1, 2), lse_run, out_p, lse_p.view(lse_run.shape))
        parts.append((lse_p, st_p))  # merge_into wrote the merged lse into lse_p too
    return parts


def _prefix_backward(dout, q, k, v, out, dq, dk, dv, parts, runs: list[tuple[int, int]], scale) -> None:
    """Adds the runs' parts over earlier keys (``_prefix_forward``) to ``dq, dk, dv`` (``[B, H, T, D]``)."""
    for (s, e), (lse, st) in zip(runs, parts):
        dq_p, dk_p, dv_p = _bwd(dout[:, :, s:e], q[:, :, s:e], k[:, :, :s], v[:, :, :s], out[:, :, s:e], lse, st,
                                False, scale)
        dq[:, :, s:e] += dq_p
        dk[:, :, :s] += dk_p
        dv[:, :, :s] += dv_p


def _block_groups(bs: int, n_context: int) -> list[tuple[int, int, int]]:
    """``(start, blocks, length)`` runs of equal blocks: the full blocks, then the shorter last one if any."""
    n, rest = divmod(n_context, bs)
    return [(0, n, bs)] * (n > 0) + [(n * bs, 1, rest)] * (rest > 0)


def _view(x: torch.Tensor, group: tuple[int, int, int]) -> torch.Tensor:
    """``[1, H, T, D]`` -> the group's blocks as a ``[blocks, H, length, D]`` view (no copy)."""
    start, n, length = group
    return x[0, :, start:start + n * length].unflatten(1, (n, length)).transpose(0, 1)


def _row_forward(q, k, v, out, plan: CudnnPlan, scale):
    """One row, any plan: ``[1, H, T, D]`` q, k, v; writes ``out`` (``[1, H, T, D]`` view). Returns what its backward
    needs: tensors to save and the calls' states."""
    H, Lc = q.shape[1], plan.n_context
    groups = _block_groups(plan.block_len, Lc)
    lse_blocks, st_blocks = [], []
    for group in groups:  # each block causal within itself: one batched call per group
        out_b, lse_b, st_b = _fwd(_view(q, group), _view(k, group), _view(v, group), True, scale)
        _view(out, group).copy_(out_b)
        lse_blocks.append(lse_b)
        st_blocks.append(st_b)

    # the global rows' causal part over their own keys (strided views: cuDNN takes them at full speed)
    out_s, lse_s, st_s = _fwd(q[:, :, Lc:], k[:, :, Lc:], v[:, :, Lc:], True, scale)
    out[:, :, Lc:] = out_s

    def lse_of(s):  # [1, H, L] view of the log-sum-exp of the run starting at s
        if s == Lc:
            return lse_s.view(1, H, -1)
        g = 0 if s < groups[0][1] * groups[0][2] else 1
        return lse_blocks[g][(s - groups[g][0]) // groups[g][2]].view(1, H, -1)

    parts = _prefix_forward(q, k, v, out, lse_of, plan.prefix_runs(q.shape[2]), scale)
    return [lse_s, *lse_blocks, *(p[0] for p in parts)], (st_s, st_blocks, [p[1] for p in parts])


def _row_backward(dout, q, k, v, out, dq, dk, dv, saved, states, plan: CudnnPlan, scale) -> None:
    """One row's gradients into ``dq, dk, dv`` (``[1, H, T, D]`` views); every part given the merged output and lse."""
    Lc, groups = plan.n_context, _block_groups(plan.block_len, plan.n_context)
    lse_s, *lse_rest = saved
    lse_blocks, lse_prefix = lse_rest[:len(groups)], lse_rest[len(groups):]
    st_s, st_blocks, st_prefix = states
    *released, (lse_c, st_c) = zip(lse_prefix, st_prefix)  # the last run is the global rows'
    qg, og, dog = q[:, :, Lc:], out[:, :, Lc:], dout[:, :, Lc:]  # [1, H, G, D] views
    dq_c, dk_c, dv_c = _bwd(dog, qg, k[:, :, :Lc], v[:, :, :Lc], og, lse_c, st_c, False, scale)
    dq_s, dk_s, dv_s = _bwd(dog, qg, k[:, :, Lc:], v[:, :, Lc:], og, lse_s, st_s, True, scale)
    dq[:, :, Lc:] = dq_c + dq_s
    dk[:, :, Lc:], dv[:, :, Lc:] = dk_s, dv_s
    for group, lse_b, st_b in zip(groups, lse_blocks, st_blocks):
        dq_b, dk_b, dv_b = _bwd(_view(dout, group), _view(q, group), _view(k, group), _view(v, group),
                                _view(out, group), lse_b, st_b, True, scale)
        _view(dq, group).copy_(dq_b)
        # context keys: their own block's gradient plus the global rows', summed as they are placed (one pass)
        torch.add(dk_b, _view(dk_c, group), out=_view(dk, group))
        torch.add(dv_b, _view(dv_c, group), out=_view(dv, group))
    _prefix_backward(dout, q, k, v, out, dq, dk, dv, released, plan.prefix_runs(q.shape[2])[:-1], scale)


def _tiles(x: torch.Tensor, bs: int) -> torch.Tensor:
    """``[B, H, T, D]`` (physical layout) -> ``[B * T / bs, H, bs, D]``: every row cut into tiles of ``bs``, no copy."""
    B, H, T, D = x.shape
    if _is_physical(x):  # one call instead of three
        return x.as_strided((B * T // bs, H, bs, D), (bs * H * D, D, H * D, 1))
    return x.transpose(1, 2).reshape(B * T // bs, bs, H, D).transpose(1, 2)


def _untile(x: torch.Tensor, B: int) -> torch.Tensor:
    """Inverse of ``_tiles``: ``[B * n, H, bs, D]`` -> ``[B, H, n * bs, D]``, a view of cuDNN's outputs where they take
    the inputs' memory order (they do)."""
    N, H, bs, D = x.shape
    T = N // B * bs
    if x.stride() == (bs * H * D, D, H * D, 1):
        return x.as_strided((B, H, T, D), (T * H * D, D, H * D, 1))
    return x.transpose(1, 2).reshape(B, T, H, D).transpose(1, 2)


def _tiled_forward(q, k, v, plan: CudnnPlan, scale):
    """A tiled plan, all rows at once: the blocks *and* the global rows' causal part are one batched call, whose output
    is the layer's output; the released blocks' and the global rows' parts over earlier keys are merged into it in
    place. ``[B, H, T, D]`` q, k, v -> ``[B, T, H, D]`` output, tensors to save and the calls' states."""
    B, H, T, D = q.shape
    bs = plan.block_len
    out, lse, st = _fwd(_tiles(q, bs), _tiles(k, bs), _tiles(v, bs), True, scale)  # [B * T / bs, H, bs, D]
    out = _untile(out, B)  # [B, H, T, D] view of [B, T, H, D] memory: the layer's output
    tile_lse = lse.view(B, T // bs, H, bs)
    parts = _prefix_forward(q, k, v, out, lambda s: tile_lse[:, s // bs], plan.prefix_runs(T), scale)
    return out.transpose(1, 2), [lse, *(p[0] for p in parts)], (st, [p[1] for p in parts])


def _tiled_backward(dout, q, k, v, out, saved, states, plan: CudnnPlan, scale):
    """Gradients of ``_tiled_forward`` (``dout``, ``out``: ``[B, H, T, D]``): the batched call's backward gives every
    tile's; the released blocks' and the global rows' parts over earlier keys are added."""
    (lse, *lse_prefix), (st, st_prefix) = saved, states
    B, H, T, D = q.shape
    bs = plan.block_len
    grads = _bwd(_tiles(dout, bs), _tiles(q, bs), _tiles(k, bs), _tiles(v, bs), _tiles(out, bs), lse, st, True, scale)
    dq, dk, dv = (_untile(g, B) for g in grads)  # [B, H, T, D] views
    _prefix_backward(dout, q, k, v, out, dq, dk, dv, list(zip(lse_prefix, st_prefix)), plan.prefix_runs(T), scale)
    return dq, dk, dv


class _MergedCudnnAttention(torch.autograd.Function):
    """``[B, H, T, D]`` q, ``[B, H_kv, T, D]`` k, v -> ``[B, T, H, D]`` under ``plan``. Tiled plans are one batch;
    others are handled row by row inside (slicing outside would make autograd zero-fill and copy every input's
    gradient). ``groups``: how many times to repeat the key/value heads (1 where cuDNN takes GQA as it is)."""

    @staticmethod
    def forward(ctx, q, k, v, plan: CudnnPlan, groups: int, scale):
        B, H, T, D = q.shape
        tiled = plan.tiled(T)
        if tiled:
            out, saved, states = _tiled_forward(q, _physical(k, groups), _physical(v, groups), plan, scale)
            out = out.contiguous()  # the layer's output, [B, T, H, D] (a view of cuDNN's output already: no copy)
        else:
            out = q.new_empty(B, T, H, D)  # transformers' layout for the attention output
            saved, states = [], []
            for b in range(B):
                kb, vb = _physical(k[b:b + 1], groups), _physical(v[b:b + 1], groups)
                row_saved, row_states = _row_forward(q[b:b + 1], kb, vb, out[b:b + 1].transpose(1, 2), plan, scale)
                saved += row_saved
                states.append(row_states)
        ctx.save_for_backward(q, k, v, out, *saved)
        ctx.states, ctx.sizes, ctx.scale = states, (plan, groups, tiled), scale
        return out

    @staticmethod
    def backward(ctx, dout):
        q, k, v, out, *saved = ctx.saved_tensors
        (plan, groups, tiled), scale = ctx.sizes, ctx.scale
        B, H, T, D = q.shape
        dout, out = dout.contiguous().transpose(1, 2), out.transpose(1, 2)  # [B, H, T, D] views
        if tiled:
            dq, dk, dv = _tiled_backward(dout, q, _physical(k, groups), _physical(v, groups), out, saved,
                                         ctx.states, plan, scale)
            return dq, _sum_groups(dk, groups), _sum_groups(dv, groups), None, None, None
        dq = q.new_empty(B, T, H, D).transpose(1, 2)  # transformers' physical layout
        dk, dv = (k.new_empty(B, T, k.shape[1], D).transpose(1, 2) for _ in range(2))
        per_row = len(saved) // B
        for b in range(B):
            kb, vb = _physical(k[b:b + 1], groups), _physical(v[b:b + 1], groups)
            if groups == 1:  # gradients straight into the outputs
                dkb, dvb = dk[b:b + 1], dv[b:b + 1]
            else:  # per query head, summed over groups below
                dkb, dvb = torch.empty_like(kb), torch.empty_like(vb)
            _row_backward(dout[b:b + 1], q[b:b + 1], kb, vb, out[b:b + 1], dq[b:b + 1], dkb, dvb,
                          saved[b * per_row:(b + 1) * per_row], ctx.states[b], plan, scale)
            if groups > 1:
                dk[b:b + 1], dv[b:b + 1] = _sum_groups(dkb, groups), _sum_groups(dvb, groups)
        return dq, dk, dv, None, None, None


class CudnnBlockAttention(BlockAttention):
    name = "cudnn"

    def __init__(self, layout: BlockLayout, plan: CudnnPlan | None = None):
        """``plan``: ``cudnn_plan(layout)`` where the caller has it already (``auto`` reads it to decide)."""
        super().__init__(layout)
        plan = cudnn_plan(layout) if plan is None else plan
        if isinstance(plan, str):
            raise ValueError(f"{plan}; use flex or auto")
        self.plan = plan

    @torch.compiler.disable  # a graph break in a compiled layer: the autograd function runs eagerly
    def __call__(self, query, key, value, scaling=None, dropout=0.0):
        self._no_dropout(self.name, dropout)
        if not head_dim_supported(query.shape[-1]):
            raise ValueError(f"the cudnn backend takes head dims that are multiples of 8 up to {MAX_HEAD_DIM}, got "
                             f"{query.shape[-1]}; use flex")
        query, key, value = half_precision_inputs(self.name, query, key, value)
        query, key, value = _physical(query), _physical(key), _physical(value)
        groups = query.shape[1] // key.shape[1]
        if groups > 1 and native_gqa(query.device):
            groups = 1  # cuDNN takes the key/value heads as they are
        return _MergedCudnnAttention.apply(query, key, value, self.plan, groups, scaling)
