"""Exploration harness for issue 10: candidate pieces of a fast block-attention path, timed on a GPU.

    python scripts/attention_variants.py --shapes 32768/512 8192/512 32768/2048 --out variants.json

Uniform context blocks then a global block, B=1, bf16, one (q, k, v) in transformers' physical
layout (``[B, T, H, D]`` memory seen as ``[B, H, T, D]``). Times (CUDA events, median) of:

* dense causal SDPA per kernel (flash, cudnn, efficient): the baseline;
* FlexAttention over the whole layout with several kernel options;
* the block-diagonal part alone: batched causal SDPA on zero-copy views, ``varlen_attn``, flex;
* the global rows alone: lower-right causal SDPA, flex, and an unmasked-context + causal-self split
  merged by log-sum-exp (forward), with the context keys optionally cut into chunks.

Each row prints as soon as it is measured; a failing variant prints its error and the run goes on.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel


def bench(fn, warmup_ms=25, rep_ms=100) -> float:
    from triton.testing import do_bench

    return do_bench(fn, warmup=warmup_ms, rep=rep_ms, return_mode="median")


def physical_qkv(T, H, D, dtype=torch.bfloat16):
    """q, k, v as transformers hands them to attention: [1, H, T, D] views of [1, T, H, D] memory."""
    return [torch.randn(1, T, H, D, device="cuda", dtype=dtype).transpose(1, 2).requires_grad_(True) for _ in range(3)]


def fwd_and_fwdbwd(call, inputs, grad_shape_like=None):
    """(forward ms, forward+backward ms) of ``call()`` whose output is ``[..]`` with inputs needing grads."""
    f = bench(lambda: call())
    out = call()
    g = torch.randn_like(out)

    def fb():
        o = call()
        torch.autograd.grad(o, inputs, g, allow_unused=True)

    return f, bench(fb)


def cudnn_variants(shape, T, bs, n, Lc, G, q, k, v, record, flex_call):
    """cuDNN's ragged (varlen) kernel for the blocks and cuDNN with a lower-right mask for the global rows.

    Packed ``[T, H, D]`` views of the physical ``[1, T, H, D]`` memory, no copies. Prints each variant's largest
    forward difference from flex on the same layout (``flex_call()``, ``[1, H, T, D]``)."""
    from torch.nn.attention.varlen import varlen_attn

    from lit_block.attention.split import _varlen_api

    packed = lambda x: x.transpose(1, 2)[0]  # noqa: E731 - [T, H, D]
    cu_blocks = torch.arange(0, Lc + 1, bs, device="cuda", dtype=torch.int32)
    cu_all = torch.cat([cu_blocks, torch.tensor([T], device="cuda", dtype=torch.int32)])  # global rows: a dummy block
    ref = flex_call().detach()[0].transpose(0, 1)  # [T, H, D]

    def ragged(qp, kp, vp, cu, m):  # causal per sequence of cu
        return torch.ops.aten._cudnn_attention_forward(qp, kp, vp, None, cu, cu, m, m, True, 0.0, True)[0]

    def report(name, out, rows):
        print(f"#   {shape} {name}: max |out - flex| {float((out.float() - ref[rows].float()).abs().max()):.4f}", flush=True)

    try:
        out = ragged(packed(q)[:Lc], packed(k)[:Lc], packed(v)[:Lc], cu_blocks, bs)
        report("cudnn ragged blocks", out, slice(0, Lc))
        record(shape, "cudnn", "ragged blocks", n * bs * (bs + 1) // 2,
               lambda: ragged(packed(q)[:Lc], packed(k)[:Lc], packed(v)[:Lc], cu_blocks, bs), (q, k, v))
    except Exception as e:  # noqa: BLE001
        print(f"#   cudnn ragged blocks: error {type(e).__name__}: {str(e)[:300]}", flush=True)
    try:  # GQA: 8 key/value heads
        k8, v8 = (x[:, :8].detach().contiguous() for x in (k, v))
        ragged(packed(q)[:Lc], packed(k8)[:Lc], packed(v8)[:Lc], cu_blocks, bs)
        print("#   cudnn ragged with 8 key/value heads: runs", flush=True)
    except Exception as e:  # noqa: BLE001
        print(f"#   cudnn ragged GQA: error {type(e).__name__}: {str(e)[:200]}", flush=True)

    mask = torch.ones(G, T, dtype=torch.bool, device="cuda").tril(T - G)  # lower-right causal, materialized
    pairs_g = G * Lc + G * (G + 1) // 2
    for name, attn_mask in (("bool", mask), ("additive", torch.zeros(G, T, device="cuda", dtype=q.dtype)
                                               .masked_fill(~mask, float("-inf")))):
        def glob(attn_mask=attn_mask):
            with sdpa_kernel([SDPBackend.CUDNN_ATTENTION]):
                return F.scaled_dot_product_attention(q[:, :, Lc:], k, v, attn_mask=attn_mask)
        try:
            report(f"cudnn global, {name} mask", glob()[0].transpose(0, 1), slice(Lc, T))
            record(shape, "cudnn", f"global rows, {name} mask", pairs_g, glob, (q, k, v))
        except Exception as e:  # noqa: BLE001
            print(f"#   cudnn global {name}: error {type(e).__name__}: {str(e)[:300]}", flush=True)
    causal, _ = _varlen_api()
    cu_q = torch.tensor([0, G], device="cuda", dtype=torch.int32)
    cu_k = torch.tensor([0, T], device="cuda", dtype=torch.int32)
    glob_fa = lambda: varlen_attn(packed(q)[Lc:], packed(k), packed(v), cu_q, cu_k, G, T, **causal)  # noqa: E731
    try:
        report("varlen_attn global (is causal bottom-right?)", glob_fa(), slice(Lc, T))
        record(shape, "cudnn", "global rows, varlen_attn (FA2)", pairs_g, glob_fa, (q, k, v))
    except Exception as e:  # noqa: BLE001
        print(f"#   varlen global: error {type(e).__name__}: {str(e)[:300]}", flush=True)

    def layer():  # the whole layout: every row through the ragged call, global rows replaced by the masked call
        o = ragged(packed(q), packed(k), packed(v), cu_all, max(bs, G))
        with sdpa_kernel([SDPBackend.CUDNN_ATTENTION]):
            og = F.scaled_dot_product_attention(q[:, :, Lc:], k, v, attn_mask=mask)
        return torch.cat([o[:Lc], og[0].transpose(0, 1)])
    try:
        out = layer()
        report("cudnn layer", out, slice(0, T))
        g = torch.randn_like(out)
        grads = torch.autograd.grad(out, (q, k, v), g)
        ref_grads = torch.autograd.grad(flex_call()[0].transpose(0, 1), (q, k, v), g)
        diffs = [float((a.float() - b.float()).abs().max()) for a, b in zip(grads, ref_grads)]
        print(f"#   {shape} cudnn layer: max |grad - flex grad| q/k/v {diffs[0]:.4f} / {diffs[1]:.4f} / {diffs[2]:.4f}",
              flush=True)
        record(shape, "cudnn", "layer: ragged + masked global", n * bs * (bs + 1) // 2 + pairs_g, layer, (q, k, v))
    except Exception as e:  # noqa: BLE001
        print(f"#   cudnn layer: error {type(e).__name__}: {str(e)[:300]}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", nargs="+", default=["32768/512", "8192/512", "32768/2048"])
    p.add_argument("--global-tokens", type=int, default=512)
    p.add_argument("--heads", type=int, default=32)
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--flex-options", action="store_true", help="also try flex kernel options (compiles more)")
    p.add_argument("--parts", nargs="+", default=["dense", "whole", "blocks", "global"],
                   help="which parts to time (dense causal baselines, flex on the whole layout, blocks, global rows, "
                        "cudnn: ragged blocks + masked global rows)")
    p.add_argument("--budget-s", type=float, default=420)
    p.add_argument("--out", default="variants.json")
    args = p.parse_args()
    from torch.nn.attention.bias import causal_lower_right
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    flex = torch.compile(flex_attention, dynamic=False)
    t0 = time.monotonic()
    H, D, G = args.heads, args.head_dim, args.global_tokens
    rows = []
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}; H={H} D={D} global={G} bf16 B=1", flush=True)
    print("| shape | part | variant | fwd ms | fwd+bwd ms | fwd TF/s | fwd+bwd TF/s |\n|---|---|---|---|---|---|---|", flush=True)

    def record(shape, part, name, pairs, fn, inputs):
        if time.monotonic() - t0 > args.budget_s or part.split(":")[0].split()[0] not in args.parts:
            return
        try:
            f, fb = fwd_and_fwdbwd(fn, inputs)
            r = dict(shape=shape, part=part, variant=name, fwd=f, fwdbwd=fb,
                     tf_f=4 * H * D * pairs / f / 1e9, tf_fb=3.5 * 4 * H * D * pairs / fb / 1e9)
            rows.append(r)
            print(f"| {shape} | {part} | {name} | {f:.3f} | {fb:.3f} | {r['tf_f']:.0f} | {r['tf_fb']:.0f} |", flush=True)
        except Exception as e:  # noqa: BLE001 - an exploration: report and go on
            print(f"| {shape} | {part} | {name} | error: {type(e).__name__}: {str(e)[:160]} |", flush=True)

    for shape in args.shapes:
        T, bs = map(int, shape.split("/"))
        Lc = T - G
        n = Lc // bs
        if n * bs != Lc:
            print(f"# {shape}: skipped (uniform blocks only: {Lc} context tokens are not whole blocks)", flush=True)
            continue
        q, k, v = physical_qkv(T, H, D)
        full_pairs = T * (T + 1) // 2
        block_pairs = n * bs * (bs + 1) // 2
        global_pairs = G * Lc + G * (G + 1) // 2
        print(f"# {shape}: ideal {full_pairs / (block_pairs + global_pairs):.1f}x; blocks {block_pairs / 1e6:.1f}M pairs, "
              f"global {global_pairs / 1e6:.1f}M pairs", flush=True)

        # dense causal baselines
        for name, be in (("default", None), ("flash", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION),
                         ("efficient", SDPBackend.EFFICIENT_ATTENTION)):
            def dense(be=be):
                if be is None:
                    return F.scaled_dot_product_attention(q, k, v, is_causal=True)
                with sdpa_kernel([be]):
                    return F.scaled_dot_product_attention(q, k, v, is_causal=True)
            record(shape, "dense causal", name, full_pairs, dense, (q, k, v))

        # flex over the whole layout
        ids = torch.cat([torch.arange(n, device="cuda").repeat_interleave(bs), torch.full((G,), -1, device="cuda")])

        def mask_mod(b, h, qi, ki):
            return (ki <= qi) & ((ids[qi] < 0) | (ids[qi] == ids[ki]))

        bm = create_block_mask(mask_mod, 1, None, T, T, device="cuda")
        options = {"default": None}
        if args.flex_options and shape == args.shapes[0]:
            options.update({
                "tma+safe": {"USE_TMA": True, "ROWS_GUARANTEED_SAFE": True},
                "fwd 128x128 w8 s2": {"fwd_BLOCK_M": 128, "fwd_BLOCK_N": 128, "fwd_num_warps": 8, "fwd_num_stages": 2},
                "fwd 128x64 w4 s3 +safe": {"fwd_BLOCK_M": 128, "fwd_BLOCK_N": 64, "fwd_num_warps": 4,
                                           "fwd_num_stages": 3, "ROWS_GUARANTEED_SAFE": True},
            })
        for name, opts in options.items():
            record(shape, "whole", f"flex {name}", block_pairs + global_pairs,
                   lambda opts=opts: flex(q, k, v, block_mask=bm, kernel_options=opts), (q, k, v))
        if "cudnn" in args.parts:
            cudnn_variants(shape, T, bs, n, Lc, G, q, k, v, record, lambda: flex(q, k, v, block_mask=bm))

        # block-diagonal part alone, zero-copy views [n, H, bs, D]
        def blocks_view(x):
            return x[0, :, :Lc].unflatten(1, (n, bs)).transpose(0, 1)

        for name, be in (("sdpa default", None), ("sdpa flash", SDPBackend.FLASH_ATTENTION),
                         ("sdpa cudnn", SDPBackend.CUDNN_ATTENTION)):
            def blk(be=be):
                qb, kb, vb = blocks_view(q), blocks_view(k), blocks_view(v)
                if be is None:
                    return F.scaled_dot_product_attention(qb, kb, vb, is_causal=True)
                with sdpa_kernel([be]):
                    return F.scaled_dot_product_attention(qb, kb, vb, is_causal=True)
            record(shape, "blocks", name, block_pairs, blk, (q, k, v))
        try:
            from torch.nn.attention.varlen import varlen_attn

            from lit_block.attention.split import _varlen_api

            causal, _ = _varlen_api()
            cu = torch.arange(0, Lc + 1, bs, device="cuda", dtype=torch.int32)

            def varlen_blocks():  # [Lc, H, D] views, no gather
                return varlen_attn(q.transpose(1, 2)[0, :Lc], k.transpose(1, 2)[0, :Lc], v.transpose(1, 2)[0, :Lc],
                                   cu, cu, bs, bs, **causal)
            record(shape, "blocks", "varlen_attn view", block_pairs, varlen_blocks, (q, k, v))
        except Exception as e:  # noqa: BLE001
            print(f"varlen unavailable: {e}")
        # the same on contiguous copies (copy and its backward timed): is the slow backward a layout effect?
        for name, be in (("cudnn", SDPBackend.CUDNN_ATTENTION), ("flash", SDPBackend.FLASH_ATTENTION)):
            def blk_copy(be=be):
                qb, kb, vb = (blocks_view(x).contiguous() for x in (q, k, v))  # [n, H, bs, D], BHSD-contiguous
                with sdpa_kernel([be]):
                    return F.scaled_dot_product_attention(qb, kb, vb, is_causal=True)
            record(shape, "blocks", f"sdpa {name}, contiguous copies", block_pairs, blk_copy, (q, k, v))
        if "blocks" in args.parts:  # backward alone, contiguous leaves: the kernel without any copy
            qb, kb, vb = (blocks_view(x).detach().contiguous().requires_grad_(True) for x in (q, k, v))
            for name, be in (("cudnn", SDPBackend.CUDNN_ATTENTION), ("flash", SDPBackend.FLASH_ATTENTION)):
                with sdpa_kernel([be]):
                    out = F.scaled_dot_product_attention(qb, kb, vb, is_causal=True)
                    g = torch.randn_like(out)
                    try:
                        ms = bench(lambda: torch.autograd.grad(out, (qb, kb, vb), g, retain_graph=True))
                        print(f"| {shape} | blocks | {name} backward alone, contiguous | - | {ms:.3f} (bwd) | - | "
                              f"{2.5 * 4 * H * D * block_pairs / ms / 1e9:.0f} (bwd) |", flush=True)
                    except Exception as e:  # noqa: BLE001
                        print(f"| {shape} | blocks | {name} backward alone | error: {str(e)[:160]} |", flush=True)
            del qb, kb, vb, out, g
        bid = torch.arange(n, device="cuda").repeat_interleave(bs)
        bmb = create_block_mask(lambda b, h, qi, ki: (ki <= qi) & (bid[qi] == bid[ki]), 1, None, Lc, Lc, device="cuda")
        record(shape, "blocks", "flex", block_pairs,
               lambda: flex(q[:, :, :Lc], k[:, :, :Lc], v[:, :, :Lc], block_mask=bmb), (q, k, v))

        # global rows alone
        qg = lambda: q[:, :, Lc:]  # noqa: E731
        record(shape, "global", "sdpa lower-right", global_pairs,
               lambda: F.scaled_dot_product_attention(qg(), k, v, attn_mask=causal_lower_right(G, T)), (q, k, v))
        bmg = create_block_mask(lambda b, h, qi, ki: ki <= qi + Lc, 1, None, G, T, device="cuda")
        record(shape, "global", "flex", global_pairs, lambda: flex(qg(), k, v, block_mask=bmg), (q, k, v))
        for name, be in (("flash", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION)):
            def ctx_part(be=be):
                with sdpa_kernel([be]):
                    return F.scaled_dot_product_attention(qg(), k[:, :, :Lc], v[:, :, :Lc])
            record(shape, "global: context only (unmasked)", name, G * Lc, ctx_part, (q, k, v))

        # forward only: unmasked context (optionally in key chunks, batched) + causal self, merged by LSE
        flash = torch.ops.aten._scaled_dot_product_flash_attention
        for chunk in ((Lc, 8192, 4096) if "global" in args.parts else ()):
            if chunk > Lc or Lc % chunk:
                continue
            nc = Lc // chunk

            def split_merge(chunk=chunk, nc=nc):
                qq = qg()
                kc = k[0, :, :Lc].unflatten(1, (nc, chunk)).transpose(0, 1)
                vc = v[0, :, :Lc].unflatten(1, (nc, chunk)).transpose(0, 1)
                o1, l1 = flash(qq.expand(nc, -1, -1, -1), kc, vc)[:2]  # [nc, H, G, D], [nc, H, G]
                o2, l2 = flash(qq, k[:, :, Lc:], v[:, :, Lc:], is_causal=True)[:2]
                lse = torch.logsumexp(torch.cat([l1, l2]), dim=0)  # [H, G]
                w = torch.exp(torch.cat([l1, l2]) - lse)[..., None]  # [nc + 1, H, G, 1]
                return (torch.cat([o1, o2]).float() * w).sum(0).to(q.dtype)
            with torch.no_grad():
                try:
                    f = bench(split_merge)
                    print(f"| {shape} | global | LSE merge, {nc} chunk(s) (fwd only) | {f:.3f} | - | "
                          f"{4 * H * D * global_pairs / f / 1e9:.0f} | - |", flush=True)
                    rows.append(dict(shape=shape, part="global", variant=f"lse merge {nc} chunks", fwd=f))
                except Exception as e:  # noqa: BLE001
                    print(f"| {shape} | global | LSE merge {nc} | error: {type(e).__name__}: {str(e)[:160]} |", flush=True)
        del q, k, v
        torch.cuda.empty_cache()
    with open(args.out, "w") as fh:
        json.dump(rows, fh, indent=1)
    print(f"done in {time.monotonic() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
