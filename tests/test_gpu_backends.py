"""GPU backends (flex, varlen, flash) against the sdpa reference, forward and gradients. Skipped without CUDA.

Run on a GPU with ``pytest -m cuda -s tests/test_gpu_backends.py``: it prints the max errors it saw.
"""

from __future__ import annotations

import pytest
import torch

from layouts import random_layout
from lit_block.attention import BACKENDS, backend_unavailable_reason
from lit_block.attention.dense import SdpaBlockAttention

pytestmark = pytest.mark.cuda

CASES = [
    dict(seed=10, max_block=200, max_global=90),  # uneven blocks, some released, padding, batch 2
    dict(seed=11, max_block=1, max_blocks=8),  # blocks of one token
    dict(seed=12, num_sinks=4, max_block=150, batch=3),
    dict(seed=13, max_blocks=1, max_block=300, release_p=0.0),  # one block
    dict(seed=14, release_p=1.0, max_block=64),  # all released: plain causal
]
TOLERANCE = {torch.float32: 2e-3, torch.bfloat16: 3e-2}  # max abs error vs the fp32 sdpa reference


def qkv(layout, dtype, heads=8, kv_heads=2, dim=64):
    g = torch.Generator(device="cuda").manual_seed(0)
    B, T = layout.batch_size, layout.seq_len
    shapes = [(B, heads, T, dim), (B, kv_heads, T, dim), (B, kv_heads, T, dim)]
    return [torch.randn(s, generator=g, device="cuda", dtype=dtype) for s in shapes]


@pytest.mark.parametrize("backend", ["flex", "varlen", "flash"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("case", CASES, ids=[str(c) for c in CASES])
def test_gpu_backend_matches_sdpa(backend, dtype, case):
    reason = backend_unavailable_reason(backend, torch.device("cuda"))
    if reason:
        pytest.skip(reason)
    if backend in ("varlen", "flash") and dtype == torch.float32:
        pytest.skip("flash-style kernels take 16-bit inputs only")
    layout = random_layout(**case).to("cuda")
    inputs = qkv(layout, dtype)
    valid = layout.attention_mask

    def run(attn, tensors):
        tensors = [t.detach().requires_grad_(True) for t in tensors]
        out = attn(*tensors, scaling=0.125)
        upstream = torch.ones_like(out[valid]) * 0.01
        grads = torch.autograd.grad(out[valid], tensors, upstream)
        return out[valid].float(), [g.float() for g in grads]

    out, grads = run(BACKENDS[backend](layout), inputs)
    ref_out, ref_grads = run(SdpaBlockAttention(layout), [t.float() for t in inputs])
    errors = [(out - ref_out).abs().max().item()] + [(g - r).abs().max().item() for g, r in zip(grads, ref_grads)]
    print(f"\nMAXERR backend={backend} dtype={str(dtype)[6:]} case={case} out={errors[0]:.2e} "
          f"dq={errors[1]:.2e} dk={errors[2]:.2e} dv={errors[3]:.2e}")
    assert max(errors) <= TOLERANCE[dtype]


@pytest.mark.parametrize("backend", ["flex", "varlen"])
def test_block_attention_lm_on_gpu_matches_sdpa_backend(backend):
    from conftest import tiny_config
    from lit_block import BlockAttentionLM

    torch.manual_seed(0)
    lm = BlockAttentionLM.from_pretrained(tiny_config("qwen3"), num_sink_tokens=2, attn_backend="sdpa")
    lm = lm.to("cuda", torch.bfloat16).eval()
    ids = torch.randint(0, 128, (2, 300), device="cuda")
    blocks = torch.tensor([[0] * 100 + [1] * 120 + [-1] * 80, [0] * 50 + [1] * 1 + [2] * 200 + [-1] * 49], device="cuda")
    with torch.no_grad():
        ref = lm(ids, blocks).logits.float()
        lm.attn_backend = backend
        got = lm(ids, blocks).logits.float()
    err = (got - ref).abs().max().item()
    print(f"\nMAXERR lm backend={backend} bf16 logits={err:.2e}")
    assert err <= 5e-2


@pytest.mark.parametrize("backend", ["varlen", "flash"])
def test_flash_kernels_take_fp32_under_autocast_and_refuse_it_without(backend):
    """RoPE in fp32 hands fp32 queries to attention under bf16 autocast; the flash kernels cast them (as SDPA
    does under autocast) and name the problem when there is no autocast to say which half precision to use."""
    reason = backend_unavailable_reason(backend, torch.device("cuda"))
    if reason:
        pytest.skip(reason)
    layout = random_layout(**CASES[0]).to("cuda")
    inputs = qkv(layout, torch.float32)
    valid = layout.attention_mask
    with pytest.raises(ValueError, match=f"attn_backend='{backend}'.*float32"):
        BACKENDS[backend](layout)(*inputs, scaling=0.125)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = BACKENDS[backend](layout)(*inputs, scaling=0.125)
    ref = SdpaBlockAttention(layout)(*inputs, scaling=0.125)
    assert out.dtype == torch.bfloat16
    assert (out[valid].float() - ref[valid]).abs().max().item() <= TOLERANCE[torch.bfloat16]


UNIFORM = [  # (rows, context blocks, block length, global rows, sinks)
    dict(batch=1, blocks=4, block=64, global_rows=32, sinks=0),
    dict(batch=2, blocks=6, block=2, global_rows=2, sinks=0),  # the shortest blocks and global run cuDNN takes
    dict(batch=3, blocks=5, block=46, global_rows=17, sinks=2),  # sinks: blocks of 48
    dict(batch=1, blocks=9, block=128, global_rows=200, sinks=0),
    dict(batch=2, blocks=3, block=96, global_rows=40, sinks=0, last=33),  # a shorter last block
    dict(batch=2, blocks=7, block=64, global_rows=64, sinks=0),  # tiled: the global run one block long
    dict(batch=2, blocks=6, block=64, global_rows=40, sinks=0, released=(1, 4)),  # released blocks
    dict(batch=2, blocks=6, block=62, global_rows=64, sinks=2, released=(0, 2, 5)),  # released, sinks, tiled
]


def uniform_layout(batch, blocks, block, global_rows, sinks, last=0, released=()):
    from lit_block.layout import layout_from_tokens

    row = torch.cat([torch.arange(blocks).repeat_interleave(block), torch.full((last,), blocks),
                     torch.full((global_rows,), -1)])
    ids = row.expand(batch, -1)
    flags = torch.zeros(batch, blocks + (last > 0), dtype=torch.bool)
    flags[:, list(released)] = True
    return layout_from_tokens(torch.zeros_like(ids), ids, num_sinks=sinks, released=flags).to("cuda")


@pytest.mark.parametrize("physical", [True, False], ids=["BTHD memory", "BHTD memory"])
@pytest.mark.parametrize("kv_heads", [8, 2])
@pytest.mark.parametrize("case", UNIFORM, ids=[str(c) for c in UNIFORM])
def test_cudnn_backend_matches_sdpa_on_uniform_layouts(case, kv_heads, physical):
    reason = backend_unavailable_reason("cudnn", torch.device("cuda"))
    if reason:
        pytest.skip(reason)
    layout = uniform_layout(**case)
    inputs = qkv(layout, torch.bfloat16, heads=8, kv_heads=kv_heads, dim=128)
    if physical:  # as transformers passes them: [B, H, T, D] views of [B, T, H, D] memory
        inputs = [t.transpose(1, 2).contiguous().transpose(1, 2) for t in inputs]

    upstream = torch.randn(layout.batch_size, layout.seq_len, 8, 128, device="cuda",
                           generator=torch.Generator(device="cuda").manual_seed(1))

    def run(attn, tensors):
        tensors = [t.detach().requires_grad_(True) for t in tensors]
        out = attn(*tensors, scaling=0.1)
        grads = torch.autograd.grad(out, tensors, upstream.to(out.dtype))
        return [out.float()] + [g.float() for g in grads]

    got = run(BACKENDS["cudnn"](layout), inputs)
    ref = run(SdpaBlockAttention(layout), [t.float() for t in inputs])
    # relative to each tensor's largest entry: a missing part of a gradient is an error of its own size
    errors = [((a - b).abs().max() / b.abs().max().clamp(min=1)).item() for a, b in zip(got, ref)]
    print(f"\nMAXERR backend=cudnn case={case} kv_heads={kv_heads} physical={physical} relative out={errors[0]:.2e} "
          f"dq={errors[1]:.2e} dk={errors[2]:.2e} dv={errors[3]:.2e}")
    assert max(errors) <= TOLERANCE[torch.bfloat16]


def test_auto_takes_cudnn_only_for_long_uniform_layouts():
    from lit_block.attention import CUDNN_AFTER_SEEN, CUDNN_MIN_HEAD_TOKENS, pick_backend

    if backend_unavailable_reason("cudnn", torch.device("cuda")):
        pytest.skip("no cuDNN")
    blocks = CUDNN_MIN_HEAD_TOKENS // 32 // 512  # at 32 query heads, pick_backend's default
    bf16 = torch.bfloat16

    def recurring(layout, dtype):  # auto's pick once the shape has come CUDNN_AFTER_SEEN times before
        return [pick_backend("auto", layout, dtype, 128) for _ in range(CUDNN_AFTER_SEEN + 1)][-1]

    assert recurring(uniform_layout(1, blocks, 512, 512, 0), bf16) == "cudnn"
    assert recurring(uniform_layout(1, blocks, 512, 512, 0), torch.float32) == "flex"  # fp32 compute
    assert recurring(uniform_layout(1, 4, 512, 512, 0), bf16) == "flex"  # short: flex is faster


def test_block_attention_lm_on_cudnn_matches_sdpa_backend():
    from conftest import tiny_config
    from lit_block import BlockAttentionLM

    torch.manual_seed(0)
    lm = BlockAttentionLM.from_pretrained(tiny_config("qwen3"), num_sink_tokens=2, attn_backend="sdpa")
    lm = lm.to("cuda", torch.bfloat16).eval()
    ids = torch.randint(0, 128, (2, 300), device="cuda")
    blocks = torch.cat([torch.arange(5).repeat_interleave(50), torch.full((50,), -1)]).expand(2, -1).to("cuda")
    with torch.no_grad():
        ref = lm(ids, blocks).logits.float()
        lm.attn_backend = "cudnn"
        got = lm(ids, blocks).logits.float()
    err = (got - ref).abs().max().item()
    print(f"\nMAXERR lm backend=cudnn bf16 logits={err:.2e}")
    assert err <= 5e-2


def test_training_through_cudnn_matches_sdpa_in_loss_and_gradients():
    """A training step of a Qwen3-shaped ``BlockAttentionLM`` (GQA, sinks, released blocks, bf16 autocast over fp32
    weights, activation checkpointing recomputing the attention): the cudnn backend's loss and weight gradients
    equal sdpa's."""
    from conftest import tiny_config
    from lit_block import BlockAttentionLM

    if backend_unavailable_reason("cudnn", torch.device("cuda")):
        pytest.skip("no cuDNN")
    torch.manual_seed(0)
    lm = BlockAttentionLM.from_pretrained(tiny_config("qwen3"), num_sink_tokens=2, attn_backend="sdpa").to("cuda")
    lm.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    lm.train()
    ids = torch.randint(0, 128, (2, 300), device="cuda")
    blocks = torch.cat([torch.arange(5).repeat_interleave(50), torch.full((50,), -1)]).expand(2, -1).to("cuda")
    released = torch.tensor([[False, True, False, True, False]] * 2, device="cuda")  # block dropout, as in training
    results = {}
    for backend in ("sdpa", "cudnn"):
        lm.attn_backend = backend
        lm.zero_grad()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = lm(ids, blocks, released=released).logits.float().logsumexp(-1).mean()
        loss.backward()
        results[backend] = (loss.item(), {n: p.grad.clone() for n, p in lm.named_parameters() if p.grad is not None})
    (ref_loss, ref_grads), (loss, grads) = results["sdpa"], results["cudnn"]
    assert set(grads) == set(ref_grads) and "sink_embeddings" in grads
    errors = {n: ((grads[n] - g).abs().max() / g.abs().max().clamp(min=1e-6)).item() for n, g in ref_grads.items()}
    worst = max(errors, key=errors.get)
    print(f"\nMAXERR lm training backend=cudnn loss {abs(loss - ref_loss):.2e}, worst gradient {worst} {errors[worst]:.2e}")
    assert abs(loss - ref_loss) <= 2e-2 * abs(ref_loss)
    assert errors[worst] <= 0.1  # bf16 attention in both; a wrong gradient part is off by its own size
