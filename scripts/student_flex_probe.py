"""Why the distillation student's block attention is slower than ``bench attention``'s (CUDA only).

    python scripts/student_flex_probe.py --tokens 8192

One layer's block attention at the Qwen3-0.6B shape (16 query heads, 8 key/value heads, head dim 128),
forward and forward+backward, on the layouts between the benchmark's and the student's: 2 sinks per
block (blocks of 514 tokens, off FlexAttention's 128-token tiles), 10% of blocks released, both; flex
compiled for static shapes and, on the student's layout, for dynamic shapes (as a compiled layer runs
once it has seen two lengths); then cudnn on the same layouts. Times are queued calls (``bench
attention``'s timer); speed-ups are over dense causal SDPA on the same length, in the same run.
Results: ``docs/results/attention_blocks_h200.txt`` (6)."""

from __future__ import annotations

import argparse
import functools

import torch
import torch.nn.functional as F
from torch.nn.attention.flex_attention import flex_attention

from lit_block.attention.cudnn import CudnnBlockAttention
from lit_block.attention.flex import FlexBlockAttention
from lit_block.benchmarks.attention import block_id_row, block_sizes, time_ms
from lit_block.layout import layout_from_tokens


def student_layout(tokens: int, sinks: int, released: float, seed: int = 0):
    ids = block_id_row(block_sizes(tokens, 512, 512), 512)[None]
    n = int(ids.max()) + 1
    flags = torch.rand(1, n, generator=torch.Generator().manual_seed(seed)) < released
    return layout_from_tokens(torch.zeros_like(ids), ids, num_sinks=sinks, released=flags).to("cuda")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", type=int, default=8192)
    p.add_argument("--repeat", type=int, default=30)
    args = p.parse_args()
    static = torch.compile(flex_attention, dynamic=False)
    dynamic = torch.compile(flex_attention, dynamic=True)
    rows = []
    variants = [  # name, sinks, released, backend
        ("benchmark layout", 0, 0.0, static),
        ("+ 2 sinks per block", 2, 0.0, static),
        ("+ 10% released", 0, 0.1, static),
        ("sinks + released (the student's)", 2, 0.1, static),
        ("student's, dynamic-shape compile", 2, 0.1, dynamic),
        ("benchmark layout, cudnn", 0, 0.0, "cudnn"),
        ("+ 2 sinks per block, cudnn", 2, 0.0, "cudnn"),
        ("student's, cudnn", 2, 0.1, "cudnn"),
    ]
    for name, sinks, released, attend in variants:
        layout = student_layout(args.tokens, sinks, released)
        T = layout.seq_len
        q = torch.randn(1, T, 16, 128, device="cuda", dtype=torch.bfloat16).transpose(1, 2).requires_grad_(True)
        k, v = (torch.randn(1, T, 8, 128, device="cuda", dtype=torch.bfloat16).transpose(1, 2).requires_grad_(True)
                for _ in range(2))
        grad = torch.randn(1, T, 16, 128, device="cuda", dtype=torch.bfloat16)  # [B, T, H, D] as backends return
        mask = FlexBlockAttention(layout).block_mask
        if attend == "cudnn":
            call = functools.partial(CudnnBlockAttention(layout), q, k, v)
        else:
            call = lambda: attend(q, k, v, block_mask=mask, enable_gqa=True).transpose(1, 2)  # noqa: E731

        def run(call, backward):
            def go():
                out = call()
                if backward:
                    torch.autograd.grad(out, (q, k, v), grad)
            return go

        dense = lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True).transpose(1, 2)  # noqa: E731
        try:
            f, fb = (time_ms(run(call, b), "cuda", 3, args.repeat)[0] for b in (False, True))
        except Exception as err:  # noqa: BLE001 - a probe: report and go on
            print(f"{name}: {type(err).__name__}: {str(err)[:200]}")
            continue
        df, dfb = (time_ms(run(dense, b), "cuda", 3, args.repeat)[0] for b in (False, True))
        tiles = mask.kv_num_blocks.sum().item() + mask.full_kv_num_blocks.sum().item()
        rows.append((name, T, tiles, f, fb, df / f, dfb / fb))
        print(rows[-1], flush=True)
    print(f"\n{args.tokens} tokens in 512-token blocks, 16 heads / 8 KV heads, d 128 ({torch.cuda.get_device_name()})\n")
    print("| layout, backend | length | 128x128 tiles flex visits | fwd ms | fwd+bwd ms | fwd x dense | fwd+bwd x dense |")
    print("|---|---|---|---|---|---|---|")
    for name, T, tiles, f, fb, xf, xfb in rows:
        print(f"| {name} | {T} | {tiles} | {f:.3f} | {fb:.3f} | {xf:.2f}x | {xfb:.2f}x |")


if __name__ == "__main__":
    main()
