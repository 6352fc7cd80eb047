"""The batched query prefill: an admission batch's queries in one forward give each answer what its own prefill gives."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lit_block.serving import BlockKVStore, GenerationConfig, generate
from lit_block.serving import engine as engine_module
from lit_block.serving.engine import ServingEngine
from lit_block.serving.generation import Generation
from lit_block.serving.query_batch import chunks, prefill_queries
from test_serving import random_blocks, tiny_lm
from test_serving_engine import answer_together

GREEDY = GenerationConfig(max_new_tokens=4, stop_at_eos=False)


@pytest.mark.parametrize("family", ["llama", "qwen3"])
def test_batched_queries_give_each_answer_its_own_prefill(family):
    """Contexts and queries of different lengths (so rows pad on both sides), blocks shared between answers: the
    same first-token logits and the same cache as each answer's own prefill."""
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
    logits = prefill_queries(lm, together)
    for a, b, first in zip(alone, together, logits):
        torch.testing.assert_close(first, a.logits, atol=1e-5, rtol=1e-5)
        for la, lb in zip(a.cache.layers, b.cache.layers):
            assert lb.length == la.length == a.context + len(a.query_ids)
            torch.testing.assert_close(lb.keys, la.keys, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(lb.values, la.values, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("fail", [False, True])
def test_an_admitted_burst_answers_as_each_request_alone(monkeypatch, fail):
    """Through the engine, with the batched forward working or failing (then each query runs alone): every answer
    is generate()'s."""
    rows = []

    def counted(model, generations):  # the rows each batched forward got (then it runs, or fails)
        rows.append(len(generations))
        if fail:
            raise RuntimeError("the batched forward failed")
        return prefill_queries(model, generations)

    monkeypatch.setattr(engine_module, "prefill_queries", counted)
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


class _Sized:
    def __init__(self, context: int, query: int):
        self.context, self.query_ids = context, [0] * query


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.tuples(st.integers(0, 300), st.integers(1, 40)), min_size=1, max_size=12),
       budget=st.integers(1, 2000))
def test_chunks_hold_every_answer_once_within_the_budget(sizes, budget):
    items = [_Sized(c, q) for c, q in sizes]
    groups = chunks(items, budget)
    assert sorted(map(id, (g for group in groups for g in group))) == sorted(map(id, items))
    for group in groups:
        width = max(g.context for g in group) + max(len(g.query_ids) for g in group)
        assert len(group) == 1 or len(group) * width <= budget


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
