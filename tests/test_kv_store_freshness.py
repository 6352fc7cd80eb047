"""The block KV store never returns a cache computed by the model before its weights changed: edits through
``.data`` (which leave version counters alone), ``vector_to_parameters`` and dtype conversions included."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from lit_block.serving import BlockKVStore, GenerationConfig, generate
from lit_block.serving.kv_store import model_fingerprint
from test_serving import forward_last_logits, random_blocks, tiny_lm

ONE = GenerationConfig(max_new_tokens=1)


def halve_a_weight(lm):
    lm.model.model.layers[0].self_attn.k_proj.weight.data.mul_(0.5)  # .data: the version counter does not move


def load_a_new_vector(lm):
    vector = parameters_to_vector(lm.parameters())
    vector_to_parameters(vector * 0.9 + 0.01, lm.parameters())  # writes each parameter's .data


def nudge_the_sinks(lm):
    lm.sink_embeddings.data.add_(0.1)


def scale_the_rotary_frequencies(lm):
    lm.model.model.rotary_emb.inv_freq.mul_(1.001)  # a buffer: not a parameter, still decides every key


@pytest.mark.parametrize("edit", [halve_a_weight, load_a_new_vector, nudge_the_sinks, scale_the_rotary_frequencies])
def test_an_edited_model_misses_and_equals_a_fresh_store(edit):
    lm = tiny_lm()
    *blocks, query = random_blocks([6, 7, 3])
    store = BlockKVStore()
    before = generate(lm, blocks, query, ONE, store=store)
    edit(lm)
    after = generate(lm, blocks, query, ONE, store=store)
    fresh = generate(lm, blocks, query, ONE, store=BlockKVStore())
    assert after.block_stats == {"hits": 0, "misses": 2}  # no stale hit
    assert torch.equal(after.first_token_logits, fresh.first_token_logits)
    assert (after.first_token_logits - forward_last_logits(lm, blocks, query)).abs().max() < 1e-4
    assert not torch.equal(after.first_token_logits, before.first_token_logits)  # the edit did matter


def test_an_unchanged_model_still_hits():
    lm = tiny_lm()
    *blocks, query = random_blocks([6, 7, 3])
    store = BlockKVStore()
    first = generate(lm, blocks, query, ONE, store=store)
    weight = lm.model.model.layers[1].mlp.up_proj.weight
    weight.data.copy_(weight.data.clone())  # rewritten with the same values: the content, not the write, counts
    again = generate(lm, blocks, query, ONE, store=store)
    assert again.block_stats == {"hits": 2, "misses": 0}
    assert torch.equal(again.first_token_logits, first.first_token_logits)


def test_a_dtype_conversion_misses_and_assembles_like_a_model_converted_first():
    lm, converted_first = tiny_lm(), tiny_lm().to(torch.bfloat16)
    *blocks, query = random_blocks([30, 40, 50, 3])  # long enough for the rounded rotary frequencies to show
    store = BlockKVStore()
    generate(lm, blocks, query, ONE, store=store)  # float32 blocks (and key rotator) in the store
    lm.to(torch.bfloat16)
    after = generate(lm, blocks, query, ONE, store=store)
    assert after.block_stats == {"hits": 0, "misses": 3}
    assert sorted(str(kv.keys.dtype) for kv in store.entries.values()) == ["torch.bfloat16"] * 3 + ["torch.float32"] * 3
    expected = generate(converted_first, blocks, query, ONE, store=BlockKVStore())
    assert torch.equal(after.first_token_logits, expected.first_token_logits)  # keys moved with the rounded frequencies


@pytest.fixture(scope="module")
def lm():
    return tiny_lm()


@settings(max_examples=40, deadline=None)
@given(pick=st.integers(0, 10_000), element=st.integers(0, 10**9), swap=st.booleans())
def test_any_one_element_edit_or_swap_changes_the_fingerprint(lm, pick, element, swap):
    """Every parameter and buffer counts, to the last bit: a one-ulp change of one element, or swapping two
    different elements, gives a new fingerprint; undoing it gives the old one back."""
    tensors = [t for _, t in [*lm.named_parameters(), *lm.named_buffers()] if t.is_floating_point()]
    flat = tensors[pick % len(tensors)].data.view(-1)
    i = element % flat.numel()
    original = model_fingerprint(lm)
    saved = flat.clone()
    if swap:
        j = next((j for j in range((i + 1) % flat.numel(), flat.numel()) if flat[j] != flat[i]), None)
        if j is None:
            return  # no other value to swap with
        flat[i], flat[j] = saved[j], saved[i]
    else:
        flat[i] = torch.nextafter(flat[i], torch.tensor(float("inf"), dtype=flat.dtype))
    try:
        assert model_fingerprint(lm) != original
    finally:
        flat.copy_(saved)
    assert model_fingerprint(lm) == original


@pytest.mark.cuda
def test_on_cuda_edits_and_dtype_changes_miss_and_an_unchanged_model_hits():
    lm = tiny_lm().cuda()
    *blocks, query = random_blocks([30, 40, 3])
    store = BlockKVStore()
    generate(lm, blocks, query, ONE, store=store)
    halve_a_weight(lm)
    after = generate(lm, blocks, query, ONE, store=store)
    assert after.block_stats == {"hits": 0, "misses": 2}
    assert torch.equal(after.first_token_logits, generate(lm, blocks, query, ONE, store=BlockKVStore()).first_token_logits)
    lm.to(torch.bfloat16)
    assert generate(lm, blocks, query, ONE, store=store).block_stats == {"hits": 0, "misses": 2}
    assert generate(lm, blocks, query, ONE, store=store).block_stats == {"hits": 2, "misses": 0}



@pytest.mark.parametrize("fingerprinted", [True, False])
@pytest.mark.parametrize("edit", ["in place", ".data", "conversion"])
def test_the_key_rerotator_is_kept_while_the_fingerprint_holds_and_rebuilt_when_the_frequencies_change(edit, fingerprinted):
    """Under an unchanged fingerprint the kept rerotator serves without reading the frequencies (which would wait for a
    GPU at every prompt); after any change to them -- in place, through ``.data`` (no version counter moves), by a
    conversion -- it is rebuilt with the new ones, with the new fingerprint or without one."""
    lm = tiny_lm()
    first = BlockKVStore.rerotator(lm, model_fingerprint(lm))
    assert BlockKVStore.rerotator(lm, model_fingerprint(lm)) is first
    assert BlockKVStore.rerotator(lm) is first  # no fingerprint: the values are compared, and equal
    inv_freq = lm.model.model.rotary_emb.inv_freq
    if edit == "in place":
        inv_freq.mul_(1.001)
    elif edit == ".data":
        inv_freq.data.mul_(1.001)
    else:
        lm.to(torch.bfloat16)
    rebuilt = BlockKVStore.rerotator(lm, model_fingerprint(lm) if fingerprinted else None)
    assert rebuilt is not first
    assert torch.equal(rebuilt.inv_freq, lm.model.model.rotary_emb.inv_freq.float())
