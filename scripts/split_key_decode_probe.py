"""Split-key decode attention against SDPA's memory-efficient kernel on decode-slab shapes (CUDA, bfloat16).

For slabs of 2, 12 and 22 rows x 5,096 columns (the 8B shape's 32 query / 8 KV heads, 128 dims; rows left-padded at
random), one layer's attention of one new token per row: max error against ``padded_rows_attention`` and the median
time over 200 calls (CUDA events), SDPA and ``split_key_attention`` at three piece sizes, in one process.

    python scripts/split_key_decode_probe.py
"""

from __future__ import annotations

import statistics

import torch

from lit_block.attention.split_key_decode import split_key_attention
from lit_block.attention.transformers_hook import padded_rows_attention


def timed_us(fn, calls: int = 200) -> float:
    for _ in range(10):
        fn()
    times = []
    for _ in range(calls):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e3)
    return statistics.median(times)


def main() -> None:
    g = torch.Generator().manual_seed(0)
    print("| rows x columns | SDPA us | split 256 us | split 512 us | split 1024 us | max error (split 512) |")
    print("|---|---|---|---|---|---|")
    for rows in (2, 12, 22):
        cols = 5096
        q = torch.randn(rows, 32, 1, 128, generator=g).cuda().bfloat16()
        # views of the first columns of a wider buffer, as the decode slab hands them to attention
        k, v = (torch.randn(rows, 8, cols + 64, 128, generator=g).cuda().bfloat16()[:, :, :cols] for _ in range(2))
        start = torch.randint(0, cols // 2, (rows,), generator=g)
        mask = (torch.arange(cols)[None] >= start[:, None]).cuda()
        want = padded_rows_attention(q, k, v, mask).float()
        error = (split_key_attention(q, k, v, mask, split=512).float() - want).abs().max().item()
        cells = [timed_us(lambda: padded_rows_attention(q, k, v, mask))]
        cells += [timed_us(lambda s=s: split_key_attention(q, k, v, mask, split=s)) for s in (256, 512, 1024)]
        print(f"| {rows} x {cols} | " + " | ".join(f"{c:.0f}" for c in cells) + f" | {error:.2e} |")


if __name__ == "__main__":
    main()
