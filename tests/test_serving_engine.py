"""The serving engine without HTTP: what fails in one request fails it alone, and leaves the store's books straight."""

from __future__ import annotations

import os
import threading
import time

import pytest
import torch

from lit_block.serving import BlockKVStore, GenerationConfig, generate
from lit_block.serving.engine import Job, ServingEngine
from test_serving import random_blocks, tiny_lm

GREEDY = GenerationConfig(max_new_tokens=5, stop_at_eos=False)


def answer_together(engine: ServingEngine, generations: list) -> dict[int, tuple[str, object]]:
    """Submit every answer at once (one burst, admitted together); each one's last event, by index."""
    last: dict[int, tuple[str, object]] = {}
    finished = threading.Event()

    def notify_for(i: int):
        def notify(kind: str, payload: object) -> None:
            if kind in ("done", "error"):
                last[i] = (kind, payload)
                if len(last) == len(generations):
                    finished.set()
        return notify

    for i, generation in enumerate(generations):
        engine.submit(Job(generation, stream=False, notify=notify_for(i)))
    assert finished.wait(120), "the engine did not finish every answer"
    return last


@pytest.mark.parametrize("batch_decode", [False, "launch", "finish"])  # the batched step failing as queued, or read
def test_an_answer_failing_mid_decode_leaves_the_others_as_they_are_alone(batch_decode):
    lm = tiny_lm("llama", sinks=2)
    prompts = [(random_blocks([6, 4], seed=i), random_blocks([3], seed=10 + i)[0]) for i in range(3)]
    engine = ServingEngine(lm, BlockKVStore(), batch_window_s=0.3, batch_decode=bool(batch_decode))
    try:
        generations = [engine.generation(blocks, query, GREEDY) for blocks, query in prompts]

        def fail(*_):
            raise RuntimeError("this answer's forward failed")

        if batch_decode:  # the shared forward fails: every answer in it fails, and the engine goes on
            setattr(engine.decoder, batch_decode, fail)
        else:  # the first answer's own forward fails at its first step
            generations[0].run = fail
        results = answer_together(engine, generations)
        failed = range(3) if batch_decode else [0]
        assert all(results[i][0] == "error" for i in failed)
        for i, (blocks, query) in enumerate(prompts):
            if i not in failed:
                assert results[i][0] == "done"
                assert results[i][1].token_ids == generate(lm, blocks, query, GREEDY).token_ids
        if batch_decode:
            delattr(engine.decoder, batch_decode)  # the class's own again
        again = answer_together(engine, [engine.generation(*prompts[1], GREEDY)])
        assert again[0][1].token_ids == generate(lm, *prompts[1], GREEDY).token_ids
    finally:
        engine.close()


def test_a_failed_fetch_leaves_the_store_and_its_counters_as_they_were(monkeypatch):
    lm = tiny_lm("llama", sinks=1)
    store = BlockKVStore()
    old, new = random_blocks([5, 7], seed=3)
    store.fetch(lm, [old])
    before, keys = store.stats(), list(store.entries)

    def out_of_memory(*_):
        raise torch.OutOfMemoryError("no room for the batch")

    monkeypatch.setattr(store, "prefill", out_of_memory)
    with pytest.raises(torch.OutOfMemoryError):
        store.fetch(lm, [old, new])  # a hit and a miss whose prefill fails
    assert store.stats() == before and list(store.entries) == keys


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_burst_of_one_shape_on_a_gpu_answers_as_each_request_alone(dtype):
    """Queries of one shape share a CUDA graph, replayed for each before any chooses its first token: each answer
    is still the one generate() gives alone (one forward per answer, so the comparison is exact)."""
    lm = tiny_lm("llama", sinks=2).to("cuda", dtype)
    blocks = random_blocks([40, 25], seed=7)
    queries = random_blocks([6] * 4, seed=8)
    engine = ServingEngine(lm, BlockKVStore(), batch_window_s=0.3, batch_decode=False)
    try:
        results = answer_together(engine, [engine.generation(blocks, query, GREEDY) for query in queries])
    finally:
        engine.close()
    alone = [generate(lm, blocks, query, GREEDY, store=BlockKVStore()).token_ids for query in queries]
    assert len({tuple(a) for a in alone}) > 1  # the queries' answers differ: a mixed-up one shows
    assert [results[i][1].token_ids for i in range(len(queries))] == alone


def test_the_server_asks_for_expandable_segments_unless_the_user_chose_an_allocator_setting(monkeypatch):
    from lit_block.serving.engine import prefer_expandable_segments

    monkeypatch.delenv("PYTORCH_CUDA_ALLOC_CONF", raising=False)
    prefer_expandable_segments()
    assert os.environ["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True"
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "max_split_size_mb:512")
    prefer_expandable_segments()
    assert os.environ["PYTORCH_CUDA_ALLOC_CONF"] == "max_split_size_mb:512"



def test_requests_taken_from_the_queue_before_a_shutdown_are_answered():
    """A shutdown that comes while the engine waits out its batch window: the requests it then takes from the queue
    get an answer or an error, not silence (a client would wait for ever)."""
    lm = tiny_lm("llama", sinks=2)
    engine = ServingEngine(lm, BlockKVStore(), batch_window_s=0.5)
    events: dict[int, list[str]] = {0: [], 1: []}
    for i in (0, 1):
        prompt = (random_blocks([6, 4], seed=i), random_blocks([3], seed=10 + i)[0])
        engine.submit(Job(engine.generation(*prompt, GREEDY), stream=False,
                          notify=lambda kind, _, i=i: events[i].append(kind)))
        time.sleep(0.1)  # the first wakes the engine, which waits its window; the second comes inside it
    engine.close(timeout=60)  # the shutdown too: the window takes the second request, then sees it
    assert all(e and e[-1] in ("done", "error") for e in events.values()), events


def test_an_engine_with_compiled_norms_and_mlps_answers_as_the_eager_model():
    """``fuse_pointwise``: the norms and MLPs compiled in place (dynamic shapes: prefills, misses and decode steps of
    every size through the same compilations); a burst of answers is still each one generate() gives eagerly."""
    lm = tiny_lm("llama", sinks=2)
    eager = tiny_lm("llama", sinks=2)  # the same seed: the same weights, never compiled
    blocks, queries = random_blocks([40, 25], seed=7), random_blocks([6, 9, 4], seed=8)
    engine = ServingEngine(lm, BlockKVStore(), batch_window_s=0.3, fuse_pointwise=True)
    try:
        results = answer_together(engine, [engine.generation(blocks, query, GREEDY) for query in queries])
    finally:
        engine.close()
    compiled = [m for m in lm.modules() if getattr(m, "_compiled_call_impl", None) is not None]
    layers = lm.config.num_hidden_layers
    assert len(compiled) == 3 * layers + 1  # two norms and an MLP a layer, and the final norm
    alone = [generate(eager, blocks, query, GREEDY, store=BlockKVStore()).token_ids for query in queries]
    assert len({tuple(a) for a in alone}) > 1  # the queries' answers differ: a mixed-up one shows
    assert [results[i][1].token_ids for i in range(len(queries))] == alone
