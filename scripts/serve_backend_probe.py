"""cuDNN SDPA allowed or not, on the serving paths of the Llama-3.1-8B shape (random weights), in one process.

Times a 16-row batched decode step (~4.2k positions a row), a cached prompt whose 2 of 8 blocks miss the store, and
a full prefill of 4.1k tokens, with `torch.backends.cuda.enable_cudnn_sdp` on, off, on, off. It found the decode
step host-bound in cuDNN's per-shape graph builds (docs/serve.md, tenth session). Since then the masked decode
attention excludes cuDNN itself, so its row no longer changes with the flag. CUDA only:

    python scripts/serve_backend_probe.py
"""

from __future__ import annotations

import statistics
import time

import torch

from lit_block.benchmarks.ttft import random_model
from lit_block.serving import BlockKVStore, GenerationConfig
from lit_block.serving.decode_batch import DecodeBatch
from lit_block.serving.generation import Generation


def synced_ms(fn) -> float:
    torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) * 1e3


def main() -> None:
    lm = random_model("llama-3.1-8b", "cuda", torch.bfloat16, 0)
    g = torch.Generator().manual_seed(0)

    def tokens(n: int) -> list[int]:
        return torch.randint(0, lm.config.vocab_size, (n,), generator=g).tolist()

    def query() -> list[int]:  # a new length each time: no captured query graph is ever replayed
        return tokens(30 + int(torch.randint(0, 20, (1,), generator=g)))

    store = BlockKVStore(max_bytes=60 << 30)
    pool = [tokens(512) for _ in range(64)]
    long_answer = GenerationConfig(max_new_tokens=300, stop_at_eos=False)
    one_token = GenerationConfig(max_new_tokens=1, stop_at_eos=False)
    answers = []
    for r in range(16):  # 16 answers over overlapping passages, prefilled: the decode slab's rows
        answer = Generation(lm, pool[r * 3 : r * 3 + 8], tokens(40), long_answer)
        answer.prefill(store, own_cache=True)
        answers.append(answer)
    decoder = DecodeBatch(lm)
    for _ in range(3):  # warm-up: the slab is built, kernels loaded
        decoder.step(answers, [0] * 16)

    def cached_prompt() -> None:  # 6 stored passages and 2 new ones
        blocks = [pool[i] for i in (1, 5, 9, 13, 17, 21)] + [tokens(512), tokens(512)]
        Generation(lm, blocks, query(), one_token).prefill(store, own_cache=True)

    def full_prefill() -> None:
        Generation(lm, pool[:8], query(), one_token, full_attention=True).prefill()

    for cudnn in (True, False, True, False):
        torch.backends.cuda.enable_cudnn_sdp(cudnn)
        step = statistics.median(synced_ms(lambda: decoder.step(answers, [0] * 16)) for _ in range(10))
        cached = statistics.median(synced_ms(cached_prompt) for _ in range(6))
        full = statistics.median(synced_ms(full_prefill) for _ in range(6))
        print(f"cudnn_sdp={cudnn}: decode step 16 rows {step:.1f} ms | cached prompt, 2 of 8 missed {cached:.1f} ms | "
              f"full prefill 4.1k {full:.1f} ms", flush=True)


if __name__ == "__main__":
    main()
