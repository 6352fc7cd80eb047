"""Every backend computes the layout's function: checked against a naive per-row reference."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from layouts import naive_attention, random_layout
from lit_block.attention import SplitPlan, resolve_backend
from lit_block.attention.dense import SdpaBlockAttention
from lit_block.attention.flex import FlexBlockAttention
from lit_block.layout import BlockLayout
from lit_block.attention.split import VarlenBlockAttention, _SplitBlockAttention

CASES = [
    dict(seed=0),  # several uneven blocks, some released, padding
    dict(seed=1, num_sinks=2),
    dict(seed=2, max_blocks=1),  # one block
    dict(seed=3, max_block=1),  # blocks of length 1
    dict(seed=4, release_p=1.0),  # every block released: plain causal attention
    dict(seed=5, release_p=0.0, num_sinks=1, pad=False),
    dict(seed=6, batch=3, num_sinks=3, release_p=0.5),
]


def qkv(layout, heads=4, kv_heads=2, dim=8, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    B, T = layout.batch_size, layout.seq_len
    shapes = [(B, heads, T, dim), (B, kv_heads, T, dim), (B, kv_heads, T, dim)]
    return [torch.randn(s, generator=g, dtype=dtype, requires_grad=True) for s in shapes]


def valid_rows(out, layout):
    return out[layout.attention_mask]  # [n_valid, H, D]: padded rows are unspecified


@pytest.mark.parametrize("case", CASES, ids=[str(c) for c in CASES])
def test_sdpa_matches_naive_reference_forward_and_backward(case):
    layout = random_layout(**case)
    q, k, v = qkv(layout)
    ours = SdpaBlockAttention(layout)(q, k, v, scaling=0.3)
    grads = torch.autograd.grad(valid_rows(ours, layout).square().sum(), (q, k, v))
    ref = naive_attention(q, k, v, layout, scale=0.3)
    ref_grads = torch.autograd.grad(valid_rows(ref, layout).square().sum(), (q, k, v))
    torch.testing.assert_close(valid_rows(ours, layout), valid_rows(ref, layout), rtol=1e-10, atol=1e-10)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("case", CASES[:4], ids=[str(c) for c in CASES[:4]])
def test_flex_forward_on_cpu_matches_sdpa(case):
    layout = random_layout(**case)
    q, k, v = (t.detach().float() for t in qkv(layout))
    flex = FlexBlockAttention(layout, compile=False)(q, k, v, scaling=0.3)
    ref = SdpaBlockAttention(layout)(q, k, v, scaling=0.3)
    torch.testing.assert_close(valid_rows(flex, layout), valid_rows(ref, layout), rtol=1e-5, atol=1e-5)


class _CpuSplitAttention(_SplitBlockAttention):
    """The varlen driver with a per-sequence loop standing in for the (CUDA-only) varlen kernel."""

    def _isolated(self, q, k, v, scaling):
        cu = self.plan.cu_seqlens.tolist()
        groups = q.shape[1] // k.shape[1]
        outs = []
        for s, e in zip(cu[:-1], cu[1:]):
            qs, ks, vs = (x[s:e].transpose(0, 1) for x in (q, k, v))
            ks, vs = ks.repeat_interleave(groups, 0), vs.repeat_interleave(groups, 0)
            outs.append(F.scaled_dot_product_attention(qs, ks, vs, is_causal=True, scale=scaling).transpose(0, 1))
        return torch.cat(outs)

    _global_run = VarlenBlockAttention._global_run  # lower-right causal SDPA runs on CPU too


@pytest.mark.parametrize("case", CASES, ids=[str(c) for c in CASES])
def test_split_driver_matches_naive_reference(case):
    layout = random_layout(**case)
    q, k, v = qkv(layout)
    ours = _CpuSplitAttention(layout)(q, k, v, scaling=0.3)
    grads = torch.autograd.grad(valid_rows(ours, layout).sum(), (q, k, v))
    ref = naive_attention(q, k, v, layout, scale=0.3)
    ref_grads = torch.autograd.grad(valid_rows(ref, layout).sum(), (q, k, v))
    torch.testing.assert_close(valid_rows(ours, layout), valid_rows(ref, layout), rtol=1e-10, atol=1e-10)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("case", CASES, ids=[str(c) for c in CASES])
def test_split_plan_partitions_the_valid_rows(case):
    layout = random_layout(**case)
    plan = SplitPlan(layout)
    rows = torch.cat([plan.isolated_index, plan.global_index]).sort().values
    assert torch.equal(rows, torch.nonzero(layout.attention_mask.flatten()).flatten())
    lengths = (plan.cu_seqlens[1:] - plan.cu_seqlens[:-1]).tolist()
    assert all(n > 0 for n in lengths) and sum(lengths) == len(plan.isolated_index)


def test_split_plan_refuses_left_padding():
    layout = random_layout(seed=0)
    flipped = type(layout)(**{**layout.__dict__, "attention_mask": layout.attention_mask.flip(1)})
    with pytest.raises(ValueError, match="right padding"):
        SplitPlan(flipped)


def test_resolve_backend():
    assert resolve_backend("auto", "cpu") == "sdpa"
    assert resolve_backend("sdpa", "cpu") == "sdpa"
    with pytest.raises(ValueError, match="needs a CUDA device"):
        resolve_backend("varlen", "cpu")
    with pytest.raises(ValueError, match="unknown attention backend 'dense'"):
        resolve_backend("dense", "cpu")


def _layout(rows, num_sinks=0, released=None, mask=None):
    from lit_block.layout import layout_from_tokens

    ids = torch.tensor(rows)
    mask = None if mask is None else torch.tensor(mask)
    return layout_from_tokens(torch.zeros_like(ids), ids, mask, num_sinks=num_sinks, released=released)


def test_cudnn_plan_takes_equal_blocks_then_global_rows_and_names_what_else_it_refuses():
    from lit_block.attention.cudnn import CudnnPlan, cudnn_plan

    row = [0] * 4 + [1] * 4 + [2] * 4 + [-1] * 3
    assert cudnn_plan(_layout([row])) == CudnnPlan(4, 12)
    assert cudnn_plan(_layout([row, row])) == CudnnPlan(4, 12)
    assert cudnn_plan(_layout([row], num_sinks=2)) == CudnnPlan(6, 18)  # sinks lengthen every block alike
    assert cudnn_plan(_layout([[0, 0, 1, 1, -1, -1]])) == CudnnPlan(2, 4)
    assert cudnn_plan(_layout([[0] * 4 + [1] * 4 + [2] * 2 + [-1] * 3])) == CudnnPlan(4, 10)  # a shorter last block
    released = torch.tensor([[True, True, False]])  # the first block has nothing before it: no part of its own
    assert cudnn_plan(_layout([row], num_sinks=1, released=released)) == CudnnPlan(5, 15, (5,))
    assert not CudnnPlan(4, 12).tiled(15) and CudnnPlan(4, 12).tiled(16) and not CudnnPlan(4, 10).tiled(14)
    refusals = {
        "one length": _layout([[0] * 4 + [1] * 3 + [2] * 4 + [-1] * 2]),
        "may be shorter": _layout([[0] * 4 + [1] * 5 + [-1] * 2]),
        "at least 2 tokens": _layout([[0, 1, 2, -1, -1]]),  # cuDNN refuses 1 x 1 attention
        "at least 2": _layout([[0, 0, 1, 1, -1]]),
        "one run": BlockLayout(**{**_layout([[0, 0, 1, 1, 2, 2, -1, -1]]).__dict__,
                                  "block_ids": torch.tensor([[0, 0, 1, 1, 0, 0, -1, -1]])}),  # block 0 in two runs
        "same layout": _layout([row, [0] * 6 + [1] * 6 + [-1] * 3]),
        "padding": _layout([row, row], mask=[[1] * 15, [1] * 14 + [0]]),
        "followed by global": _layout([[0] * 4 + [1] * 4]),
    }
    for reason, layout in refusals.items():
        assert reason in cudnn_plan(layout)


def test_auto_takes_cudnn_for_long_uniform_layouts_on_gpus_and_flex_otherwise(monkeypatch):
    """``pick_backend``'s rule, with a GPU's answers to "which backend runs here" put in for the CPU's."""
    import lit_block.attention as attention

    monkeypatch.setattr(attention, "resolve_backend", lambda name, device: "flex" if name == "auto" else name)
    monkeypatch.setattr(attention, "backend_unavailable_reason", lambda name, device: None)
    monkeypatch.setattr(attention, "_seen_shapes", attention.Counter())

    def layout(sizes, global_rows=512):
        return _layout([sum(([i] * n for i, n in enumerate(sizes)), []) + [-1] * global_rows])

    def recurring(*args):  # what auto picks once the shape has come often enough (new shapes cost cuDNN new plans)
        return [attention.pick_backend("auto", *args) for _ in range(attention.CUDNN_AFTER_SEEN + 1)][-1]

    min_tokens = attention.CUDNN_MIN_HEAD_TOKENS // 32  # at 32 query heads, pick_backend's default
    long_uniform = layout([512] * (min_tokens // 512))
    short_uniform = layout([512] * (min_tokens // 512 - 2))
    bf16 = torch.bfloat16
    picks = [attention.pick_backend("auto", long_uniform, bf16, 128) for _ in range(attention.CUDNN_AFTER_SEEN + 2)]
    assert picks == ["flex"] * attention.CUDNN_AFTER_SEEN + ["cudnn"] * 2  # a new shape stays on flex at first
    assert recurring(short_uniform, bf16) == "flex"  # shorter: flex is faster
    with torch.no_grad():
        assert recurring(long_uniform, bf16) == "cudnn"  # prefill too
    assert recurring(long_uniform, bf16, 128, 16) == "flex"  # half the heads: half the work per call ...
    assert recurring(layout([512] * (2 * min_tokens // 512)), bf16, 128, 16) == "cudnn"  # ... until twice the tokens
    assert recurring(layout([500, 524] * 30), bf16) == "flex"  # blocks of two lengths
    for tokens, picked in ((min_tokens, "flex"), (attention.CUDNN_MIN_TOKENS_RELEASED, "cudnn")):
        blocks = tokens // 512
        ids = layout([512] * blocks).block_ids.tolist()
        released = _layout(ids, released=torch.tensor([[False, True] * (blocks // 2)]))  # block dropout
        assert recurring(released, bf16) == picked  # one more call per released block: longer
    # block dropout draws other blocks every step: the layout's shape recurs, whichever blocks are released
    blocks = attention.CUDNN_MIN_TOKENS_RELEASED // 512 + 1
    draws = torch.rand(attention.CUDNN_AFTER_SEEN + 1, blocks, generator=torch.Generator().manual_seed(0)) < 0.3
    ids = layout([512] * blocks).block_ids.tolist()
    picks = [attention.pick_backend("auto", _layout(ids, released=d[None]), bf16, 128) for d in draws]
    assert len({tuple(d.tolist()) for d in draws}) == len(draws)  # no draw repeats ...
    assert picks == ["flex"] * attention.CUDNN_AFTER_SEEN + ["cudnn"]  # ... and the third step runs on cudnn
    assert recurring(long_uniform, torch.float32) == "flex"  # cuDNN takes 16-bit inputs only
    with torch.autocast("cpu", dtype=bf16):  # ... which autocast provides
        assert recurring(long_uniform, torch.float32) == "cudnn"
    assert recurring(long_uniform, bf16, 256) == "flex"  # a head size cuDNN does not take
    assert attention.pick_backend("flex", long_uniform, bf16) == "flex"  # a named backend is kept


def test_auto_reads_the_cudnn_plan_once_per_batch(monkeypatch):
    """``cudnn_plan`` syncs with the GPU a few dozen times; ``auto`` reads it to decide and hands it to the backend."""
    import lit_block.attention as attention
    import lit_block.attention.cudnn as cudnn

    monkeypatch.setattr(attention, "resolve_backend", lambda name, device: "flex" if name == "auto" else name)
    monkeypatch.setattr(attention, "backend_unavailable_reason", lambda name, device: None)
    monkeypatch.setattr(attention, "_seen_shapes", attention.Counter())
    calls, real = [], cudnn.cudnn_plan

    def counted(layout):
        calls.append(layout)
        return real(layout)

    monkeypatch.setattr(attention, "cudnn_plan", counted)
    monkeypatch.setattr(cudnn, "cudnn_plan", counted)
    layout = _layout([sum(([i] * 512 for i in range(16)), []) + [-1] * 512])
    for _ in range(attention.CUDNN_AFTER_SEEN):
        attention.prepare_block_attention(layout, "auto", torch.bfloat16, 128)
    calls.clear()
    backend = attention.prepare_block_attention(layout, "auto", torch.bfloat16, 128)
    assert isinstance(backend, attention.CudnnBlockAttention) and backend.plan == real(layout)
    assert len(calls) == 1


def test_pick_backend_keeps_cpus_on_sdpa_and_refuses_cudnn_there():
    from lit_block.attention import pick_backend, prepare_block_attention

    layout = _layout([[0] * 4 + [1] * 4 + [-1] * 2])
    assert pick_backend("auto", layout) == "sdpa"
    assert isinstance(prepare_block_attention(layout, "auto"), SdpaBlockAttention)
    with pytest.raises(ValueError, match="cudnn backend needs a CUDA device"):
        pick_backend("cudnn", layout)


@pytest.mark.parametrize("seed", range(6))
def test_block_mask_from_intervals_equals_create_block_mask(seed):
    from torch.nn.attention.flex_attention import create_block_mask

    from lit_block.attention.flex import block_mask_from_intervals, block_mask_mod

    layout = random_layout(seed, batch=3, num_sinks=seed % 3, max_blocks=6, max_block=90, max_global=70,
                           release_p=0.3)
    T = layout.seq_len
    for tile in (8, 16, 128):
        ours = block_mask_from_intervals(layout, tile=tile)
        ref = create_block_mask(block_mask_mod(layout), layout.batch_size, None, T, T, device="cpu", BLOCK_SIZE=tile)
        assert torch.equal(ours.to_dense(), ref.to_dense())  # same tiles visited
        assert torch.equal(ours.full_kv_num_blocks, ref.full_kv_num_blocks)  # and the same ones skip the mask


@pytest.mark.parametrize("seed", range(6))
def test_interval_mask_mod_is_the_layout_predicate(seed):
    """Partial tiles evaluate the interval ``mask_mod``: it must equal the layout's own predicate everywhere."""
    from torch.nn.attention.flex_attention import create_mask

    from lit_block.attention.flex import block_mask_mod, interval_mask_mod, key_intervals

    layout = random_layout(seed, batch=3, num_sinks=seed % 3, max_blocks=6, max_block=90, max_global=70,
                           release_p=0.3)
    B, T = layout.batch_size, layout.seq_len
    ours = create_mask(interval_mask_mod(*key_intervals(layout)), B, None, T, T, device="cpu")
    ref = create_mask(block_mask_mod(layout), B, None, T, T, device="cpu")
    assert ref.any() and torch.equal(ours, ref)


def test_uneven_benchmark_blocks_fill_the_context_with_segmenter_like_lengths():
    from lit_block.benchmarks.attention import attention_work, uneven_block_sizes

    g = torch.Generator().manual_seed(0)
    rows = [uneven_block_sizes(8192, 512, 512, g) for _ in range(3)]
    for sizes in rows:
        assert sum(sizes) == 8192 - 512
        assert all(128 <= n <= 896 for n in sizes[:-1]) and 1 <= sizes[-1] <= 896
    assert rows[0] != rows[1]  # every batch row is cut differently
    full, block = attention_work(rows[0], 512)
    assert full == 8192 * 8193 // 2 and block < full / 5  # ~ L / (2 * mean block) less work than causal


def test_benchmark_work_counts_released_blocks_as_the_layouts_mask_does():
    from lit_block.benchmarks.attention import attention_work, make_layout

    blocks, released = [3, 2, 4, 1], [False, True, False, True]
    mask = make_layout([blocks], 2, "cpu", [released]).dense_mask()
    assert attention_work(blocks, 2, released) == (12 * 13 // 2, int(mask.sum()))
    assert attention_work(blocks, 2) == (78, int(make_layout([blocks], 2, "cpu").dense_mask().sum()))


def test_attention_benchmark_times_auto_with_gqa_uneven_blocks_and_batches_on_cpu(capsys):
    from lit_block.benchmarks.attention import main

    main(["--device", "cpu", "--dtype", "float32", "--shapes", "512/64", "--global-tokens", "64", "--heads", "4",
          "--kv-heads", "2", "--batch-size", "2", "--uneven", "--released", "0.3", "--backends", "sdpa", "auto",
          "--warmup", "0", "--repeat", "1"])
    out = capsys.readouterr().out
    assert "B=2, 4 heads (2 key/value)" in out
    rows = [line for line in out.splitlines() if line.startswith("| 512/64 uneven 30% released")]
    assert [r.split(" | ")[1] for r in rows] == ["causal sdpa", "sdpa", "auto (= sdpa)"]  # auto is sdpa on CPUs


def _math_scores(q, k, causal, scale):
    """fp32 scores ``[N, H, L, S]``; key heads repeated to the query heads (what cuDNN does with GQA inputs)."""
    k = k.float().repeat_interleave(q.shape[1] // k.shape[1], dim=1)
    s = (q.float() @ k.transpose(-1, -2)) * (scale or q.shape[-1] ** -0.5)
    if causal:
        s = s.masked_fill(torch.ones_like(s, dtype=torch.bool).triu(1), float("-inf"))
    return s


def _math_fwd(q, k, v, causal, scale):
    """What ``cudnn._fwd`` computes, in fp32 math on any device: output, log-sum-exp, no state."""
    s = _math_scores(q, k, causal, scale)
    v = v.float().repeat_interleave(q.shape[1] // v.shape[1], dim=1)
    out = torch.empty_like(q).copy_(torch.softmax(s, -1) @ v)  # in q's memory order, as cuDNN allocates it
    return out, s.logsumexp(-1), None


def _math_bwd(dout, q, k, v, out, lse, state, causal, scale):
    """The flash-attention backward from the *given* output and log-sum-exp (what ``cudnn._bwd`` relies on); key and
    value gradients summed over each key/value head's query heads."""
    scale, groups = scale or q.shape[-1] ** -0.5, q.shape[1] // k.shape[1]
    p = torch.exp(_math_scores(q, k, causal, scale) - lse.reshape(*q.shape[:-1], 1))
    do = dout.float()
    dp = do @ v.float().repeat_interleave(groups, dim=1).transpose(-1, -2)
    ds = p * (dp - (do * out.float()).sum(-1, keepdim=True))
    dk = (ds.transpose(-1, -2) @ q.float()) * scale
    dv = p.transpose(-1, -2) @ do
    sum_groups = lambda g: g.unflatten(1, (k.shape[1], groups)).sum(2)  # noqa: E731
    dq = (ds @ k.float().repeat_interleave(groups, dim=1)) * scale
    # in the inputs' memory order, as cuDNN allocates them
    placed = lambda like, g: torch.empty_like(like).copy_(g)  # noqa: E731
    return placed(q, dq), placed(k, sum_groups(dk)), placed(v, sum_groups(dv))


@pytest.mark.parametrize("native_gqa", [False, True], ids=["heads repeated", "native GQA"])
@pytest.mark.parametrize("rows,sinks,kv_heads,released,tiled", [
    ([[0] * 4 + [1] * 4 + [2] * 4 + [-1] * 3], 0, 4, None, False),
    ([[0] * 5 + [1] * 5 + [2] * 2 + [-1] * 4] * 2, 0, 2, None, False),  # a shorter last block, batch 2, GQA
    ([[0] * 3 + [1] * 3 + [-1] * 2] * 3, 2, 1, None, False),  # sinks
    ([[0] * 4 + [1] * 4 + [2] * 4 + [-1] * 4] * 2, 0, 2, None, True),  # the global run one block long, batch 2, GQA
    ([[0] * 3 + [1] * 3 + [-1] * 3], 0, 4, None, True),
    ([[0] * 5 + [1] * 5 + [2] * 5 + [3] * 2 + [-1] * 3] * 2, 0, 2, [[True, False, True, True]] * 2, False),  # released
    ([[0] * 3 + [1] * 3 + [2] * 3 + [-1] * 5] * 2, 2, 2, [[False, True, True]] * 2, True),  # released, sinks, tiled
])
def test_cudnn_backend_merges_parts_into_the_layouts_attention_and_gradients(monkeypatch, rows, sinks, kv_heads,
                                                                            released, tiled, native_gqa):
    """The cudnn backend's plan -- block views, the global rows' two parts merged by log-sum-exp, each part's backward
    given the merged output and lse, the gradients assembled -- equals sdpa, with the cuDNN calls replaced by the same
    math on the CPU (the kernels themselves are checked against sdpa on a GPU in test_gpu_backends.py)."""
    from lit_block.attention import cudnn

    _tiled_backward = cudnn._tiled_backward
    monkeypatch.setattr(cudnn, "_fwd", _math_fwd)
    monkeypatch.setattr(cudnn, "_bwd", _math_bwd)
    tiled_calls = []
    monkeypatch.setattr(cudnn, "_tiled_backward", lambda *a: tiled_calls.append(1) or _tiled_backward(*a))
    monkeypatch.setattr(cudnn, "native_gqa", lambda device: native_gqa)
    layout = _layout(rows, num_sinks=sinks, released=None if released is None else torch.tensor(released))
    B, T = layout.batch_size, layout.seq_len
    torch.manual_seed(0)
    q = torch.randn(B, T, 4, 8).transpose(1, 2)  # [B, H, T, D] views of [B, T, H, D] memory
    k, v = (torch.randn(B, kv_heads, T, 8) for _ in range(2))

    def run(attn):
        leaves = [t.clone().requires_grad_(True) for t in (q, k, v)]
        out = attn(*leaves, scaling=0.3)
        grads = torch.autograd.grad(out, leaves, torch.linspace(-1, 1, out.numel()).view_as(out))
        return [out, *grads]

    for got, want in zip(run(cudnn.CudnnBlockAttention(layout)), run(SdpaBlockAttention(layout))):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    assert bool(tiled_calls) == tiled  # one batched call for all tiles where blocks tile the rows
