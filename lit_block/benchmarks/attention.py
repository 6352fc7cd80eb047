"""Attention backends against dense causal SDPA, forward and forward+backward.

    lit-block bench attention                      # GPU: 8k/512, 32k/512, 32k/2048, bf16, B=1, 32 heads, d=128
    lit-block bench attention --device cpu --shapes 2048/256 --dtype float32

Layout: context blocks of the given size, then a global block of ``--global-tokens``. Speed-up is
dense causal SDPA time / backend time, in the same run; "ideal" is the ratio of attention FLOPs.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from lit_block.attention import BACKENDS, backend_unavailable_reason
from lit_block.layout import layout_from_tokens


def block_sizes(length: int, block: int, global_tokens: int) -> list[int]:
    context = length - global_tokens
    return [min(block, context - s) for s in range(0, context, block)]


def attention_work(blocks: list[int], global_tokens: int) -> tuple[int, int]:
    """(full causal, block) counts of attended (query, key) pairs."""
    length = sum(blocks) + global_tokens
    full = length * (length + 1) // 2
    block = sum(b * (b + 1) // 2 for b in blocks) + global_tokens * sum(blocks) + global_tokens * (global_tokens + 1) // 2
    return full, block


def make_layout(blocks: list[int], global_tokens: int, device: str):
    ids = torch.cat([torch.full((b,), i) for i, b in enumerate(blocks)] + [torch.full((global_tokens,), -1)])
    return layout_from_tokens(torch.zeros_like(ids)[None], ids[None]).to(device)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_ms(fn, device: str, warmup: int, repeat: int) -> float:
    """Median wall time of ``fn()`` in milliseconds, synchronized."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def bench_shape(length, block, args) -> list[dict]:
    blocks = block_sizes(length, block, args.global_tokens)
    full_pairs, block_pairs = attention_work(blocks, args.global_tokens)
    dtype = getattr(torch, args.dtype)
    H, D, dev = args.heads, args.head_dim, args.device
    q, k, v = (torch.randn(1, H, length, D, device=dev, dtype=dtype, requires_grad=True) for _ in range(3))
    grad = torch.randn(1, length, H, D, device=dev, dtype=dtype)

    def fwd_bwd(call):
        def run():
            out = call()
            torch.autograd.grad(out, (q, k, v), grad)

        return run

    dense = lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2)  # noqa: E731
    base_f = time_ms(lambda: dense().detach(), dev, args.warmup, args.repeat)
    base_fb = time_ms(fwd_bwd(dense), dev, args.warmup, args.repeat)
    rows = [dict(shape=f"{length}/{block}", backend="causal sdpa", prep=0.0, fwd=base_f, fwdbwd=base_fb,
                 ideal=1.0, sp_f=1.0, sp_fb=1.0, tflops=4 * H * D * full_pairs / base_f / 1e9)]
    layout = make_layout(blocks, args.global_tokens, dev)
    for name in args.backends:
        reason = backend_unavailable_reason(name, torch.device(dev))
        if reason:
            print(f"skip {name}: {reason}")
            continue
        prep = time_ms(lambda: BACKENDS[name](layout), dev, 1, 3)
        attn = BACKENDS[name](layout)
        call = lambda: attn(q, k, v)  # noqa: E731
        f = time_ms(lambda: call().detach(), dev, args.warmup, args.repeat)
        fb = time_ms(fwd_bwd(call), dev, args.warmup, args.repeat) if dev == "cuda" or name == "sdpa" else float("nan")
        rows.append(dict(shape=f"{length}/{block}", backend=name, prep=prep, fwd=f, fwdbwd=fb,
                         ideal=full_pairs / block_pairs, sp_f=base_f / f, sp_fb=base_fb / fb,
                         tflops=4 * H * D * block_pairs / f / 1e9))
    return rows


def print_table(rows: list[dict]) -> None:
    head = ("length/block", "backend", "prep ms", "fwd ms", "fwd+bwd ms", "ideal", "fwd x", "fwd+bwd x", "fwd TF/s")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        print(f"| {r['shape']} | {r['backend']} | {r['prep']:.2f} | {r['fwd']:.2f} | {r['fwdbwd']:.2f} | "
              f"{r['ideal']:.1f}x | {r['sp_f']:.2f}x | {r['sp_fb']:.2f}x | {r['tflops']:.0f} |")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="lit-block bench attention", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--shapes", nargs="+", default=["8192/512", "32768/512", "32768/2048"], help="LENGTH/BLOCK")
    p.add_argument("--global-tokens", type=int, default=512)
    p.add_argument("--heads", type=int, default=32)
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--backends", nargs="+", default=["sdpa", "flex", "varlen", "flash"], choices=list(BACKENDS))
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeat", type=int, default=10)
    args = p.parse_args(argv)
    rows = []
    for shape in args.shapes:
        length, block = map(int, shape.split("/"))
        rows.extend(bench_shape(length, block, args))
    print(f"\ndevice {torch.cuda.get_device_name() if args.device == 'cuda' else 'cpu'}, torch {torch.__version__}, "
          f"B=1, {args.heads} heads, d={args.head_dim}, {args.dtype}, global block {args.global_tokens}")
    print_table(rows)
    return 0
