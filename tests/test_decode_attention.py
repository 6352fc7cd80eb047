"""The batched decoding step's attention (one new token per row over a left-padded slab) against SDPA over GQA heads
expanded by transformers' own ``repeat_kv`` with the same mask: what its masked path computes, without the expansion."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers.models.llama.modeling_llama import repeat_kv

from lit_block.attention.transformers_hook import padded_decode_attention


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(1, 5), kv_heads=st.integers(1, 3), group=st.sampled_from([1, 2, 4]),
       keys=st.integers(1, 40), seed=st.integers(0, 2**16))
def test_padded_decode_attention_equals_sdpa_over_expanded_heads(rows, kv_heads, group, keys, seed):
    g = torch.Generator().manual_seed(seed)
    dim = 8
    query = torch.randn(rows, kv_heads * group, 1, dim, generator=g, dtype=torch.float64)
    key, value = (torch.randn(rows, kv_heads, keys, dim, generator=g, dtype=torch.float64) for _ in range(2))
    visible = torch.rand(rows, keys, generator=g) < 0.6
    visible[:, -1] = True  # every row sees its own new token
    out = padded_decode_attention(query, key, value, visible, scaling=0.3)
    want = F.scaled_dot_product_attention(query, repeat_kv(key, group), repeat_kv(value, group),
                                          attn_mask=visible[:, None, None, :],
                                          scale=0.3).transpose(1, 2)
    torch.testing.assert_close(out, want)
    # a masked key changes nothing: scramble every hidden position
    noise = torch.randn(key.shape, generator=g, dtype=torch.float64) * 100
    hidden = ~visible[:, None, :, None]
    again = padded_decode_attention(query, torch.where(hidden, noise, key), torch.where(hidden, noise, value), visible, 0.3)
    torch.testing.assert_close(again, out)


def test_more_than_one_new_token_is_refused():
    q, kv = torch.zeros(1, 2, 3, 4), torch.zeros(1, 2, 5, 4)
    try:
        padded_decode_attention(q, kv, kv, torch.ones(1, 5, dtype=torch.bool))
    except ValueError as err:
        assert "one new token per row, got 3" in str(err)
    else:
        raise AssertionError("three new tokens were accepted")
