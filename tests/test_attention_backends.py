"""Every backend computes the layout's function: checked against a naive per-row reference."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from layouts import naive_attention, random_layout
from lit_block.attention import SplitPlan, resolve_backend
from lit_block.attention.dense import SdpaBlockAttention
from lit_block.attention.flex import FlexBlockAttention
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
