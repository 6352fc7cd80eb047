"""The serving decode step alone, with its host and device time apart (Llama-3.1-8B shape, random weights, CUDA).

For 1, 8 and 15 answers of ~4.6k cached positions (8 passages of 512 tokens and an 80-token question, as `bench
serve`), each in one `DecodeBatch` slab: the step's wall time with a sync, the time the host takes to enqueue it
(no sync), and the kernels' summed device time (torch.profiler, 10 steps), with the top kernels. A step whose
enqueue time is near its wall time and above its kernel time is bound by the host launching kernels.

    python scripts/decode_step_probe.py [sdpa] [split-key] [--compile none|pointwise] [--rows 1 8 15]
    python scripts/decode_step_probe.py sdpa --shape smollm2-135m --device cpu --rows 2   # a smoke run

Each kernel named (default: both) runs the same answers; ``split-key`` replays the step from a CUDA graph
(``DecodeBatch``'s default with that kernel on CUDA). ``--compile pointwise`` asks whether fusing the step's small
kernels pays: every RMS norm and MLP compiled (``lit_block.serving.pointwise_compile``, as ``--fuse-pointwise``),
after the answers' prefills, so that the first steps' time holds the step's compilation. One setting a process:
compare the settings across processes.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.profiler import ProfilerActivity, profile

from lit_block.benchmarks.ttft import random_model
from lit_block.serving import BlockKVStore, GenerationConfig
from lit_block.serving.decode_batch import DecodeBatch
from lit_block.serving.generation import Generation
from lit_block.serving.kv_store import model_fingerprint
from lit_block.serving.pointwise_compile import compile_pointwise


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    cli.add_argument("kernels", nargs="*", choices=["sdpa", "split-key"], default=["sdpa", "split-key"])
    cli.add_argument("--compile", choices=["none", "pointwise"], default="none")
    cli.add_argument("--rows", type=int, nargs="+", default=[1, 8, 15], help="answers decoding together")
    cli.add_argument("--shape", default="llama-3.1-8b", help="a shape of lit_block.benchmarks.ttft.SHAPES")
    cli.add_argument("--device", default="cuda")
    args = cli.parse_args()
    on_gpu = args.device.startswith("cuda")
    lm = random_model(args.shape, args.device, torch.bfloat16 if on_gpu else torch.float32, 0)
    g = torch.Generator().manual_seed(0)

    def tokens(n: int) -> list[int]:
        return torch.randint(0, lm.config.vocab_size, (n,), generator=g).tolist()

    store, fingerprint = BlockKVStore(max_bytes=30 << 30), model_fingerprint(lm)
    pool = [tokens(512) for _ in range(24)]
    config = GenerationConfig(max_new_tokens=200, stop_at_eos=False)  # room for every step below

    def answers(n: int) -> list[Generation]:
        out = []
        for _ in range(n):
            blocks = [pool[j] for j in torch.randperm(len(pool), generator=g)[:8].tolist()]
            answer = Generation(lm, blocks, tokens(80), config)
            answer.prefill(store, fingerprint=fingerprint, own_cache=True)
            out.append(answer)
        return out

    work = [(k, r) for r in args.rows for k in args.kernels]
    # each run its own answers (a slab takes their caches), all prefilled before anything is compiled
    live_by_run = {run: answers(run[1]) for run in work}
    compiled = compile_pointwise(lm.model) if args.compile == "pointwise" else 0
    sync = torch.cuda.synchronize if on_gpu else (lambda: None)
    for kernel, rows in work:
        batch, live = DecodeBatch(lm, kernel), live_by_run.pop((kernel, rows))
        walls, enqueues = [], []
        started = time.perf_counter()
        for _ in range(40):
            sync()
            start = time.perf_counter()
            chosen = [a.choose() for a in live]  # waits for the previous step's logits
            enqueue = time.perf_counter()
            batch.step(live, chosen)
            enqueues.append((time.perf_counter() - enqueue) * 1e3)
            sync()
            walls.append((time.perf_counter() - start) * 1e3)
        first_40 = time.perf_counter() - started  # with the compilation, when this is the first slab
        with profile(activities=[ProfilerActivity.CUDA] if on_gpu else [ProfilerActivity.CPU]) as prof:
            for _ in range(10):
                batch.step(live, [a.choose() for a in live])
            sync()
        kernels = sum(e.self_device_time_total for e in prof.key_averages()) / 10 / 1e3
        print(f"compile {args.compile} ({compiled} modules; first 40 steps {first_40:.1f} s), "
              f"{kernel}, {rows} answers: slab {len(batch.rows)} rows x {batch.keys.shape[3]} columns; step wall p50 "
              f"{statistics.median(walls[5:]):.1f} ms, host enqueue p50 {statistics.median(enqueues[5:]):.1f} ms, "
              f"kernels {kernels:.1f} ms a step")
        print(prof.key_averages().table(sort_by="self_cuda_time_total" if on_gpu else "self_cpu_time_total", row_limit=6,
                                        max_name_column_width=50))
        del batch, live
        if on_gpu:
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
