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


def test_uniform_blocks_takes_equal_blocks_then_global_rows_and_names_what_else_it_refuses():
    from lit_block.attention.cudnn import uniform_blocks

    row = [0] * 4 + [1] * 4 + [2] * 4 + [-1] * 3
    assert uniform_blocks(_layout([row])) == (4, 12)
    assert uniform_blocks(_layout([row, row])) == (4, 12)
    assert uniform_blocks(_layout([row], num_sinks=2)) == (6, 18)  # sinks lengthen every block alike
    assert uniform_blocks(_layout([[0, 0, 1, 1, -1, -1]])) == (2, 4)
    assert uniform_blocks(_layout([[0] * 4 + [1] * 4 + [2] * 2 + [-1] * 3])) == (4, 10)  # a shorter last block
    refusals = {
        "one length": _layout([[0] * 4 + [1] * 3 + [2] * 4 + [-1] * 2]),
        "may be shorter": _layout([[0] * 4 + [1] * 5 + [-1] * 2]),
        "at least 2 tokens": _layout([[0, 1, 2, -1, -1]]),  # cuDNN refuses 1 x 1 attention
        "at least 2": _layout([[0, 0, 1, 1, -1]]),
        "one run": BlockLayout(**{**_layout([[0, 0, 1, 1, 2, 2, -1, -1]]).__dict__,
                                  "block_ids": torch.tensor([[0, 0, 1, 1, 0, 0, -1, -1]])}),  # block 0 in two runs
        "same layout": _layout([row, [0] * 6 + [1] * 6 + [-1] * 3]),
        "padding": _layout([row, row], mask=[[1] * 15, [1] * 14 + [0]]),
        "no released": _layout([row], released=torch.tensor([[False, True, False]])),
        "followed by global": _layout([[0] * 4 + [1] * 4]),
    }
    for reason, layout in refusals.items():
        assert reason in uniform_blocks(layout)


def test_auto_takes_cudnn_for_long_uniform_layouts_on_gpus_and_flex_otherwise(monkeypatch):
    """``pick_backend``'s rule, with a GPU's answers to "which backend runs here" put in for the CPU's."""
    import lit_block.attention as attention

    monkeypatch.setattr(attention, "resolve_backend", lambda name, device: "flex" if name == "auto" else name)
    monkeypatch.setattr(attention, "backend_unavailable_reason", lambda name, device: None)

    def layout(sizes, global_rows=512):
        return _layout([sum(([i] * n for i, n in enumerate(sizes)), []) + [-1] * global_rows])

    long_uniform = layout([512] * (attention.CUDNN_MIN_TOKENS_TRAINING // 512))
    mid_uniform = layout([512] * (attention.CUDNN_MIN_TOKENS_INFERENCE // 512))
    bf16 = torch.bfloat16
    assert attention.pick_backend("auto", long_uniform, bf16, 128) == "cudnn"
    assert attention.pick_backend("auto", mid_uniform, bf16) == "flex"  # training at 16k: flex is faster
    with torch.no_grad():
        assert attention.pick_backend("auto", mid_uniform, bf16) == "cudnn"  # forward only at 16k: cudnn is faster
    assert attention.pick_backend("auto", layout([500, 524] * 30), bf16) == "flex"  # blocks of two lengths
    assert attention.pick_backend("auto", long_uniform, torch.float32) == "flex"  # cuDNN takes 16-bit inputs only
    with torch.autocast("cpu", dtype=bf16):  # ... which autocast provides
        assert attention.pick_backend("auto", long_uniform, torch.float32) == "cudnn"
    assert attention.pick_backend("auto", long_uniform, bf16, 256) == "flex"  # a head size cuDNN does not take
    assert attention.pick_backend("flex", long_uniform, bf16) == "flex"  # a named backend is kept


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


def test_attention_benchmark_times_auto_with_gqa_uneven_blocks_and_batches_on_cpu(capsys):
    from lit_block.benchmarks.attention import main

    main(["--device", "cpu", "--dtype", "float32", "--shapes", "512/64", "--global-tokens", "64", "--heads", "4",
          "--kv-heads", "2", "--batch", "2", "--uneven", "--backends", "sdpa", "auto", "--warmup", "0", "--repeat", "1"])
    out = capsys.readouterr().out
    assert "B=2, 4 heads (2 key/value)" in out
    rows = [line for line in out.splitlines() if line.startswith("| 512/64 uneven")]
    assert [r.split(" | ")[1] for r in rows] == ["causal sdpa", "sdpa", "auto (= sdpa)"]  # auto is sdpa on CPUs


def _math_fwd(q, k, v, causal, scale):
    """What ``cudnn._fwd`` computes, in fp32 math on any device: output, log-sum-exp, no state."""
    s = (q.float() @ k.float().transpose(-1, -2)) * (scale or q.shape[-1] ** -0.5)
    if causal:
        s = s.masked_fill(torch.ones_like(s, dtype=torch.bool).triu(1), float("-inf"))
    lse = s.logsumexp(-1)
    return (torch.softmax(s, -1) @ v.float()).to(q.dtype), lse, None


def _math_bwd(dout, q, k, v, out, lse, state, causal, scale):
    """The flash-attention backward from the *given* output and log-sum-exp (what ``cudnn._bwd`` relies on)."""
    scale = scale or q.shape[-1] ** -0.5
    s = (q.float() @ k.float().transpose(-1, -2)) * scale
    if causal:
        s = s.masked_fill(torch.ones_like(s, dtype=torch.bool).triu(1), float("-inf"))
    p = torch.exp(s - lse.reshape(s.shape[:-1])[..., None])
    do = dout.float()
    dp = do @ v.float().transpose(-1, -2)
    ds = p * (dp - (do * out.float()).sum(-1, keepdim=True))
    return (ds @ k.float()) * scale, (ds.transpose(-1, -2) @ q.float()) * scale, p.transpose(-1, -2) @ do


@pytest.mark.parametrize("rows,sinks,kv_heads", [
    ([[0] * 4 + [1] * 4 + [2] * 4 + [-1] * 3], 0, 4),
    ([[0] * 5 + [1] * 5 + [2] * 2 + [-1] * 4] * 2, 0, 2),  # a shorter last block, batch 2, GQA
    ([[0] * 3 + [1] * 3 + [-1] * 2] * 3, 2, 1),  # sinks
])
def test_cudnn_backend_merges_parts_into_the_layouts_attention_and_gradients(monkeypatch, rows, sinks, kv_heads):
    """The cudnn backend's plan -- block views, the global rows' two parts merged by log-sum-exp, each part's backward
    given the merged output and lse, the gradients assembled -- equals sdpa, with the cuDNN calls replaced by the same
    math on the CPU (the kernels themselves are checked against sdpa on a GPU in test_gpu_backends.py)."""
    from lit_block.attention import cudnn

    monkeypatch.setattr(cudnn, "_fwd", _math_fwd)
    monkeypatch.setattr(cudnn, "_bwd", _math_bwd)
    layout = _layout(rows, num_sinks=sinks)
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
