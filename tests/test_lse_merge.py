"""``merge_into``: two parts of a row's attention, merged by log-sum-exp, equal attention over both parts' keys."""

from __future__ import annotations

import pytest
import torch

from lit_block.attention.lse_merge import merge_into


def _part(q, k, v):
    """Softmax attention of ``[B, H, L, D]`` q over ``[B, H, S, D]`` keys: output and fp32 log-sum-exp ``[B, H, L]``."""
    s = q.float() @ k.float().transpose(-1, -2)
    return (torch.softmax(s, -1) @ v.float()).to(q.dtype), s.logsumexp(-1)


def _merged(q, k, v, split, dtype):
    """``merge_into`` on the parts before and after key ``split``, the first held in a ``[B, L, H, D]`` view of a larger
    output and a strided lse view, as the cudnn backend holds them."""
    B, H, L, D = q.shape
    out1, lse1 = _part(q, k[:, :, :split], v[:, :, :split])
    out2, lse2 = _part(q, k[:, :, split:], v[:, :, split:])
    layer_out = torch.zeros(B, L + 3, H, D, dtype=dtype, device=q.device)  # rows outside the view stay zero
    out = layer_out[:, 2:2 + L]
    out.copy_(out1.transpose(1, 2))
    lse_store = torch.zeros(B, 2, H, L, device=q.device)
    lse = lse_store[:, 1]  # a strided [B, H, L] view, as the tile lse views are
    lse.copy_(lse1)
    merge_into(out, lse, out2.to(dtype), lse2)
    return layer_out, lse, lse2


@pytest.mark.parametrize("split", [1, 5, 11])
def test_merged_parts_equal_attention_over_all_keys(split):
    torch.manual_seed(split)
    q, k, v = (torch.randn(2, 3, 7, 8, dtype=torch.float64) for _ in range(3))
    want_out, want_lse = _part(q, k, v)
    layer_out, lse, part_lse = _merged(q, k, v, split, torch.float64)
    torch.testing.assert_close(layer_out[:, 2:9].transpose(1, 2), want_out, rtol=1e-5, atol=1e-5)  # fp32 math
    torch.testing.assert_close(lse, want_lse, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(part_lse, lse)  # both log-sum-exps hold the merged one (the backward reads either)
    assert layer_out[:, :2].abs().sum() == 0 and layer_out[:, 9:].abs().sum() == 0  # nothing outside the view


def _merge_without_keys(device: str):
    """Merge a part without keys (lse -inf) into a real one, and into a row that has no keys either."""
    g = torch.Generator(device=device).manual_seed(0)
    q, k, v = (torch.randn(1, 2, 4, 8, device=device, generator=g) for _ in range(3))
    out1, lse1 = _part(q, k, v)
    lse1[:, :, -1] = float("-inf")  # the last row has no keys in either part
    out1[:, :, -1] = 0
    out, lse, no_lse = out1.transpose(1, 2).clone(), lse1.clone(), torch.full_like(lse1, float("-inf"))
    merge_into(out, lse, torch.zeros_like(out1), no_lse)
    return out, lse, out1.transpose(1, 2), lse1


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def test_a_part_without_keys_leaves_the_other(device):
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    out, lse, want_out, want_lse = _merge_without_keys(device)
    torch.testing.assert_close(out, want_out)  # the keyless row stays zero: no NaN
    torch.testing.assert_close(lse, want_lse)


@pytest.mark.cuda
@pytest.mark.parametrize("head_dim", [64, 72, 128])
def test_triton_merge_equals_the_torch_merge_on_gpu(head_dim):
    """The one-launch Triton kernel computes what the torch ops compute (CPU), on the cudnn backend's strided views."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    from lit_block.attention import lse_merge

    if lse_merge.triton is None:
        pytest.skip("needs Triton")
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(2, 4, 100, head_dim, device="cuda", generator=g) for _ in range(3))
    got = _merged(q, k, v, 37, torch.bfloat16)
    want = _merged(q.cpu(), k.cpu(), v.cpu(), 37, torch.bfloat16)
    for a, b in zip(got, want):
        torch.testing.assert_close(a.cpu().float(), b.float(), rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(got[1].cpu(), want[1], rtol=1e-5, atol=1e-5)  # lse in fp32 both ways
