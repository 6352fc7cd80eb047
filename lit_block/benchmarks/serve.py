"""Serving a RAG workload: the block-cache server against the same server with caching off, in one run.

    lit-block bench serve --model smollm2-135m --clients 4 --num-passages 4 --passage-tokens 128 --requests 32   # CPU
    lit-block bench serve --model llama-3.1-8b --device cuda --clients 16 --num-passages 8 --passage-tokens 512 \\
        --requests 256 --hit-rate 0.8                                               # H200 (random weights)

Workload: every request carries ``--num-passages`` distinct passages (context documents: one block each)
drawn from a pool by a Zipf law of exponent ``--zipf``, and a question of its own, and asks for
``--max-new-tokens`` tokens (``ignore_eos``: equal work for both servers). The pool's size is chosen so
that a store that never evicts would serve ``--hit-rate`` of the block lookups if the requests came
one by one; the measured rate (usage's block hits / blocks) is reported. ``--clients`` clients
replay the requests concurrently, each sending its next request when its answer is done.

Each repeat starts both servers afresh (an empty store) on the same loaded model, on 127.0.0.1 in
this process, and replays the same requests against each: ``cache`` (the block store) then ``full``
(``--cache false``: every prompt prefilled whole with causal attention), each after a warm-up burst of one request
a client (``Workload.warmup``: the requests' shape, passages of its own; not counted), so that one-time costs (the
decode slab's size and graph, compilations) stay out of the replay. The clients run in a child
process (``lit_block.benchmarks.serve_clients``), apart from the server they measure. TTFT is measured
by the client, from sending the request to the first streamed chunk (the server sends it when the first
token's logits exist). The table gives each repeat and the medians over repeats; the ratio rows are
``cache / full`` of the same repeat (TTFT) and ``cache / full`` of throughput, medians over repeats.
A ``--model`` named in ``lit_block.benchmarks.ttft.SHAPES`` gets random weights and ``--tokenizer``'s
tokenizer; any other is loaded with its weights (``smollm2-135m``: the embedded SmolLM2-135M).
"""

from __future__ import annotations

import importlib.util
import random
import statistics

import torch

from lit_block.benchmarks.serve_clients import Run, Workload, replay_in_child
from lit_block.errors import UsageError, check_number
from lit_block.serving.engine_options import add_engine_options

GOAL = "H200 goal (16 clients, 8 passages x 512 tokens, 80% hits): TTFT p50 <= 10% of full prefill's, throughput >= 3x"


# ---------------------------------------------------------------- the workload


def zipf_pick(rng: random.Random, weights: list[float], k: int) -> list[int]:
    """``k`` distinct pool indices, each drawn with probability proportional to its Zipf weight."""
    chosen: list[int] = []
    while len(chosen) < k:
        i = rng.choices(range(len(weights)), weights)[0]
        if i not in chosen:
            chosen.append(i)
    return chosen


def _draw(pool: int, requests: int, k: int, zipf: float, seed: int) -> tuple[list[list[int]], float]:
    rng = random.Random(seed)
    weights = [1 / (rank + 1) ** zipf for rank in range(pool)]
    picks = [zipf_pick(rng, weights, k) for _ in range(requests)]
    distinct = len({i for p in picks for i in p})
    return picks, 1 - distinct / (requests * k)  # every first sight is a miss, every later one a hit


def plan_requests(requests: int, k: int, zipf: float, hit_rate: float, seed: int = 0) -> tuple[int, list[list[int]], float]:
    """The pool size whose draws come closest to ``hit_rate`` (bisection: more passages, fewer hits), the draws,
    and their hit rate (a Zipf law's head repeats in any pool: low targets may be out of reach, the rate says)."""
    low, high = k, max(k, 16 * requests * k)
    while high - low > 1:
        mid = (low + high) // 2
        if _draw(mid, requests, k, zipf, seed)[1] >= hit_rate:
            low = mid
        else:
            high = mid
    best = min((low, high), key=lambda n: abs(_draw(n, requests, k, zipf, seed)[1] - hit_rate))
    picks, rate = _draw(best, requests, k, zipf, seed)
    return best, picks, rate


def passage_texts(tokenizer, count: int, tokens: int) -> list[str]:
    """``count`` passages of about ``tokens`` tokens from the bundled texts, each tagged so that no two are equal."""
    from pathlib import Path

    texts = sorted((Path(__file__).resolve().parents[2] / "datamodules" / "texts").glob("*.txt"))
    ids = tokenizer("\n".join(p.read_text() for p in texts), add_special_tokens=False)["input_ids"]
    out = []
    for i in range(count):
        start = (i * tokens * 7) % max(1, len(ids) - tokens)  # strided: neighbours share little text
        out.append(f"[passage {i}] " + tokenizer.decode(ids[start : start + tokens]))
    return out


def build_workload(tokenizer, args) -> Workload:
    pool, picks, rate = plan_requests(args.requests, args.num_passages, args.zipf, args.hit_rate, args.seed)
    passages = passage_texts(tokenizer, pool, args.passage_tokens)
    questions = [f"Question {i}: which passage above speaks of the {w}?" for i, w in
                 zip(range(args.requests), ["king", "sea", "field", "city", "night", "house", "word", "land"] * args.requests)]
    return Workload(passages, list(zip(picks, questions)), rate, args.clients)


def serve_and_replay(model, args, workload: Workload, cache: bool) -> Run:
    """A fresh server (empty store) on ``model``, the workload replayed against it, the server stopped."""
    from lit_block.serving.engine import ServingEngine
    from lit_block.serving.kv_store import BlockKVStore
    from lit_block.serving.prompts import DocumentCutter, PromptBuilder
    from lit_block.serving.server import BackgroundServer, create_app
    from lit_block.serving.service import ServedModel
    from lit_block.sharding import decoder_layers

    cutter = DocumentCutter("fixed", max_block_tokens=4 * args.passage_tokens)  # a passage stays one block
    builder = PromptBuilder(model.tokenizer, cutter)
    store = None
    if cache:  # the full-prefill server has no store
        budget = args.store_gib * 2**30 if args.store_gib else pool_bytes(model, builder, workload)
        store = BlockKVStore(max_bytes=int(budget))
    engine = ServingEngine(model, store, max_batch_requests=args.max_batch_requests,
                           batch_window_s=args.batch_window_ms / 1e3,
                           batch_decode=args.batch_decode, sync_phases=args.sync_phases,
                           batch_queries=args.batch_queries, decode_kernel=args.decode_kernel,
                           fuse_pointwise=args.fuse_pointwise)
    served = ServedModel(engine, builder, "bench", default_max_tokens=args.max_new_tokens)
    # the work the model really does: token rows entering its first decoder layer, whatever path sent them (prompt
    # prefill, the store's misses, queries, decode steps), so a figure that claims more than that work allows shows
    counted = [0]
    hook = decoder_layers(model.model)[0].register_forward_pre_hook(
        lambda _layer, inputs, kwargs: counted.__setitem__(0, counted[0] + _rows(inputs, kwargs)), with_kwargs=True)
    server = BackgroundServer(create_app(served)).start()

    def counters() -> dict:
        return {"phases": dict(engine.metrics.phase_seconds), "tokens": counted[0], "totals": dict(engine.metrics.totals)}

    try:
        run, before, after = replay_in_child(counters, server.url, "bench", workload, args.clients, args.max_new_tokens,
                                             "cache" if cache else "full")
    finally:
        server.stop()
        hook.remove()
    run.phase_s = {k: v - before["phases"].get(k, 0.0) for k, v in after["phases"].items()}
    run.model_tokens = after["tokens"] - before["tokens"]
    run.decode = {k: v - before["totals"].get(k, 0) for k, v in after["totals"].items() if k.startswith(("decode_", "admissions"))}
    run.evictions = store.stats()["evictions"] if store is not None else 0
    return run


def pool_bytes(model, builder, workload: Workload) -> int:
    """The bytes a store needs to hold every block of the pool's passages (and the warm-up burst's) at once, as the
    server writes them (``builder``): keys and values of each block's tokens and the model's sinks at every layer, as
    ``BlockKV.nbytes`` counts them."""
    from lit_block.serving.prompts import Document

    config = model.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    per_position = 2 * config.num_hidden_layers * config.num_key_value_heads * head_dim * next(model.parameters()).element_size()
    passages = [p for documents, _ in workload.warmup() for p in documents] + workload.passages
    blocks, _ = builder.document_blocks([Document(p) for p in passages])
    return per_position * sum(builder.count(b) + model.num_sink_tokens for b in blocks)


def load_model(args):
    from lit_block.benchmarks.ttft import SHAPES, random_model
    from lit_block.model import BlockAttentionLM

    dtype = getattr(torch, args.dtype or ("bfloat16" if args.device == "cuda" else "float32"))
    torch.manual_seed(0)
    if args.model in SHAPES:
        from transformers import AutoTokenizer

        from lit_block.model_sources import resolve_model_path

        model = random_model(args.model, args.device, dtype, args.sinks or 0)
        model.tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(args.tokenizer))
        if len(model.tokenizer) > model.config.vocab_size:
            raise UsageError(f"--tokenizer {args.tokenizer} has more tokens than {args.model}'s vocabulary")
    else:
        model = BlockAttentionLM.from_pretrained(args.model, num_sink_tokens=args.sinks, dtype=dtype).to(args.device)
        if model.tokenizer is None:
            raise UsageError(f"--model {args.model}: no tokenizer next to the weights")
    return model.eval().requires_grad_(False)


def build_parser():
    from lit_block.command_line import command_parser

    p = command_parser("lit-block bench serve", __doc__)
    p.add_argument("--model", default="smollm2-135m", help="a shape of lit_block.benchmarks.ttft.SHAPES (random "
                   "weights), an embedded name or a model folder")
    p.add_argument("--tokenizer", default="smollm2-135m", help="tokenizer of a random-weight shape")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="where the model runs")
    p.add_argument("--dtype", default=None, help="default: bfloat16 on cuda, float32 on cpu")
    p.add_argument("--sinks", type=int, default=None, help="sinks per block (default: the model's saved count, or 0)")
    p.add_argument("--clients", type=int, default=4, help="concurrent clients")
    p.add_argument("--requests", type=int, default=32, help="requests per replay (split among the clients)")
    p.add_argument("--num-passages", type=int, default=4, help="passages (context blocks) per request")
    p.add_argument("--passage-tokens", type=int, default=128, help="tokens per passage")
    p.add_argument("--hit-rate", type=float, default=0.8, help="block hit rate the passage pool is sized for")
    p.add_argument("--zipf", type=float, default=1.0, help="Zipf exponent of passage popularity")
    p.add_argument("--max-new-tokens", type=int, default=16, help="tokens generated per request")
    p.add_argument("--repeat", type=int, default=3, help="replays per server (medians reported)")
    p.add_argument("--store-gib", type=float, default=None,
                   help="the block store's byte budget (GiB; default: room for the whole passage pool, so that only "
                        "first sights miss)")
    p.add_argument("--sync-phases", type=bool, default=False,
                   help="the engine waits for the GPU after each phase, so that the phase columns hold their own work")
    p.add_argument("--batch-window-ms", type=float, default=5.0, help="the engine's wait for a burst of requests")
    p.add_argument("--batch-decode", type=bool, default=True, help="both servers decode their answers in one batch")
    add_engine_options(p)
    p.add_argument("--seed", type=int, default=0, help="seed of the passage draws")
    p.add_argument("--threads", type=int, default=None,
                   help="torch's CPU threads (default: torch's own; 1 on a CPU shared with other jobs, whose threads "
                        "would otherwise spin against them)")
    return p


def _rows(inputs: tuple, kwargs: dict) -> int:
    """Token rows of a decoder layer's input (``hidden_states [batch, tokens, hidden]``)."""
    hidden = inputs[0] if inputs else kwargs["hidden_states"]
    return hidden.shape[0] * hidden.shape[1]


def run_bench(args) -> dict:
    """Every repeat's rows for both servers, and the workload's facts."""
    for name in ("clients", "requests", "num_passages", "passage_tokens", "max_new_tokens", "repeat"):
        check_number(f"--{name.replace('_', '-')}", getattr(args, name), low=1, integer=True)
    check_number("--max-batch-requests", args.max_batch_requests, low=1, integer=True)
    check_number("--hit-rate", args.hit_rate, low=0, high=1, high_open=True)
    if args.store_gib is not None:
        check_number("--store-gib", args.store_gib, low=0, low_open=True)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device here")
    from lit_block.attention.transformers_hook import decode_kernel_problem

    if problem := decode_kernel_problem(args.decode_kernel, args.device):
        raise UsageError(f"--decode-kernel {args.decode_kernel}: {problem}")
    if args.threads is not None:
        check_number("--threads", args.threads, low=1, integer=True)
        torch.set_num_threads(args.threads)
    if importlib.util.find_spec("openai") is None:  # the clients are the official ones
        raise UsageError("lit-block bench serve needs the openai client: pip install openai")
    model = load_model(args)
    workload = build_workload(model.tokenizer, args)
    repeats = []
    for _ in range(args.repeat):
        repeats.append({"cache": serve_and_replay(model, args, workload, True).row(),
                        "full": serve_and_replay(model, args, workload, False).row()})
    return {"repeats": repeats, "pool": len(workload.passages), "expected_hit_rate": workload.expected_hit_rate}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from lit_block.attention.transformers_hook import resolve_decode_kernel
    from lit_block.serving.engine import prefer_expandable_segments

    prefer_expandable_segments()
    result = run_bench(args)
    name = torch.cuda.get_device_name() if args.device == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    print(f"\n{args.model} on {name}, torch {torch.__version__}: {args.clients} clients, {args.requests} requests of "
          f"{args.num_passages} passages x {args.passage_tokens} tokens from a pool of {result['pool']} (Zipf {args.zipf}; "
          f"hit rate {100 * result['expected_hit_rate']:.0f}% if sequential), {args.max_new_tokens} new tokens each; "
          f"{args.repeat} repeats; decode kernel {resolve_decode_kernel(args.decode_kernel, args.device)}"
          f"{'; norms and MLPs compiled' if args.fuse_pointwise else ''}\n")
    print("| repeat | server | TTFT p50 ms | TTFT p99 ms | server TTFT p50 ms | requests/s | tokens/s | block hit rate "
          "| evictions | engine fetch / prefill / decode ms per request | model tokens per request "
          "| decode rows per step / slab rebuilds | requests per admission |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    def row(label: str, mode: str, r: dict) -> str:
        phases = " / ".join(f"{r.get(f'{k}_ms', 0.0):.1f}" for k in ("fetch", "prefill", "decode"))
        return (f"| {label} | {mode} | {r['p50']:.1f} | {r['p99']:.1f} | {r['server_p50']:.1f} | {r['rps']:.2f} | "
                f"{r['tps']:.1f} | {100 * r['hit_rate']:.0f}% | {r['evictions']:.0f} | {phases} | {r['model_tokens']:.0f} | "
                f"{r['rows_per_step']:.1f} / {r['rebuilds']:.0f} | {r['per_admission']:.1f} |")

    for i, rows in enumerate(result["repeats"]):
        print("\n".join(row(str(i + 1), mode, rows[mode]) for mode in ("cache", "full")))
    summary = summarize(result["repeats"])
    print("\n".join(row("median", mode, summary[mode]) for mode in ("cache", "full")))
    ratio = summary["ratio"]
    print(f"| median | cache / full | {100 * ratio['p50']:.1f}% | {100 * ratio['p99']:.1f}% | "
          f"{100 * ratio['server_p50']:.1f}% | {ratio['rps']:.2f}x | {ratio['tps']:.2f}x | | | | | |")
    print(f"\n{GOAL}: {goal_verdict(args, summary)}, on {name}.")
    return 0


def goal_verdict(args, summary: dict) -> str:
    """Whether this run meets the goal, said only of a run of the goal's workload: its clients and prompt shape, and a
    measured hit rate of at most 80% (a pool sized for more hits makes both ratios easier)."""
    shape = (args.clients, args.num_passages, args.passage_tokens) == (16, 8, 512)
    hit_rate = summary["cache"]["hit_rate"]
    if not shape or hit_rate > 0.805:
        return (f"not judged: this run is not the goal's workload ({args.clients} clients, {args.num_passages} x "
                f"{args.passage_tokens} tokens, {100 * hit_rate:.0f}% measured hits)")
    met = summary["ratio"]["p50"] <= 0.10 and summary["ratio"]["rps"] >= 3
    return f"{'met' if met else 'not met'} by this run at {100 * hit_rate:.0f}% measured hits"


def summarize(repeats: list[dict]) -> dict:
    """Medians over repeats of each server's figures, and of the per-repeat ratios cache / full."""
    out = {}
    for mode in ("cache", "full"):
        figures = [k for k in repeats[0][mode] if k != "mode"]  # the timings, hit rate, evictions and phase times
        out[mode] = {k: statistics.median(r[mode][k] for r in repeats) for k in figures}
    out["ratio"] = {k: statistics.median(r["cache"][k] / r["full"][k] for r in repeats)
                    for k in ("p50", "p99", "server_p50", "rps", "tps")}
    return out
