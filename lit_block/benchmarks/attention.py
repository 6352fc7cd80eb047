"""Attention backends against dense causal SDPA, forward and forward+backward.

    lit-block bench attention                      # GPU: 8k/512, 32k/512, 32k/2048, bf16, B=1, 32 heads, d=128
    lit-block bench attention --uneven --kv-heads 8 --batch-size 4 --shapes 8192/512   # segmenter-like blocks, GQA
    lit-block bench attention --released 0.1 --shapes 32768/512   # the distillation student's block dropout
    lit-block bench attention --device cpu --shapes 2048/256 --dtype float32

Layout: context blocks of the given size (``--uneven``: lengths drawn uniformly from a quarter to 7/4
of it, different in every row, as a segmenter cuts; ``--released``: blocks released to full attention
at random, as block dropout does), then a global block of ``--global-tokens``. Speed-up is dense causal
SDPA time / backend time, in the same run; "ideal" is the ratio of attention FLOPs. Times are per call
of calls queued back to back (CUDA events), as a model's layers run while the host stays ahead of the
GPU; the latency columns time single synchronized calls, where the host's time to launch a backend's
kernels shows. ``auto`` is timed as the backend it picks for the layout on the device, as for a layout
shape that recurs (it keeps one-off shapes off ``cudnn``, whose new shapes cost new cuDNN plans); a
backend that does not apply to the layout (``cudnn`` on uneven blocks) is skipped with its reason.
Inputs are laid out as transformers passes them to attention (``[B, H, T, D]`` views of ``[B, T, H, D]``
memory). TF/s count only the attention the layout needs (4 * heads * head_dim per attended pair
forward, 3.5 times that forward + backward).
"""

from __future__ import annotations

import gc
import statistics
import time

import torch
import torch.nn.functional as F

from lit_block.attention import BACKEND_NAMES, BACKENDS, CUDNN_AFTER_SEEN, pick_backend
from lit_block.layout import layout_from_tokens


def block_sizes(length: int, block: int, global_tokens: int) -> list[int]:
    context = length - global_tokens
    return [min(block, context - s) for s in range(0, context, block)]


def attention_work(blocks: list[int], global_tokens: int, released: list[bool] | None = None) -> tuple[int, int]:
    """(full causal, block) counts of attended (query, key) pairs; a released block attends to every earlier key."""
    length = sum(blocks) + global_tokens
    full = length * (length + 1) // 2
    block = sum(b * (b + 1) // 2 for b in blocks) + global_tokens * sum(blocks) + global_tokens * (global_tokens + 1) // 2
    starts = [sum(blocks[:i]) for i in range(len(blocks))]
    block += sum(n * start for n, start, r in zip(blocks, starts, released or [False] * len(blocks)) if r)
    return full, block


def uneven_block_sizes(length: int, block: int, global_tokens: int, generator: torch.Generator) -> list[int]:
    """Segmenter-like context blocks: lengths uniform in ``[block / 4, 7 * block / 4]``, the last one cut to fit."""
    context, sizes = length - global_tokens, []
    while sum(sizes) < context:
        n = int(torch.randint(max(1, block // 4), 7 * block // 4 + 1, (1,), generator=generator))
        sizes.append(min(n, context - sum(sizes)))
    return sizes


def block_id_row(blocks: list[int], global_tokens: int) -> torch.Tensor:
    """``[sum(blocks) + global_tokens]`` block ids: ``i`` over context block ``i``, then ``-1`` (the global block)."""
    return torch.cat([torch.full((n,), i) for i, n in enumerate(blocks)] + [torch.full((global_tokens,), -1)])


def make_layout(rows: list[list[int]], global_tokens: int, device: str, released: list[list[bool]] | None = None):
    """One layout row per list of context block sizes (every row of the same total length), with the blocks flagged
    in ``released`` released to full attention."""
    ids = torch.stack([block_id_row(blocks, global_tokens) for blocks in rows])
    flags = None
    if released is not None:  # [B, most blocks in a row]
        flags = torch.zeros(len(rows), max(map(len, rows)), dtype=torch.bool)
        for i, r in enumerate(released):
            flags[i, :len(r)] = torch.tensor(r, dtype=torch.bool)
    return layout_from_tokens(torch.zeros_like(ids), ids, released=flags).to(device)


def sync(device: str) -> None:
    """Wait for the device's queued work (no-op on CPUs)."""
    if device == "cuda":
        torch.cuda.synchronize()


def time_ms(fn, device: str, warmup: int, repeat: int) -> tuple[float, float]:
    """``(queued, latency)`` in milliseconds per call of ``fn()``. Queued: ``repeat`` calls back to back, timed by
    CUDA events, as a model's layers run while the host queues ahead of the GPU. Latency: the median of single calls
    synchronized before and after, so the host's time to launch every kernel counts. On CPUs both are wall times.
    The garbage collector is off while timing, as ``timeit`` does: a collection (say, of what compiling the previous
    backend left) would be charged to whichever backend it interrupts, and host-bound backends show it."""
    for _ in range(warmup):
        fn()
    sync(device)
    gc.collect()
    gc.disable()
    try:
        return _timed(fn, device, repeat)
    finally:
        gc.enable()


def _timed(fn, device: str, repeat: int) -> tuple[float, float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append((time.perf_counter() - start) * 1e3)
    if device != "cuda":
        return (statistics.median(times),) * 2
    begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    begin.record()
    for _ in range(repeat):
        fn()
    end.record()
    end.synchronize()
    return begin.elapsed_time(end) / repeat, statistics.median(times)


def bench_shape(length, block, args) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    rows_blocks = [uneven_block_sizes(length, block, args.global_tokens, g) if args.uneven
                   else block_sizes(length, block, args.global_tokens) for _ in range(args.batch_size)]
    draw = lambda n: (torch.rand(n, generator=g) < args.released).tolist()  # noqa: E731
    released = [draw(len(b)) for b in rows_blocks] if args.uneven else [draw(len(rows_blocks[0]))] * args.batch_size
    work = [attention_work(blocks, args.global_tokens, r) for blocks, r in zip(rows_blocks, released)]
    full_pairs, block_pairs = sum(w[0] for w in work), sum(w[1] for w in work)
    dtype = getattr(torch, args.dtype)
    B, H, D, dev = args.batch_size, args.heads, args.head_dim, args.device
    kv_heads = args.kv_heads or H
    # as transformers passes them to attention: [B, H, T, D] views of [B, T, H, D] memory
    q = torch.randn(B, length, H, D, device=dev, dtype=dtype).transpose(1, 2).requires_grad_(True)
    k, v = (torch.randn(B, length, kv_heads, D, device=dev, dtype=dtype).transpose(1, 2).requires_grad_(True)
            for _ in range(2))
    grad = torch.randn(B, length, H, D, device=dev, dtype=dtype)
    shape = f"{length}/{block}" + (" uneven" if args.uneven else "")
    shape += f" {args.released:.0%} released" * (args.released > 0)

    def fwd_bwd(call):
        def run():
            out = call()
            torch.autograd.grad(out, (q, k, v), grad)

        return run

    def tflops(pairs, f, fb):  # forward, forward + backward
        return 4 * H * D * pairs / f / 1e9, 3.5 * 4 * H * D * pairs / fb / 1e9

    gqa = {"enable_gqa": True} if kv_heads != H else {}
    dense = lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True, **gqa).transpose(1, 2)  # noqa: E731
    (base_f, lat_f), (base_fb, lat_fb) = (time_ms(fn, dev, args.warmup, args.repeat)
                                          for fn in (lambda: dense().detach(), fwd_bwd(dense)))
    rows = [dict(shape=shape, backend="causal sdpa", prep=0.0, fwd=base_f, fwdbwd=base_fb, ideal=1.0, sp_f=1.0,
                 sp_fb=1.0, tflops=tflops(full_pairs, base_f, base_fb), latency=(lat_f, lat_fb, 1.0, 1.0))]
    layout = make_layout(rows_blocks, args.global_tokens, dev, released)
    for name in args.backends:
        try:
            for _ in range(CUDNN_AFTER_SEEN + 1):  # auto: as for training (gradients on), on a shape that recurs
                picked = pick_backend(name, layout, dtype, D, H)
            prep = time_ms(lambda: BACKENDS[picked](layout), dev, 1, 3)[1]
        except ValueError as err:
            print(f"skip {name}: {err}")
            continue
        attn = BACKENDS[picked](layout)
        call = lambda: attn(q, k, v)  # noqa: E731
        f, f_lat = time_ms(lambda: call().detach(), dev, args.warmup, args.repeat)
        backward_runs = dev == "cuda" or picked == "sdpa"  # flex has no CPU backward
        fb, fb_lat = time_ms(fwd_bwd(call), dev, args.warmup, args.repeat) if backward_runs else (float("nan"),) * 2
        rows.append(dict(shape=shape, backend=name if name == picked else f"{name} (= {picked})", prep=prep, fwd=f,
                         fwdbwd=fb, ideal=full_pairs / block_pairs, sp_f=base_f / f, sp_fb=base_fb / fb,
                         tflops=tflops(block_pairs, f, fb), latency=(f_lat, fb_lat, lat_f / f_lat, lat_fb / fb_lat)))
    return rows


def print_table(rows: list[dict]) -> None:
    head = ("length/block", "backend", "prep ms", "fwd ms", "fwd+bwd ms", "ideal", "fwd x", "fwd+bwd x", "fwd TF/s",
            "fwd+bwd TF/s", "latency ms fwd / fwd+bwd", "latency x fwd / fwd+bwd")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        lf, lfb, xf, xfb = r["latency"]
        print(f"| {r['shape']} | {r['backend']} | {r['prep']:.2f} | {r['fwd']:.2f} | {r['fwdbwd']:.2f} | "
              f"{r['ideal']:.1f}x | {r['sp_f']:.2f}x | {r['sp_fb']:.2f}x | {r['tflops'][0]:.0f} | {r['tflops'][1]:.0f} | "
              f"{lf:.2f} / {lfb:.2f} | {xf:.2f}x / {xfb:.2f}x |")


def build_parser():
    from lit_block.command_line import command_parser

    p = command_parser("lit-block bench attention", __doc__)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="where it runs")
    p.add_argument("--shapes", nargs="+", default=["8192/512", "32768/512", "32768/2048"], help="LENGTH/BLOCK")
    p.add_argument("--global-tokens", type=int, default=512, help="tokens of the global block")
    p.add_argument("--heads", type=int, default=32, help="query heads")
    p.add_argument("--kv-heads", type=int, default=None, help="key/value heads (GQA); default: --heads")
    p.add_argument("--batch-size", type=int, default=1, help="rows per call")
    p.add_argument("--uneven", action="store_true", help="segmenter-like uneven block lengths, different per row")
    p.add_argument("--released", type=float, default=0.0,
                   help="chance that a context block is released to full attention (block dropout: the student's "
                        "layout)")
    p.add_argument("--head-dim", type=int, default=128, help="dimension per head")
    p.add_argument("--dtype", default="bfloat16", help="torch dtype of q, k, v")
    p.add_argument("--backends", nargs="+", default=["sdpa", "flex", "varlen", "flash", "cudnn", "auto"],
                   choices=list(BACKEND_NAMES), help="attention backends timed against dense causal sdpa")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls first")
    p.add_argument("--repeat", type=int, default=10, help="timed calls (median reported)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    rows = []
    for shape in args.shapes:
        length, block = map(int, shape.split("/"))
        rows.extend(bench_shape(length, block, args))
    print(f"\ndevice {torch.cuda.get_device_name() if args.device == 'cuda' else 'cpu'}, torch {torch.__version__}, "
          f"B={args.batch_size}, {args.heads} heads ({args.kv_heads or args.heads} key/value), d={args.head_dim}, {args.dtype}, "
          f"global block {args.global_tokens}")
    print_table(rows)
    return 0
