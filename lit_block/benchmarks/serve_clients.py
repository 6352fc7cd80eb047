"""The clients of ``bench serve``: the workload they replay, and the replay itself, in a process of its own.

``replay`` runs ``clients`` concurrent ``openai`` clients, each sending its next request when its answer is done,
and measures TTFT from sending a request to its first streamed chunk. ``replay_in_child`` runs it in a spawned
process, so that the clients' own work (parsing every streamed chunk) stays out of the measured server's process; an
A/B on one H100 found no difference beyond run-to-run noise (docs/serve.md), but a load generator belongs apart.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field


@dataclass
class Workload:
    passages: list[str]  # the pool
    requests: list[tuple[list[int], str]]  # per request: passage indices, question
    expected_hit_rate: float
    clients: int = 1  # concurrent clients: the warm-up sends one request each

    def warmup(self) -> list[tuple[list[str], str]]:
        """The burst sent before the measured replay, one request a client at once: each of the requests' shape (as
        many passages, of the pool's lengths) and concurrency, so that one-time costs (first calls, the decode slab's
        size and CUDA graph, compilations) fall before the replay; every passage its own, marked, so that the pool's
        blocks stay cold."""
        count = len(self.requests[0][0]) if self.requests else 1
        return [([f"[warm-up {c}.{i}] " + self.passages[i % len(self.passages)] for i in range(count)],
                 "Warm-up question?") for c in range(self.clients)]


@dataclass
class Run:
    mode: str  # cache or full
    ttft_ms: list[float] = field(default_factory=list)
    server_ttft_ms: list[float] = field(default_factory=list)
    tokens: int = 0
    blocks: int = 0
    hits: int = 0
    wall_s: float = 0.0
    phase_s: dict = field(default_factory=dict)  # the engine's seconds per phase over the replay (warm-up excluded)
    evictions: int = 0
    model_tokens: int = 0  # token rows through the model's first decoder layer over the replay (warm-up excluded)
    decode: dict = field(default_factory=dict)  # the engine's decode steps, rows and slab rebuilds over the replay

    def row(self) -> dict:
        q = sorted(self.ttft_ms)
        return {"mode": self.mode, "p50": _percentile(q, 50), "p99": _percentile(q, 99),
                "server_p50": _percentile(sorted(self.server_ttft_ms), 50), "rps": len(q) / self.wall_s,
                "tps": self.tokens / self.wall_s, "hit_rate": self.hits / self.blocks if self.blocks else 0.0,
                **{f"{k}_ms": 1e3 * v / len(q) for k, v in self.phase_s.items()}, "evictions": self.evictions,
                "model_tokens": self.model_tokens / len(q),
                "rows_per_step": self.decode.get("decode_rows", 0) / max(self.decode.get("decode_steps", 0), 1),
                "rebuilds": self.decode.get("decode_slab_rebuilds", 0),
                "per_admission": len(q) / max(self.decode.get("admissions", 0), 1)}


def _percentile(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    rank = (len(values) - 1) * pct / 100  # linear interpolation between the closest ranks
    low = int(rank)
    high = min(low + 1, len(values) - 1)
    return values[low] + (values[high] - values[low]) * (rank - low)


async def replay(url: str, model: str, workload: Workload, clients: int, max_tokens: int, mode: str,
                 stage=lambda name: None) -> Run:
    """The workload replayed by ``clients`` concurrent clients: the client's figures. ``stage("start")`` is called
    after the warm-up burst (``Workload.warmup``) and ``stage("end")`` after the last answer (where the server's
    counters are read)."""
    from openai import AsyncOpenAI  # checked by run_bench

    run = Run(mode)
    client = AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", timeout=3600, max_retries=0)

    async def one(documents: list[str], question: str) -> None:
        sent = time.perf_counter()
        stream = await client.completions.create(
            model=model, prompt=question, max_tokens=max_tokens, temperature=0, stream=True,
            stream_options={"include_usage": True},
            extra_body={"lit_block": {"documents": documents, "ignore_eos": True}})
        first = None
        async for chunk in stream:
            first = first or time.perf_counter()
            if chunk.usage is not None:
                extension = chunk.usage.model_extra["lit_block"]
                run.tokens += chunk.usage.completion_tokens
                run.blocks += extension["blocks"]
                run.hits += extension["block_hits"]
                run.server_ttft_ms.append(extension["ttft_ms"])
        run.ttft_ms.append((first - sent) * 1e3)

    async def client_loop(share: list[tuple[list[int], str]]) -> None:
        for indices, question in share:
            await one([workload.passages[i] for i in indices], question)

    await asyncio.gather(*(one(documents, question) for documents, question in workload.warmup()))
    run = Run(mode)  # the warm-up's figures dropped
    stage("start")
    shares = [workload.requests[c::clients] for c in range(clients)]
    start = time.perf_counter()
    await asyncio.gather(*(client_loop(share) for share in shares))
    run.wall_s = time.perf_counter() - start
    stage("end")
    await client.close()
    return run


def _client_process(conn, *replay_args) -> None:
    """The clients' process: ``replay``, pausing at each stage until the server's process has read its counters;
    sends the ``Run``, or the error's traceback."""
    import traceback

    def stage(name: str) -> None:
        conn.send(name)
        conn.recv()

    try:
        conn.send(asyncio.run(replay(*replay_args, stage=stage)))
    except BaseException:  # noqa: BLE001 - whatever it is, the parent reports it
        conn.send(traceback.format_exc())


def replay_in_child(counters, *replay_args) -> tuple[Run, dict, dict]:
    """``replay(*replay_args)`` in a fresh process; ``counters()`` (the server's, read here) at its start and end."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")  # no fork of a process holding a CUDA context and threads
    parent, child = context.Pipe()
    process = context.Process(target=_client_process, args=(child, *replay_args), daemon=True)
    process.start()
    child.close()  # the child's end lives in the child alone: its death then ends recv() here with EOFError
    read = {}
    try:
        while True:
            try:
                message = parent.recv()
            except EOFError:  # the child died without a word (killed, out of memory)
                process.join(30)
                raise RuntimeError(f"bench serve's clients exited with status {process.exitcode}") from None
            if isinstance(message, Run):
                return message, read["start"], read["end"]
            if message not in ("start", "end"):
                raise RuntimeError(f"bench serve's clients failed:\n{message}")
            read[message] = counters()
            parent.send("go")
    finally:
        process.join(30)
        if process.is_alive():
            process.kill()
