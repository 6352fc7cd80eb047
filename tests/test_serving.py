"""The block KV store and generation: the cache path computes what BlockAttentionLM.forward computes."""

from __future__ import annotations

import inspect
from dataclasses import replace

import pytest
import torch

from conftest import tiny_config
from lit_block import BlockAttentionLM
from lit_block.serving import BlockKVStore, GenerationConfig, generate


def tiny_lm(family="llama", sinks=2, seed=0, **config_overrides):
    torch.manual_seed(seed)
    config = tiny_config(family)
    for k, v in config_overrides.items():
        setattr(config, k, v)
    lm = BlockAttentionLM.from_pretrained(config, num_sink_tokens=sinks).eval()
    with torch.no_grad():
        lm.sink_embeddings.normal_()  # sinks unlike any token, so a misplaced sink shows
    return lm


def forward_last_logits(lm, blocks, query):
    """The block-attention forward on the packed sequence: logits after the query's last token."""
    ids = torch.tensor([[t for b in blocks for t in b] + query])
    block_ids = torch.tensor([[i for i, b in enumerate(blocks) for _ in b] + [-1] * len(query)])
    with torch.no_grad():
        return lm(ids, block_ids).logits[0, -1]


def random_blocks(lengths, seed=1, vocab=128):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(3, vocab, (n,), generator=g).tolist() for n in lengths]


@pytest.mark.parametrize("family", ["llama", "qwen2", "qwen3", "mistral"])
@pytest.mark.parametrize("sinks", [0, 2])
def test_cached_first_token_logits_equal_the_block_attention_forward(family, sinks):
    lm = tiny_lm(family, sinks)
    *blocks, query = random_blocks([7, 1, 12, 4, 6])
    result = generate(lm, blocks, query, GenerationConfig(max_new_tokens=1), store=BlockKVStore())
    expected = forward_last_logits(lm, blocks, query)
    assert (result.first_token_logits - expected).abs().max() < 1e-4
    assert result.context_tokens == sum(map(len, blocks)) + sinks * len(blocks)
    assert result.block_stats == {"hits": 0, "misses": 4}


@pytest.mark.parametrize("rope", [{"rope_type": "linear", "factor": 2.0},
                                  {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                   "original_max_position_embeddings": 64},
                                  {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64}])
def test_scaled_rope_types_are_exact(rope):
    lm = tiny_lm("llama", 1, rope_parameters={"rope_theta": 10000.0, **rope})
    *blocks, query = random_blocks([9, 5, 11, 3], seed=4)
    result = generate(lm, blocks, query, GenerationConfig(max_new_tokens=1))
    assert (result.first_token_logits - forward_last_logits(lm, blocks, query)).abs().max() < 1e-4


def test_length_dependent_rope_is_refused():
    lm = tiny_lm("llama", 0, rope_parameters={"rope_theta": 10000.0, "rope_type": "dynamic", "factor": 2.0})
    with pytest.raises(ValueError, match="rope type 'dynamic' is not supported"):
        generate(lm, random_blocks([4, 4]), [5, 6], GenerationConfig(max_new_tokens=1))


def test_a_reused_block_gives_the_same_answer_at_another_position_and_order():
    lm = tiny_lm()
    a, b, c, query = random_blocks([8, 5, 10, 4], seed=7)
    store = BlockKVStore()
    greedy = GenerationConfig(max_new_tokens=6, stop_at_eos=False)
    generate(lm, [a, b], query, greedy, store=store)  # caches a at offset 0
    reused = generate(lm, [c, b, a], query, greedy, store=store)  # a and b now sit further on
    fresh = generate(lm, [c, b, a], query, greedy, store=BlockKVStore())
    assert reused.block_stats == {"hits": 2, "misses": 1}
    assert reused.token_ids == fresh.token_ids
    assert (reused.first_token_logits - fresh.first_token_logits).abs().max() < 1e-5
    assert (reused.first_token_logits - forward_last_logits(lm, [c, b, a], query)).abs().max() < 1e-4


def test_full_attention_path_equals_the_plain_model():
    lm = tiny_lm(sinks=2)
    *blocks, query = random_blocks([6, 6, 3])
    result = generate(lm, blocks, query, GenerationConfig(max_new_tokens=1), full_attention=True)
    ids = torch.tensor([[t for b in blocks for t in b] + query])
    with torch.no_grad():
        expected = lm(ids, full_attention=True).logits[0, -1]
    assert (result.first_token_logits - expected).abs().max() < 1e-4


def test_store_never_returns_another_models_cache():
    first, second = tiny_lm(seed=0), tiny_lm(seed=1)
    *blocks, query = random_blocks([6, 7, 3])
    store = BlockKVStore()
    generate(first, blocks, query, GenerationConfig(max_new_tokens=1), store=store)
    result = generate(second, blocks, query, GenerationConfig(max_new_tokens=1), store=store)
    assert result.block_stats == {"hits": 0, "misses": 2}
    assert (result.first_token_logits - forward_last_logits(second, blocks, query)).abs().max() < 1e-4
    with torch.no_grad():  # training the model in place changes its fingerprint: old entries no longer match
        first.model.lm_head.weight.add_(0.01)
    after = generate(first, blocks, query, GenerationConfig(max_new_tokens=1), store=store)
    assert after.block_stats == {"hits": 0, "misses": 2}


def test_lru_budget_evicts_the_least_recently_used_and_counts_bytes():
    lm = tiny_lm(sinks=0)
    a, b, c = random_blocks([10, 10, 10], seed=3)
    one = BlockKVStore().get(lm, a).nbytes  # 2 layers x K and V x 2 heads x 10 x 16 fp32 values
    assert one == 2 * 2 * 2 * 10 * 16 * 4
    store = BlockKVStore(max_bytes=2 * one)
    store.get_many(lm, [a, b])
    store.get(lm, a)  # a is now the most recent
    store.get(lm, c)  # evicts b
    assert store.stats() == {"hits": 1, "misses": 3, "evictions": 1, "entries": 2, "bytes": 2 * one,
                             "max_bytes": 2 * one}
    store.get(lm, a)
    assert store.hits == 2
    with pytest.raises(ValueError, match="more than the store's budget"):
        BlockKVStore(max_bytes=one - 1).get(lm, a)


def test_bad_inputs_are_clear_errors():
    lm = tiny_lm(max_position_embeddings=32)
    with pytest.raises(ValueError, match="the query is empty"):
        generate(lm, random_blocks([4]), [])
    with pytest.raises(ValueError, match="longer than the model's context of 32"):
        BlockKVStore().get(lm, list(range(3, 40)))
    with pytest.raises(ValueError, match="more than the model's 32"):
        generate(lm, random_blocks([10, 10]), [5, 6], GenerationConfig(max_new_tokens=8))
    with pytest.raises(ValueError, match="context block 1 is empty"):
        generate(lm, [[4, 5], []], [5])
    with pytest.raises(ValueError, match="max_new_tokens"):
        GenerationConfig(max_new_tokens=0)


def test_sampling_is_seeded_and_stop_strings_cut_the_text(tiny_model_dir):
    lm = BlockAttentionLM.from_pretrained(tiny_model_dir, num_sink_tokens=1).eval()
    blocks = ["In the beginning God created the heaven and the earth.", "And the earth was without form."]
    sample = GenerationConfig(max_new_tokens=12, do_sample=True, temperature=1.5, top_k=50, top_p=0.9, seed=3,
                              stop_at_eos=False)
    one, two = (generate(lm, blocks, "And God said", sample) for _ in range(2))
    assert one.token_ids == two.token_ids and one.stopped_by == "length"
    other = generate(lm, blocks, "And God said", replace(sample, seed=4))
    assert other.token_ids != one.token_ids
    text = lm.tokenizer.decode(one.token_ids)
    stop = text[len(text) // 2 :][:2]
    cut = generate(lm, blocks, "And God said", replace(sample, stop=(stop,)))
    assert cut.stopped_by == "stop" and stop not in cut.text and text.startswith(cut.text)


def test_no_context_blocks_is_a_plain_prompt():
    lm = tiny_lm()
    (query,) = random_blocks([5])
    result = generate(lm, [], query, GenerationConfig(max_new_tokens=3, stop_at_eos=False))
    with torch.no_grad():
        expected = lm(torch.tensor([query]), full_attention=True).logits[0, -1]
    assert result.context_tokens == 0 and len(result.token_ids) == 3
    assert (result.first_token_logits - expected).abs().max() < 1e-4


def test_the_prompt_cache_appends_in_place_and_refuses_overflow():
    from lit_block.serving.prompt_cache import PositionMajorCache

    keys, values = torch.zeros(5, 1, 2, 4), torch.zeros(5, 1, 2, 4)  # [capacity, layers, kv_heads, head_dim]
    cache = PositionMajorCache(keys, values, length=2)
    k, _ = cache.update(torch.ones(1, 2, 3, 4), torch.ones(1, 2, 3, 4), 0)
    assert k.shape == (1, 2, 5, 4) and k.data_ptr() == keys.data_ptr() and cache.get_seq_length() == 5
    assert keys[2:].eq(1).all() and keys[:2].eq(0).all()  # written in place, after the filled positions
    with pytest.raises(ValueError, match="holds 5 positions"):
        cache.update(torch.ones(1, 2, 1, 4), torch.ones(1, 2, 1, 4), 0)


def test_the_cache_goes_by_the_keyword_the_model_takes():
    """transformers renamed ``past_key_values`` to ``cache`` by 5.24 (the old name goes in 5.40); 5.17 knows only
    the old one. The forwards lit-block calls get whichever their signature has."""
    from lit_block.serving.prompt_cache import cache_keyword

    class Old(torch.nn.Module):
        def forward(self, input_ids=None, past_key_values=None, use_cache=False):
            return past_key_values

    class New(torch.nn.Module):
        def forward(self, input_ids=None, cache=None, use_cache=False):
            return cache

    cache = object()
    for module in (Old(), New(), tiny_lm().model, tiny_lm().model.base_model):
        keywords = cache_keyword(module, cache)
        assert list(keywords.values()) == [cache]
        assert next(iter(keywords)) in inspect.signature(module.forward).parameters
    assert Old()(**cache_keyword(Old(), cache)) is cache and New()(**cache_keyword(New(), cache)) is cache


def test_a_padded_prefill_batch_equals_blocks_prefilled_alone():
    lm = tiny_lm("llama", sinks=2)
    blocks = [list(range(20, 40)), list(range(50, 53)), list(range(60, 75))]
    batch = BlockKVStore().prefill(lm, blocks, ["a", "b", "c"])
    for kv, block in zip(batch, blocks):
        (alone,) = BlockKVStore().prefill(lm, [block], ["x"])
        assert kv.length == alone.length == len(block) + lm.num_sink_tokens
        assert (kv.keys - alone.keys).abs().max() < 1e-5 and (kv.values - alone.values).abs().max() < 1e-5
