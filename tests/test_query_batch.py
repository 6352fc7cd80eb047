"""Queries prefilled in the decode slab: an admission batch's queries in one forward over slab rows give each answer
what its own prefill gives, and leave the answers already decoding there as they were."""

from __future__ import annotations

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from conftest import decode_together
from lit_block.serving import BlockKVStore, GenerationConfig, generate
from lit_block.serving.decode_batch import DecodeBatch
from lit_block.serving.engine import ServingEngine
from lit_block.serving.generation import Generation
from test_serving import random_blocks, tiny_lm
from test_serving_engine import answer_together

GREEDY = GenerationConfig(max_new_tokens=4, stop_at_eos=False)


@pytest.mark.parametrize("family", ["llama", "qwen3"])
def test_queries_in_the_slab_give_each_answer_its_own_prefill(family):
    """Contexts and queries of different lengths (rows padded differently), blocks shared between answers: the same
    first-token logits as each answer's own prefill, and its slab row holds that prefill's cache."""
    lm = tiny_lm(family, sinks=2)
    shared = random_blocks([9], seed=3)
    prompts = [(random_blocks([5, 11], seed=1) + shared, random_blocks([4], seed=11)[0]),
               (shared, random_blocks([1], seed=12)[0]),
               (random_blocks([2, 3, 7, 8], seed=2), random_blocks([9], seed=13)[0])]
    store = BlockKVStore()
    alone = []
    for blocks, query in prompts:
        g = Generation(lm, blocks, query, GREEDY)
        g.prefill(store)
        alone.append(g)
    together = [Generation(lm, blocks, query, GREEDY) for blocks, query in prompts]
    for g in together:
        g.assemble(store)
    batch = DecodeBatch(lm)
    logits = batch.prefill(together)
    for a, b, first in zip(alone, together, logits):
        torch.testing.assert_close(first, a.logits, atol=1e-5, rtol=1e-5)
        assert b.cache is None  # its row holds it
        row = batch.rows.index(b)
        n = a.context + len(a.query_ids)
        for i, layer in enumerate(a.cache.layers):
            assert layer.length == n
            torch.testing.assert_close(batch.keys[i, row, :, :n], layer.keys[0], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(batch.values[i, row, :, :n], layer.values[0], atol=1e-5, rtol=1e-5)


def _scattered_free_rows(self, k):
    """Every other free row where there are enough: the forward then spans rows of answers already decoding."""
    free = [r for r, g in enumerate(self.rows) if g is None]
    return free[::2][:k] if len(free[::2]) >= k else free[:k]


@pytest.mark.parametrize("scattered", [False, True])
@settings(max_examples=4, deadline=None)  # ~2 s an example on 2 cores
@given(joins=st.lists(st.integers(0, 4), min_size=2, max_size=6), seed=st.integers(0, 1000))
@example(joins=[0, 0, 1, 1, 2], seed=1)  # joiners beside answers already decoding, whichever draws come
def test_answers_joining_with_queries_in_the_slab_decode_as_each_alone(joins, seed, scattered):
    """Answers join at random steps, those of one step running their queries together in free rows (adjacent, or
    ``scattered`` between answers already decoding, whose rows the forward then spans with padding): every answer's
    tokens and logits are generate()'s for it alone."""
    lm = tiny_lm("llama", sinks=2)
    g = torch.Generator().manual_seed(seed)
    prompts = [(random_blocks([int(n) for n in torch.randint(1, 14, (2,), generator=g)], seed=seed + i),
                random_blocks([int(torch.randint(1, 9, (1,), generator=g))], seed=seed + 50 + i)[0])
               for i in range(len(joins))]
    configs = [GenerationConfig(max_new_tokens=2 + (seed + i) % 5, stop_at_eos=False) for i in range(len(joins))]
    answers = [Generation(lm, blocks, query, config) for (blocks, query), config in zip(prompts, configs)]
    with pytest.MonkeyPatch.context() as patch:
        if scattered:
            patch.setattr(DecodeBatch, "_free_rows", _scattered_free_rows)
        decode_together(DecodeBatch(lm), answers, joins, BlockKVStore(), queries_in_slab=True)
    for answer, (blocks, query), config in zip(answers, prompts, configs):
        alone = generate(lm, blocks, query, config, store=BlockKVStore())
        assert answer.token_ids == alone.token_ids
        torch.testing.assert_close(answer.first_token_logits, alone.first_token_logits, atol=1e-5, rtol=1e-5)


@settings(max_examples=200, deadline=None)
@given(occupied=st.lists(st.booleans(), min_size=1, max_size=24), k=st.integers(1, 8))
def test_a_batch_gets_adjacent_free_rows_when_there_are_some(occupied, k):
    batch = DecodeBatch(None)  # placement only: no model needed
    batch.rows = [object() if taken else None for taken in occupied]
    free = [r for r, taken in enumerate(occupied) if not taken]
    if len(free) < k:
        return
    chosen = batch._free_rows(k)
    assert len(set(chosen)) == k and all(batch.rows[r] is None for r in chosen) and chosen == sorted(chosen)
    has_run = any(free[i + k - 1] - free[i] == k - 1 for i in range(len(free) - k + 1))
    assert (chosen[-1] - chosen[0] == k - 1) == has_run


@pytest.mark.parametrize("fail", [False, True])
def test_an_admitted_burst_answers_as_each_request_alone(monkeypatch, fail):
    """Through the engine, with the slab's query forward working or failing (then each query runs alone): every
    answer is generate()'s."""
    rows = []
    real = DecodeBatch.prefill

    def counted(self, generations):  # the answers each query forward got (then it runs, or fails)
        rows.append(len(generations))
        if fail:
            raise RuntimeError("the batched forward failed")
        return real(self, generations)

    monkeypatch.setattr(DecodeBatch, "prefill", counted)
    lm = tiny_lm("llama", sinks=2)
    prompts = [(random_blocks([6, 4], seed=i % 2), random_blocks([2 + i], seed=20 + i)[0]) for i in range(4)]
    engine = ServingEngine(lm, BlockKVStore(), batch_window_s=0.3, batch_queries=True)
    try:
        results = answer_together(engine, [engine.generation(blocks, query, GREEDY) for blocks, query in prompts])
    finally:
        engine.close()
    alone = [generate(lm, blocks, query, GREEDY, store=BlockKVStore()) for blocks, query in prompts]
    assert len({tuple(a.token_ids) for a in alone}) > 1  # the answers differ: a mixed-up one shows
    assert [results[i][0] for i in range(4)] == ["done"] * 4
    assert [results[i][1].token_ids for i in range(4)] == [a.token_ids for a in alone]
    for i, a in enumerate(alone):
        torch.testing.assert_close(results[i][1].first_token_logits, a.first_token_logits, atol=1e-5, rtol=1e-5)
    assert rows == [4]  # the burst was admitted together and its queries went in one forward


def test_engine_batches_queries_by_default_only_on_a_gpu():
    """``batch_queries=None`` (the servers' default) follows the model's device: off for a CPU model, whose forward
    costs in proportion to its rows; an explicit choice wins."""
    lm = tiny_lm("llama", sinks=2)
    chosen = {}
    for flag in (None, True, False):
        engine = ServingEngine(lm, BlockKVStore(), batch_queries=flag)
        chosen[flag] = engine.batch_queries
        engine.close()
    assert chosen == {None: False, True: True, False: False}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_engine_batches_queries_by_default_on_a_gpu():
    engine = ServingEngine(tiny_lm("llama", sinks=2).cuda(), BlockKVStore())
    try:
        assert engine.batch_queries
    finally:
        engine.close()
