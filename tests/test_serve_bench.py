"""``lit-block bench serve``: the workload, the caching-off baseline server, and one tiny end-to-end run."""

from __future__ import annotations

import inspect
import os
import random
import socket

import openai
import pytest

from lit_block import BlockAttentionLM
from lit_block.benchmarks.serve import plan_requests, summarize, zipf_pick
from lit_block.serving import GenerationConfig, generate
from lit_block.serving.server import BackgroundServer, build_parser, create_app, load_served


@pytest.mark.parametrize("target", [0.7, 0.8, 0.9])
def test_the_pool_is_sized_for_the_hit_rate(target):
    pool, picks, rate = plan_requests(requests=64, k=4, zipf=1.0, hit_rate=target)
    assert abs(rate - target) < 0.03
    assert len(picks) == 64 and all(len(set(p)) == 4 and max(p) < pool for p in picks)
    assert plan_requests(64, 4, 1.0, target)[1] == picks  # seeded: both servers replay the same requests


def test_zipf_prefers_the_first_passages():
    rng = random.Random(0)
    weights = [1 / (r + 1) for r in range(50)]
    counts = [0] * 50
    for _ in range(400):
        for i in zipf_pick(rng, weights, 3):
            counts[i] += 1
    assert counts[0] > counts[10] > 0 and sum(counts) == 1200


def test_the_caching_off_server_is_full_prefill(tiny_model_dir):
    """The baseline the bench compares with: every prompt prefilled whole with causal attention, no store."""
    served = load_served(build_parser().parse_args([str(tiny_model_dir), "--port", "0", "--cache", "false",
                                                    "--served-model-name", "tiny"]))
    server = BackgroundServer(create_app(served)).start()
    try:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
        docs, prompt = ["In the beginning God created the heaven and the earth."], "And God said"
        answer = client.completions.create(model="tiny", prompt=prompt, max_tokens=6, temperature=0,
                                           extra_body={"lit_block": {"documents": docs}})
        lm = BlockAttentionLM.from_pretrained(tiny_model_dir).eval()
        expected = generate(lm, [d + "\n\n" for d in docs], prompt, GenerationConfig(max_new_tokens=6), full_attention=True)
        assert answer.choices[0].text == expected.text
        assert answer.usage.lit_block["cache"] is False and answer.usage.prompt_tokens_details.cached_tokens == 0
        assert served.engine.store is None
    finally:
        server.stop()


def test_a_tiny_bench_prints_both_servers_and_their_ratios(tiny_model_dir, capsys):
    from lit_block.cli import main

    assert main(["bench", "serve", "--model", str(tiny_model_dir), "--clients", "3", "--requests", "9", "--num-passages", "2",
                 "--passage-tokens", "16", "--max-new-tokens", "3", "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    header = [c.strip() for c in next(line for line in out.splitlines() if line.startswith("| repeat")).split("|")]
    rows = {line.split("|")[2].strip(): dict(zip(header, (c.strip() for c in line.split("|"))))
            for line in out.splitlines() if line.startswith("| median")}
    assert set(rows) == {"cache", "full", "cache / full"}
    assert float(rows["cache"]["block hit rate"].rstrip("%")) > 0 and rows["full"]["block hit rate"] == "0%"
    # the default store holds the whole pool: nothing is evicted, so only first sights miss
    assert rows["cache"]["evictions"] == "0"
    phases = "engine fetch / prefill / decode ms per request"
    for mode in ("cache", "full"):
        fetch, prefill, decode = map(float, rows[mode][phases].split(" / "))
        assert prefill > 0 and decode > 0 and fetch >= 0
    # the work done, counted at the model's first layer: the full server runs every prompt token (2 passages x 16 and
    # the question), the cached one only its misses and queries; both run each answer's decode steps
    tokens = {mode: float(rows[mode]["model tokens per request"]) for mode in ("cache", "full")}
    assert tokens["full"] > 2 * 16 + 3 and tokens["cache"] < tokens["full"]
    for mode in ("cache", "full"):  # batched decoding: between one answer a step and every client's
        per_step = rows[mode]["decode rows per step / slab rebuilds"].split(" / ")[0]
        assert 1 <= float(per_step) <= 3  # (the slab is built by the warm-up burst and kept: 0 rebuilds here)
        assert 1 <= float(rows[mode]["requests per admission"]) <= 3  # at most the 3 clients' requests a turn
    assert "goal" in out and "not judged: this run is not the goal's workload (3 clients" in out


def test_the_warm_up_burst_has_the_requests_shape_and_none_of_their_passages():
    from lit_block.benchmarks.serve_clients import Workload

    passages = [f"[passage {i}] " + "word " * (5 + 3 * i) for i in range(4)]
    workload = Workload(passages, [([0, 2, 3], "Q1?"), ([1, 0, 2], "Q2?")], 0.5, clients=5)
    burst = workload.warmup()
    assert len(burst) == 5 and all(len(documents) == 3 for documents, _ in burst)  # one a client, as many passages
    sent = [p for documents, _ in burst for p in documents]
    assert len(set(sent)) == len(sent) and not set(sent) & set(passages)  # its own blocks: the pool's stay cold


def test_the_default_store_is_sized_to_the_pool_exactly(tiny_model_dir):
    """pool_bytes counts what the server's store holds once the warm-up burst and every passage of the pool have
    been prefilled."""
    from lit_block.benchmarks.serve import pool_bytes
    from lit_block.benchmarks.serve_clients import Workload
    from lit_block.serving.kv_store import BlockKVStore
    from lit_block.serving.prompts import Document, DocumentCutter, PromptBuilder

    lm = BlockAttentionLM.from_pretrained(tiny_model_dir, num_sink_tokens=2).eval()
    builder = PromptBuilder(lm.tokenizer, DocumentCutter("fixed", max_block_tokens=256))
    passages = [f"[passage {i}] " + "word " * (5 + 3 * i) for i in range(4)]
    workload = Workload(passages, [([0, 1], "Q?"), ([2, 3], "Q?")], 0.5, clients=3)
    store = BlockKVStore(max_bytes=1 << 30)
    for documents in [d for d, _ in workload.warmup()] + [[p] for p in passages]:
        blocks, _ = builder.document_blocks([Document(p) for p in documents])
        store.fetch(lm, [builder.encode(b) for b in blocks])
    assert store.stats()["bytes"] == pool_bytes(lm, builder, workload)


@pytest.mark.parametrize("clients, hit_rate, rps, verdict", [
    (16, 0.78, 3.1, "not met"),  # TTFT above 10%
    (16, 0.80, 3.1, "met"),
    (16, 0.90, 3.9, "not judged"),  # more hits than the goal's workload
    (4, 0.78, 3.1, "not judged"),  # another concurrency
])
def test_the_goal_is_judged_only_on_the_goals_workload(clients, hit_rate, rps, verdict):
    from lit_block.benchmarks.serve import build_parser as bench_parser
    from lit_block.benchmarks.serve import goal_verdict

    args = bench_parser().parse_args(["--clients", str(clients), "--num-passages", "8", "--passage-tokens", "512"])
    p50 = 0.09 if verdict == "met" else 0.2
    summary = {"cache": {"hit_rate": hit_rate}, "ratio": {"p50": p50, "rps": rps}}
    assert goal_verdict(args, summary).startswith(verdict)


def test_summary_takes_medians_of_per_repeat_ratios():
    row = dict(p50=10.0, p99=20.0, server_p50=9.0, rps=2.0, tps=8.0, hit_rate=0.8)
    repeats = [{"cache": {**row, "p50": p}, "full": {**row, "p50": 100.0, "rps": 1.0, "hit_rate": 0.0}} for p in (5, 10, 40)]
    summary = summarize(repeats)
    assert summary["ratio"]["p50"] == 0.10 and summary["ratio"]["rps"] == 2.0 and summary["cache"]["p50"] == 10


def test_the_clients_process_reports_its_error():
    """The clients run in a child process (not beside the engine thread); when they fail, the error comes back."""
    from lit_block.benchmarks.serve_clients import Workload, replay_in_child

    workload = Workload(["A passage."], [([0], "A question?")], 0.0)
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(RuntimeError, match=r"clients failed(.|\n)*APIConnectionError"):
        replay_in_child(dict, f"http://127.0.0.1:{port}", "bench", workload, 1, 2, "cache")


class _DiesWhenUnpickled:
    """Kills the process that unpickles it: a clients' process that dies without a word."""

    def __reduce__(self):
        return os._exit, (3,)


def test_a_clients_process_that_dies_is_reported_with_its_status():
    from lit_block.benchmarks.serve_clients import replay_in_child

    with pytest.raises(RuntimeError, match="clients exited with status 3"):
        replay_in_child(dict, "http://127.0.0.1:9", "bench", _DiesWhenUnpickled(), 1, 2, "cache")


@pytest.mark.parametrize("option", ["--max-batch-requests", "--clients"])
def test_bench_serve_names_a_bad_count(option, capsys):
    from lit_block.cli import main

    assert main(["bench", "serve", "--model", "unused", option, "0"]) == 2
    assert f"{option} must be >= 1, got 0" in capsys.readouterr().err


def test_bench_serve_refuses_the_split_key_kernel_off_cuda(capsys):
    from lit_block.cli import main

    assert main(["bench", "serve", "--model", "unused", "--device", "cpu", "--decode-kernel", "split-key"]) == 2
    assert "--decode-kernel split-key: split-key is a Triton kernel for CUDA devices, not cpu" in capsys.readouterr().err


def test_the_decode_kernel_auto_means_split_key_only_on_cuda_with_triton(monkeypatch):
    import importlib.util

    from lit_block.attention.transformers_hook import resolve_decode_kernel

    real = importlib.util.find_spec
    for triton_there in (True, False):
        monkeypatch.setattr(importlib.util, "find_spec",
                            lambda name, *a, t=triton_there: (object() if t else None) if name == "triton" else real(name, *a))
        assert resolve_decode_kernel("auto", "cuda:0") == ("split-key" if triton_there else "sdpa")
        assert resolve_decode_kernel("auto", "cpu") == "sdpa"
        assert resolve_decode_kernel("sdpa", "cuda") == "sdpa"  # a named kernel stays


def test_bench_serve_admits_as_many_requests_a_turn_as_the_server_by_default():
    """The benchmark measures the server users start: one default for both (``engine_options``)."""
    from lit_block.benchmarks.serve import build_parser as bench_parser
    from lit_block.serving.engine import ServingEngine

    bench = bench_parser().parse_args([]).max_batch_requests
    serve = build_parser().parse_args(["some-model"]).max_batch_requests
    engine = inspect.signature(ServingEngine).parameters["max_batch_requests"].default
    assert bench == serve == engine
    assert bench_parser().parse_args(["--max-batch-requests", "3"]).max_batch_requests == 3


def test_pointwise_fusion_is_off_unless_asked_in_server_bench_and_engine():
    from lit_block.benchmarks.serve import build_parser as bench_parser
    from lit_block.serving.engine import ServingEngine

    assert bench_parser().parse_args([]).fuse_pointwise is False
    assert build_parser().parse_args(["some-model"]).fuse_pointwise is False
    assert inspect.signature(ServingEngine).parameters["fuse_pointwise"].default is False
    assert bench_parser().parse_args(["--fuse-pointwise", "true"]).fuse_pointwise is True
