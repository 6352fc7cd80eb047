"""The serving engine without HTTP: `bench serve`'s workload driven by client threads calling the engine directly.

Same model, passages, store budget and 16 clients as `bench serve --model llama-3.1-8b --clients 16 --num-passages 8
--passage-tokens 512 --hit-rate 0.8 --max-new-tokens 16 --seed 1`, but no server, no `openai` client and no second
process: what the engine does alone, to set beside `bench serve`'s engine phases. Prints requests/s, TTFT p50, the
engine's phases per request, the decode rows and rebuilds, and each turn's wall time. `profile` also records
30 turns of the loop with torch.profiler, from inside the engine's thread; `kernels` records them too and splits the
device's kernel time by engine phase (misses' fetch, queries, decode) and, in each, by kernel. `syncs` runs
with torch's CUDA sync debug mode on and counts the places (innermost lit_block line, and the engine's) where the host
waited for the device: each such wait empties the device's queue while the host goes on alone.

    python scripts/serve_engine_probe.py plain|profile|kernels|syncs [--requests N] [--tokenizer DIR]   # CUDA
    python scripts/serve_engine_probe.py plain --cpu --requests 32                         # SmolLM2-135M on CPU
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import queue
import statistics
import threading
import time
import traceback
import warnings

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from lit_block.benchmarks.serve import build_parser, build_workload, load_model, pool_bytes
from lit_block.serving.engine import Job, ServingEngine
from lit_block.serving.engine_options import MAX_BATCH_REQUESTS
from lit_block.serving.generation import GenerationConfig
from lit_block.serving.kv_store import BlockKVStore
from lit_block.serving.prompts import Document, DocumentCutter, PromptBuilder

PROFILED_ROUNDS = (60, 90)  # turns [first, last) recorded by `profile`: past the warm-up


class TimedEngine(ServingEngine):
    """The engine with each turn's wall time kept, and optionally a profile of some turns."""

    def __init__(self, *args, profiled: bool, **kwargs):
        self.round_ms: list[float] = []  # wall time of each turn of the engine's loop
        self._last: float | None = None
        self.profiler = profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) if profiled else None
        super().__init__(*args, **kwargs)  # starts the thread: the fields above first

    def _fetch(self, jobs):
        with record_function(f"engine.fetch[{len(jobs)}]"):  # a label per admission size in the profile's table
            return super()._fetch(jobs)

    def _prefill_queries(self, jobs, fetched) -> None:
        with record_function(f"engine.queries[{len(jobs)}]"):
            super()._prefill_queries(jobs, fetched)

    def _launch_decode(self):
        turns = len(self.round_ms)
        now = time.perf_counter()
        if self._last is not None:
            self.round_ms.append((now - self._last) * 1e3)  # one turn: a step, an admission, their waits
        self._last = now
        if self.profiler is not None and turns == PROFILED_ROUNDS[0]:
            self.profiler.start()  # in the engine's thread: its operators are the ones recorded
        if self.profiler is not None and turns == PROFILED_ROUNDS[1]:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.profiler.stop()
        with record_function("engine.decode"):
            return super()._launch_decode()

    def _finish_decode(self, launched) -> None:
        with record_function("engine.decode"):
            super()._finish_decode(launched)


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    cli.add_argument("mode", choices=["plain", "profile", "kernels", "syncs"])
    cli.add_argument("--requests", type=int, default=160)
    cli.add_argument("--tokenizer", default=".gpu/cfg", help="the Llama-3.1 tokenizer's folder (CUDA runs)")
    cli.add_argument("--cpu", action="store_true", help="SmolLM2-135M on CPU instead of the 8B shape on CUDA")
    cli.add_argument("--sync-phases", action="store_true", help="wait for the device at the end of each engine phase")
    cli.add_argument("--max-batch-requests", type=int, default=MAX_BATCH_REQUESTS, help="requests admitted a turn")
    own = cli.parse_args()
    where = ["--model", "smollm2-135m", "--device", "cpu"] if own.cpu else \
        ["--model", "llama-3.1-8b", "--tokenizer", own.tokenizer, "--device", "cuda"]
    args = build_parser().parse_args([*where, "--clients", "16", "--num-passages", "8", "--passage-tokens", "512",
                                      "--requests", str(own.requests), "--hit-rate", "0.8", "--max-new-tokens", "16",
                                      "--seed", "1"])
    model = load_model(args)
    workload = build_workload(model.tokenizer, args)
    builder = PromptBuilder(model.tokenizer, DocumentCutter("fixed", max_block_tokens=4 * args.passage_tokens))
    # each passage as the server makes it: the document template, one block (the cutter's limit is past its length)
    passages = [builder.encode(builder.document_blocks([Document(p)])[0][0]) for p in workload.passages]
    store = BlockKVStore(max_bytes=int(pool_bytes(model, builder, workload)))
    engine = TimedEngine(model, store, max_batch_requests=own.max_batch_requests, batch_window_s=args.batch_window_ms / 1e3,
                         profiled=own.mode in ("profile", "kernels"), sync_phases=own.sync_phases)
    config = GenerationConfig(max_new_tokens=args.max_new_tokens, stop_at_eos=False)
    ttft_ms: list[float] = []

    def ask(indices: list[int], question: str) -> None:
        events: queue.Queue = queue.Queue()
        sent = time.perf_counter()
        generation = engine.generation([passages[i] for i in indices], builder.encode(question), config, started=sent)
        engine.submit(Job(generation, stream=True, notify=lambda kind, _: events.put((kind, time.perf_counter()))))
        first = None
        while True:
            kind, at = events.get()
            first = first or at
            if kind == "error":
                raise RuntimeError("a request failed in the engine")
            if kind == "done":
                ttft_ms.append((first - sent) * 1e3)
                return

    ask([0], "Warm-up question?")
    ttft_ms.clear()
    engine.round_ms.clear()
    engine._last = None
    phases, totals = dict(engine.metrics.phase_seconds), dict(engine.metrics.totals)
    shares = [workload.requests[c :: args.clients] for c in range(args.clients)]
    clients = [threading.Thread(target=lambda s=s: [ask(i, q) for i, q in s]) for s in shares]
    with sync_sites() if own.mode == "syncs" else contextlib.nullcontext() as sites:
        start = time.perf_counter()
        for client in clients:
            client.start()
        for client in clients:
            client.join()
        wall = time.perf_counter() - start
    engine.close()
    n = len(workload.requests)
    per_request = {k: round((v - phases.get(k, 0.0)) * 1e3 / n, 1) for k, v in engine.metrics.phase_seconds.items()}
    decode = {k: v - totals.get(k, 0) for k, v in engine.metrics.totals.items()
              if k.startswith(("decode_", "query_batch", "prefill_batches", "admissions"))}
    print(f"{own.mode}: {n} requests, {n / wall:.2f} requests/s, TTFT p50 {statistics.median(ttft_ms):.1f} ms; engine ms "
          f"per request {per_request}; {decode}; turn p50 {statistics.median(engine.round_ms):.1f} ms, "
          f"mean {statistics.mean(engine.round_ms):.1f} ms")
    if sites is not None:
        admissions = engine.metrics.totals["admissions"] - totals.get("admissions", 0)
        print(f"host waits for the device, by place ({sum(sites.values())} in {admissions} admissions and "
              f"{len(engine.round_ms)} turns):")
        print("\n".join(f"{count:6d}  {site}" for site, count in sites.most_common(25)))
    if engine.profiler is not None and own.mode == "kernels":
        print(kernels_by_phase(engine.profiler))
        print(device_busy(engine.profiler))
    elif engine.profiler is not None:
        averages = engine.profiler.key_averages()
        print(averages.table(sort_by="self_cpu_time_total", row_limit=25, max_name_column_width=55))
        labels = [e for e in averages if e.key.startswith("engine.")]
        print("\n".join(f"{e.key}: {e.count} calls, CPU total {e.cpu_time_total / 1e3:.1f} ms, device "
                        f"{e.device_time_total / 1e3:.1f} ms" for e in labels))
        print(averages.table(sort_by="self_cuda_time_total", row_limit=10, max_name_column_width=55))
        print(device_busy(engine.profiler))


@contextlib.contextmanager
def sync_sites():
    """Count, by where they come from, the operations that make the host wait for the device (torch's sync debug
    mode warns at each, from the thread that waits)."""
    sites: collections.Counter = collections.Counter()

    def seen(message, category, filename, lineno, file=None, line=None) -> None:
        if "synchroniz" not in str(message):
            return
        ours = [f for f in traceback.extract_stack()[:-1] if "lit_block" in f.filename or "serve_engine_probe" in f.filename]
        where = [f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno} {f.name}" for f in reversed(ours[-4:])]  # innermost first
        sites[" <- ".join(where) or f"{filename}:{lineno}"] += 1

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = seen
        torch.cuda.set_sync_debug_mode("warn")
        try:
            yield sites
        finally:
            torch.cuda.set_sync_debug_mode("default")


def kernels_by_phase(profiler, top: int = 8) -> str:
    """Device kernel time of the recorded turns by engine phase (the ``engine.*`` range the launching operator ran in)
    and, in each phase, by kernel; per admitted request of the window (``engine.fetch[n]`` counts them)."""
    phase_ms: dict[str, float] = collections.Counter()
    by_kernel: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    requests = 0
    for e in profiler.events():
        if e.key.startswith("engine.fetch[") and e.device_type == torch.autograd.DeviceType.CPU:  # not its GPU twin
            requests += int(e.key[len("engine.fetch["):-1])
        if not e.kernels:
            continue
        parent = e.cpu_parent
        while parent is not None and not parent.key.startswith("engine."):
            parent = parent.cpu_parent
        phase = "outside" if parent is None else parent.key.split("[")[0]
        for k in e.kernels:
            phase_ms[phase] += k.duration / 1e3
            by_kernel[phase][f"{e.key} > {k.name[:70]}"] += k.duration / 1e3
    kernels = sum(e.time_range.elapsed_us() for e in device_work(profiler))
    phase_ms["unattributed (CUDA graph replays, copies)"] = max(kernels / 1e3 - sum(phase_ms.values()), 0.0)
    per = max(requests, 1)
    lines = [f"kernel time by phase, {requests} requests admitted in the window (ms, and ms per request):"]
    for phase, ms in sorted(phase_ms.items(), key=lambda kv: -kv[1]):
        lines.append(f"  {phase}: {ms:.1f} ms, {ms / per:.2f} per request")
        lines += [f"      {v:8.1f} ms  {name}" for name, v in by_kernel[phase].most_common(top)]
    return "\n".join(lines)


def device_work(profiler) -> list:
    """The recorded kernels and copies on the device; not the engine's ranges, whose device-side twins span a phase's
    first to last kernel, gaps included."""
    return [e for e in profiler.events()
            if e.device_type == torch.autograd.DeviceType.CUDA and not e.key.startswith("engine.")]


def device_busy(profiler) -> str:
    """The share of the recorded window in which some kernel or copy ran on the device (their intervals' union)."""
    spans = sorted((e.time_range.start, e.time_range.end) for e in device_work(profiler))
    window = [e.time_range for e in profiler.events()]
    if not spans or not window:
        return "device busy: no device events recorded"
    start, end = min(r.start for r in window), max(r.end for r in window)
    busy, reach = 0.0, spans[0][0]
    for a, b in spans:
        a = max(a, reach)
        if b > a:
            busy, reach = busy + b - a, b
    return (f"device busy {busy / 1e3:.1f} of {(end - start) / 1e3:.1f} ms recorded ({busy / (end - start):.0%}), "
            f"{len(spans)} device events")


if __name__ == "__main__":
    main()
