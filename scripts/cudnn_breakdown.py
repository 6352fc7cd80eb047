"""Where the ``cudnn`` backend's time goes: each of its kernels and glue steps timed alone, on a GPU (issue 10).

    python scripts/cudnn_breakdown.py --shapes 32768/512 8192/512

B=1, bf16, H=32, D=128, a final global run of 512; inputs in transformers' physical layout. ``do_bench``
medians. Rows: the whole backend (forward, forward+backward) and dense causal cuDNN as the baseline; then
its parts -- the batched block call and the global rows' two calls, forward and backward, through views and
on contiguous copies (the kernels' own speed) -- and the glue (output copies, merges, gradient copies and
adds). Then variants of the expensive parts, each printed with its max difference where it computes the
same thing. Optional kernel profile of one forward+backward (``--profile``). ``--host-probe``: whether the
backend is host-bound, and the host time of its forward piece by piece.
"""

from __future__ import annotations

import argparse
import contextlib

import torch

from lit_block.attention import cudnn as C
from lit_block.attention import lse_merge
from lit_block.attention.lse_merge import merge_into
from lit_block.benchmarks.attention import block_sizes, make_layout, time_ms


def bench(fn) -> float:
    from triton.testing import do_bench

    return do_bench(fn, warmup=25, rep=100, return_mode="median")


def row(shape, part, ms, flop=None):
    tf = f"{flop / ms / 1e9:.0f}" if flop else "-"
    print(f"| {shape} | {part} | {ms:.3f} | {tf} |", flush=True)


def gqa_probe(T: int = 4096, H: int = 32, Hkv: int = 8, D: int = 128) -> None:
    """Does cuDNN's dense attention take fewer key/value heads than query heads (forward and backward), and how
    fast is that against repeating the key/value heads first?"""
    q = torch.randn(1, T, H, D, device="cuda", dtype=torch.bfloat16).transpose(1, 2)
    k, v = (torch.randn(1, T, Hkv, D, device="cuda", dtype=torch.bfloat16).transpose(1, 2) for _ in range(2))
    dout = torch.randn(1, T, H, D, device="cuda", dtype=torch.bfloat16).transpose(1, 2)
    kr, vr = C._physical(k, H // Hkv), C._physical(v, H // Hkv)
    ref, lse_r, st_r = C._fwd(q, kr, vr, True, None)
    ref_g = C._bwd(dout, q, kr, vr, ref, lse_r, st_r, True, None)
    try:
        out, lse, st = C._fwd(q, k, v, True, None)
        grads = C._bwd(dout, q, k, v, out, lse, st, True, None)
    except Exception as e:  # noqa: BLE001
        print(f"# gqa probe: cuDNN refuses {Hkv} key/value heads: {type(e).__name__}: {str(e)[:200]}", flush=True)
        return
    want = [ref, ref_g[0], C._sum_groups(ref_g[1], H // Hkv), C._sum_groups(ref_g[2], H // Hkv)]
    errs = [float((a.float() - b.float()).abs().max() / b.float().abs().max()) for a, b in zip([out, *grads], want)]
    print(f"# gqa probe: native shapes {[tuple(g.shape) for g in grads]}, relative max errors vs repeated heads "
          f"out/dq/dk/dv {' / '.join(f'{e:.1e}' for e in errs)}", flush=True)
    row(f"{T} gqa", "bwd, native key/value heads", bench(lambda: C._bwd(dout, q, k, v, out, lse, st, True, None)))
    row(f"{T} gqa", "bwd, repeating the heads first", bench(
        lambda: C._bwd(dout, q, C._physical(k, H // Hkv), C._physical(v, H // Hkv), ref, lse_r, st_r, True, None)))


def plan_probe(H: int = 32, D: int = 128) -> None:
    """What a new shape costs: cuDNN builds an execution plan per new shape of each call (forward and backward). The
    backend's first forward+backward on a layout never seen against its second, for a few new lengths."""
    import time

    print("| layout | first fwd+bwd ms | second fwd+bwd ms |\n|---|---|---|", flush=True)
    for T, G in ((8192 + 512, 512), (8192 + 1024, 512), (8192 + 512, 384), (32768 + 512, 512)):
        layout = make_layout([block_sizes(T, 512, G)], G, "cuda")
        leaves = [torch.randn(1, T, H, D, device="cuda", dtype=torch.bfloat16).transpose(1, 2).requires_grad_(True)
                  for _ in range(3)]
        times = []
        for _ in range(2):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            out = C.CudnnBlockAttention(layout)(*leaves)
            torch.autograd.grad(out, leaves, torch.ones_like(out))
            torch.cuda.synchronize()
            times.append((time.perf_counter() - t0) * 1e3)
        print(f"| {T}/512, global {G} | {times[0]:.1f} | {times[1]:.1f} |", flush=True)


@contextlib.contextmanager
def merge_by(kind: str):
    """Within the block, ``merge_into`` runs as torch ops if ``kind`` says so (``lse_merge`` without Triton)."""
    real = lse_merge.triton
    lse_merge.triton = None if kind == "torch ops" else real
    try:
        yield
    finally:
        lse_merge.triton = real


def host_probe(T: int, bs: int, H: int, D: int, G: int, calls: int = 20) -> None:
    """Is the backend host-bound? Per call, forward and forward+backward: GPU time queued back to back (CUDA events),
    the host's time to issue a call while the GPU is held busy (so it never waits on the GPU), and the kernels' own
    time (profiler), for the one-launch Triton merge and the torch-ops merge. Plus whether cuDNN's causal mask for
    fewer queries than keys is aligned top-left or bottom-right."""
    from torch.profiler import ProfilerActivity, profile as prof

    layout = make_layout([block_sizes(T, bs, G)], G, "cuda")
    leaves = [torch.randn(1, T, H, D, device="cuda", dtype=torch.bfloat16).transpose(1, 2).requires_grad_(True)
              for _ in range(3)]
    dout = torch.randn(1, T, H, D, device="cuda", dtype=torch.bfloat16)
    attn = C.CudnnBlockAttention(layout)
    q, k, v = (x.detach() for x in leaves)
    dense = lambda: torch.ops.aten._scaled_dot_product_cudnn_attention(q, k, v, None, True, 0.0, True, False)  # noqa
    steps = {"backend fwd": lambda: attn(*leaves),
             "backend fwd+bwd": lambda: torch.autograd.grad(attn(*leaves), leaves, dout)}
    runs = [("dense causal cuDNN fwd", "no", dense)]  # (what, merge, call): the baseline has no merge
    runs += [(name, merge, fn) for merge in ("triton", "torch ops") for name, fn in steps.items()]
    for name, merge, fn in runs:
        with merge_by(merge):
            queued = time_ms(fn, "cuda", 5, calls)[0]
            host = host_us(fn, calls) / 1e3
            with prof(activities=[ProfilerActivity.CUDA]) as p:
                for _ in range(5):
                    fn()
                torch.cuda.synchronize()
        kernels = sum(e.device_time_total for e in p.key_averages()) / 5e3
        print(f"| {T}/{bs} | {name}, {merge} merge: queued / host issue / kernels | {queued:.3f} / {host:.3f} / "
              f"{kernels:.3f} | - |", flush=True)
    host_pieces(T, bs, leaves, attn)
    qg = q[:, :, -G:]
    out, _, _ = C._fwd(qg, k, v, True, None)
    s = (qg.float() @ k.float().transpose(-1, -2)) * D ** -0.5
    rows, cols = torch.arange(G, device="cuda")[:, None], torch.arange(T, device="cuda")[None, :]
    for name, masked in (("top-left", cols > rows), ("bottom-right", cols > rows + T - G)):
        want = torch.softmax(s.masked_fill(masked, float("-inf")), -1) @ v.float()
        print(f"# {T}: cuDNN causal, {G} queries x {T} keys, max |out - {name} causal| "
              f"{float((out.float() - want).abs().max()):.4f}", flush=True)


def host_us(fn, calls: int = 50) -> float:
    """Microseconds the host takes to issue one ``fn()`` while the GPU is held busy (never waiting on it). Keep
    ``calls`` times the kernels per call under the GPU's queue of pending launches (about a thousand): past it,
    launching blocks and this measures the GPU instead."""
    import time

    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    torch.cuda._sleep(int(1e9))
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    took = (time.perf_counter() - t0) * 1e6 / calls
    torch.cuda.synchronize()
    return took


def host_pieces(T: int, bs: int, leaves, attn) -> None:
    """The host time of the backend's forward, piece by piece (what to cut where the forward is host-bound)."""
    q, k, v = (x.detach() for x in leaves)
    plan, scale, Lc = attn.plan, q.shape[-1] ** -0.5, attn.plan.n_context
    tq, tk, tv = (C._tiles(x, bs) for x in (q, k, v))
    out, lse, _ = C._fwd(tq, tk, tv, True, scale)
    out_p, lse_p, _ = C._fwd(q[:, :, Lc:], k[:, :, :Lc], v[:, :, :Lc], False, scale)
    out_g, lse_g = C._untile(out, 1)[:, :, Lc:].transpose(1, 2), lse.view(1, T // bs, q.shape[1], bs)[:, -1]
    lse_pv = lse_p.view(lse_g.shape)

    def torch_merge():
        with merge_by("torch ops"):
            merge_into(out_g, lse_g, out_p, lse_pv)

    cases = {
        "tiles of q, k, v (views)": lambda: [C._tiles(x, bs) for x in (q, k, v)],
        "cuDNN call: tiled blocks": lambda: C._fwd(tq, tk, tv, True, scale),
        "cuDNN call: global x context": lambda: C._fwd(q[:, :, Lc:], k[:, :, :Lc], v[:, :, :Lc], False, scale),
        "merge, Triton": lambda: merge_into(out_g, lse_g, out_p, lse_pv),
        "merge, torch ops": torch_merge,
        "_tiled_forward (no autograd)": lambda: C._tiled_forward(q, k, v, plan, scale),
        "autograd function apply": lambda: C._MergedCudnnAttention.apply(*leaves, plan, 1, scale),
        "backend call": lambda: attn(*leaves),
        "backend call, no_grad": torch.no_grad()(lambda: attn(*leaves)),
    }
    # the backward's pieces, on the state of one forward
    dout = torch.randn_like(q.transpose(1, 2)).transpose(1, 2)  # [B, H, T, D] view, as the backward gets it
    o_t, lse_t, st_t = C._fwd(tq, tk, tv, True, scale)
    o_p, lse_pp, st_p = C._fwd(q[:, :, Lc:], k[:, :, :Lc], v[:, :, :Lc], False, scale)
    out_f, saved, states = C._tiled_forward(q, k, v, plan, scale)
    o_graph = attn(*leaves)
    cases |= {
        "cuDNN backward call: tiled blocks": lambda: C._bwd(C._tiles(dout, bs), tq, tk, tv, o_t, lse_t, st_t, True,
                                                             scale),
        "cuDNN backward call: global x context": lambda: C._bwd(dout[:, :, Lc:], q[:, :, Lc:], k[:, :, :Lc],
                                                                v[:, :, :Lc], o_p, lse_pp, st_p, False, scale),
        "_tiled_backward (no autograd)": lambda: C._tiled_backward(dout, q, k, v, out_f.transpose(1, 2), saved,
                                                                   states, plan, scale),
        "autograd.grad of a backend call": lambda: torch.autograd.grad(o_graph, leaves, dout.transpose(1, 2),
                                                                       retain_graph=True),
    }
    for name, fn in cases.items():
        print(f"| {T}/{bs} | host us: {name} | {host_us(fn):.1f} | - |", flush=True)


def run_shape(T: int, bs: int, H: int, D: int, G: int, profile: bool) -> None:
    shape = f"{T}/{bs}"
    Lc = T - G
    dev = "cuda"
    q, k, v = (torch.randn(1, T, H, D, device=dev, dtype=torch.bfloat16).transpose(1, 2) for _ in range(3))
    layout = make_layout([block_sizes(T, bs, G)], G, dev)
    attn = C.CudnnBlockAttention(layout)
    leaves = [x.detach().requires_grad_(True) for x in (q, k, v)]
    out = attn(*leaves)
    dout = torch.randn_like(out)
    f4 = 4 * H * D  # FLOPs per (query, key) pair, forward
    pairs_blocks = (Lc // bs) * bs * (bs + 1) // 2 + (Lc % bs) * (Lc % bs + 1) // 2
    pairs_global = G * Lc + G * (G + 1) // 2

    dense_f = bench(lambda: torch.ops.aten._scaled_dot_product_cudnn_attention(q, k, v, None, False, 0.0, True, False))
    row(shape, "dense causal cuDNN, fwd", dense_f, f4 * T * T / 2)
    ms_f = bench(lambda: attn(*leaves))
    ms_fb = bench(lambda: torch.autograd.grad(attn(*leaves), leaves, dout))
    row(shape, "backend fwd", ms_f, f4 * (pairs_blocks + pairs_global))
    row(shape, "backend fwd+bwd", ms_fb, 3.5 * f4 * (pairs_blocks + pairs_global))
    print(f"# {shape}: backend fwd {dense_f / ms_f:.2f}x dense fwd", flush=True)

    scale = D ** -0.5
    group = C._block_groups(bs, Lc)[0]
    qb, kb, vb = (C._view(x, group) for x in (q, k, v))
    ob, lse_b, st_b = C._fwd(qb, kb, vb, True, scale)
    dob = C._view(dout.transpose(1, 2), group)
    n = group[1]
    fb = f4 * n * bs * (bs + 1) / 2
    row(shape, "blocks fwd (views)", bench(lambda: C._fwd(qb, kb, vb, True, scale)), fb)
    row(shape, "blocks bwd (views)", bench(lambda: C._bwd(dob, qb, kb, vb, ob, lse_b, st_b, True, scale)), 2.5 * fb)
    cont = [x.contiguous() for x in (qb, kb, vb, dob)]
    oc, lse_cb, st_cb = C._fwd(*cont[:3], True, scale)
    row(shape, "blocks fwd (contiguous)", bench(lambda: C._fwd(*cont[:3], True, scale)), fb)
    row(shape, "blocks bwd (contiguous)",
        bench(lambda: C._bwd(cont[3], *cont[:3], oc, lse_cb, st_cb, True, scale)), 2.5 * fb)

    qg = q[:, :, Lc:].contiguous()
    kc, vc = k[:, :, :Lc], v[:, :, :Lc]
    fc = f4 * G * Lc
    og, lse_g, st_g = C._fwd(qg, kc, vc, False, scale)
    dog = dout.transpose(1, 2)[:, :, Lc:].contiguous()
    row(shape, "global x context fwd (strided k, v)", bench(lambda: C._fwd(qg, kc, vc, False, scale)), fc)
    row(shape, "global x context bwd (strided k, v)",
        bench(lambda: C._bwd(dog, qg, kc, vc, og, lse_g, st_g, False, scale)), 2.5 * fc)
    kcc, vcc = kc.contiguous(), vc.contiguous()
    og2, lse_g2, st_g2 = C._fwd(qg, kcc, vcc, False, scale)
    row(shape, "global x context fwd (contiguous)", bench(lambda: C._fwd(qg, kcc, vcc, False, scale)), fc)
    row(shape, "global x context bwd (contiguous)",
        bench(lambda: C._bwd(dog, qg, kcc, vcc, og2, lse_g2, st_g2, False, scale)), 2.5 * fc)
    for nc in (2, 4, 8):  # split-K by batching key chunks (queries repeated)
        if Lc % nc:
            continue
        chunk = lambda x, nc=nc: x[0, :, :Lc].unflatten(1, (nc, Lc // nc)).transpose(0, 1)  # noqa: E731
        qx, dox, ox = (t.expand(nc, -1, -1, -1).contiguous() for t in (qg, dog, og))
        _, lsex, stx = C._fwd(qx, chunk(k), chunk(v), False, scale)
        lse_x = lse_g.expand(nc, *lse_g.shape[1:]).contiguous()
        row(shape, f"global x context bwd, {nc} key chunks batched",
            bench(lambda: C._bwd(dox, qx, chunk(k), chunk(v), ox, lse_x, stx, False, scale)), 2.5 * fc)
    flash_b = torch.ops.aten._scaled_dot_product_flash_attention
    o_f, lse_f, cq, ck, mq, mk, seed, off, _ = flash_b(qg, kc, vc, 0.0, False, False, scale=scale)
    row(shape, "global x context bwd (flash FA2)", bench(lambda: torch.ops.aten._scaled_dot_product_flash_attention_backward(
        dog, qg, kc, vc, o_f, lse_f, cq, ck, mq, mk, 0.0, False, seed, off, scale=scale)), 2.5 * fc)
    ks, vs = k[:, :, Lc:], v[:, :, Lc:]
    os_, lse_s, st_s = C._fwd(qg, ks, vs, True, scale)
    row(shape, "global self fwd", bench(lambda: C._fwd(qg, ks, vs, True, scale)))
    row(shape, "global self bwd", bench(lambda: C._bwd(dog, qg, ks, vs, os_, lse_s, st_s, True, scale)))

    full = torch.empty(1, T, H, D, device=dev, dtype=torch.bfloat16).transpose(1, 2)
    row(shape, "glue: block output copy into out", bench(lambda: C._view(full, group).copy_(ob)))
    dkc = torch.randn_like(kc)
    row(shape, "glue: dk[:Lc] += dk_c (one of two)", bench(lambda: full[:, :, :Lc].add_(dkc)))
    ob_flat = ob.transpose(1, 2).reshape(1, n * bs, H, D).transpose(1, 2)  # [1, H, n * bs, D], no copy
    row(shape, "glue: dk[:Lc] = blocks + ctx, fused", bench(lambda: torch.add(ob_flat, dkc[:, :, :n * bs],
                                                                              out=full[:, :, :n * bs])))
    lse_self = lse_s.reshape(1, H, G).clone()  # the backend merges in place; time it on copies
    lse_ctx = lse_g.reshape(1, H, G).clone()
    row(shape, "glue: global merge", bench(lambda: merge_into(full[:, :, Lc:].transpose(1, 2), lse_self, og, lse_ctx)))
    if profile:
        from torch.profiler import ProfilerActivity, profile as prof

        for _ in range(3):
            torch.autograd.grad(attn(*leaves), leaves, dout)
        torch.cuda.synchronize()
        with prof(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as p:
            for _ in range(5):
                torch.autograd.grad(attn(*leaves), leaves, dout)
            torch.cuda.synchronize()
        averages = p.key_averages()
        print(averages.table(sort_by="cuda_time_total", row_limit=12, max_name_column_width=70))
        print(averages.table(sort_by="self_cpu_time_total", row_limit=25, max_name_column_width=70))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", nargs="+", default=["32768/512", "8192/512"])
    p.add_argument("--heads", type=int, default=32)
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--global-tokens", type=int, default=512)
    p.add_argument("--profile", action="store_true")
    p.add_argument("--gqa-probe", action="store_true", help="only check whether cuDNN takes GQA key/value heads")
    p.add_argument("--plan-probe", action="store_true", help="only time first and second calls on new shapes")
    p.add_argument("--host-probe", action="store_true", help="only time host issue against GPU time, per call")
    args = p.parse_args()
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}; H={args.heads} D={args.head_dim} "
          f"global={args.global_tokens} bf16 B=1", flush=True)
    print("| shape | part | ms | TF/s |\n|---|---|---|---|", flush=True)
    if args.gqa_probe:
        return gqa_probe()
    if args.plan_probe:
        return plan_probe()
    for s in args.shapes:
        T, bs = (int(x) for x in s.split("/"))
        if args.host_probe:
            host_probe(T, bs, args.heads, args.head_dim, args.global_tokens)
            continue
        run_shape(T, bs, args.heads, args.head_dim, args.global_tokens, args.profile)
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
