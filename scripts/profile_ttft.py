"""Where the warm (all blocks cached) time to first token goes: torch profiler over one generate call.

    python scripts/profile_ttft.py --model llama-3.1-8b --length 4096
"""

from __future__ import annotations

import argparse
import time

import torch

from lit_block.benchmarks.ttft import random_model
from lit_block.serving import BlockKVStore, GenerationConfig, generate
from lit_block.serving.query_prefill import QueryPrefill


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", default="llama-3.1-8b")
    p.add_argument("--length", type=int, default=4096)
    p.add_argument("--query", type=int, default=128)
    args = p.parse_args()
    lm = random_model(args.model, "cuda", torch.bfloat16, 0)
    g = torch.Generator().manual_seed(0)
    ctx = args.length - args.query
    blocks = [torch.randint(0, lm.config.vocab_size, (512,), generator=g).tolist() for _ in range(ctx // 512)]
    query = torch.randint(0, lm.config.vocab_size, (args.query,), generator=g).tolist()
    store, one = BlockKVStore(8 << 30), GenerationConfig(max_new_tokens=1, stop_at_eos=False)
    for _ in range(3):
        generate(lm, blocks, query, one, store=store)
    runner = QueryPrefill.of(lm)
    for graphs in (True, False):  # the parts, synchronized, with and without the CUDA-graph query prefill
        runner.use_graphs = graphs
        for _ in range(3):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            kvs = store.get_many(lm, blocks)
            t1 = time.perf_counter()
            total = sum(kv.length for kv in kvs)
            cache, n = store.assemble(lm, kvs, args.query + 1, buffers=runner.buffers(kvs[0].keys, total + args.query + 1))
            torch.cuda.synchronize()
            t2 = time.perf_counter()
            runner(query, n, cache)
            torch.cuda.synchronize()
            t3 = time.perf_counter()
            print(f"graphs {graphs}: lookup {1e3 * (t1 - t0):.2f} ms, assemble {1e3 * (t2 - t1):.2f} ms, "
                  f"query prefill {1e3 * (t3 - t2):.2f} ms")
    runner.use_graphs = True
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]) as prof:
        generate(lm, blocks, query, one, store=store)
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=15))
    print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=12))


if __name__ == "__main__":
    main()
