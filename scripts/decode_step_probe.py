"""The serving decode step alone, with its host and device time apart (Llama-3.1-8B shape, random weights, CUDA).

For 1, 8 and 15 answers of ~4.6k cached positions (8 passages of 512 tokens and an 80-token question, as `bench
serve`), each in one `DecodeBatch` slab: the step's wall time with a sync, the time the host takes to enqueue it
(no sync), and the kernels' summed device time (torch.profiler, 10 steps), with the top kernels. A step whose
enqueue time is near its wall time and above its kernel time is bound by the host launching kernels.

    python scripts/decode_step_probe.py [sdpa] [split-key]

Each kernel named (default: both) runs the same answers; ``split-key`` replays the step from a CUDA graph
(``DecodeBatch``'s default with that kernel on CUDA).
"""

from __future__ import annotations

import statistics
import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile

from lit_block.benchmarks.ttft import random_model
from lit_block.serving import BlockKVStore, GenerationConfig
from lit_block.serving.decode_batch import DecodeBatch
from lit_block.serving.generation import Generation
from lit_block.serving.kv_store import model_fingerprint


def main() -> None:
    lm = random_model("llama-3.1-8b", "cuda", torch.bfloat16, 0)
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

    for kernel, rows in [(k, r) for r in (1, 8, 15) for k in sys.argv[1:] or ("sdpa", "split-key")]:
        batch, live = DecodeBatch(lm, kernel), answers(rows)
        walls, enqueues = [], []
        for _ in range(40):
            torch.cuda.synchronize()
            start = time.perf_counter()
            chosen = [a.choose() for a in live]  # waits for the previous step's logits
            enqueue = time.perf_counter()
            batch.step(live, chosen)
            enqueues.append((time.perf_counter() - enqueue) * 1e3)
            torch.cuda.synchronize()
            walls.append((time.perf_counter() - start) * 1e3)
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(10):
                batch.step(live, [a.choose() for a in live])
            torch.cuda.synchronize()
        kernels = sum(e.self_device_time_total for e in prof.key_averages()) / 10 / 1e3
        print(f"{kernel}, {rows} answers: slab {len(batch.rows)} rows x {batch.keys.shape[3]} columns; step wall p50 "
              f"{statistics.median(walls[5:]):.1f} ms, host enqueue p50 {statistics.median(enqueues[5:]):.1f} ms, "
              f"kernels {kernels:.1f} ms a step")
        print(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=6, max_name_column_width=50))
        del batch, live
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
