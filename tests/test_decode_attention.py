"""The padded-rows attention (each row's new tokens over a slab of padded caches: the batched decoding step, the batched
query prefill) against SDPA over GQA heads expanded by transformers' own ``repeat_kv`` with the same mask: what its
masked path computes, without the expansion."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers.models.llama.modeling_llama import repeat_kv

from lit_block.attention.transformers_hook import padded_rows_attention


@settings(max_examples=60, deadline=None)
@given(rows=st.integers(1, 5), kv_heads=st.integers(1, 3), group=st.sampled_from([1, 2, 4]), steps=st.integers(1, 4),
       keys=st.integers(1, 40), flat_mask=st.booleans(), seed=st.integers(0, 2**16))
def test_padded_rows_attention_equals_sdpa_over_expanded_heads(rows, kv_heads, group, steps, keys, flat_mask, seed):
    g = torch.Generator().manual_seed(seed)
    dim = 8
    query = torch.randn(rows, kv_heads * group, steps, dim, generator=g, dtype=torch.float64)
    key, value = (torch.randn(rows, kv_heads, keys, dim, generator=g, dtype=torch.float64) for _ in range(2))
    visible = torch.rand(rows, steps, keys, generator=g) < 0.6
    visible[..., -1] = True  # every new token sees at least its own key
    if flat_mask:  # the decoding step's [rows, keys] form: one mask for the row's only new token
        query, visible = query[:, :, :1], visible[:, 0]
    out = padded_rows_attention(query, key, value, visible, scaling=0.3)
    mask = visible[:, None, None, :] if flat_mask else visible[:, None]
    want = F.scaled_dot_product_attention(query, repeat_kv(key, group), repeat_kv(value, group), attn_mask=mask,
                                          scale=0.3).transpose(1, 2)
    torch.testing.assert_close(out, want)
    # a key hidden from every new token of its row changes nothing: scramble those positions
    noise = torch.randn(key.shape, generator=g, dtype=torch.float64) * 100
    seen = visible if flat_mask else visible.any(1)
    hidden = ~seen[:, None, :, None]
    again = padded_rows_attention(query, torch.where(hidden, noise, key), torch.where(hidden, noise, value), visible, 0.3)
    torch.testing.assert_close(again, out)


def test_a_mask_of_another_shape_is_refused():
    q, kv = torch.zeros(1, 2, 3, 4), torch.zeros(1, 2, 5, 4)
    with pytest.raises(ValueError, match=r"key_mask \(1, 5\) does not match 1 rows of 3 new tokens"):
        padded_rows_attention(q, kv, kv, torch.ones(1, 5, dtype=torch.bool))
