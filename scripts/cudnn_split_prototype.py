"""Prototype for issue 10: block attention from cuDNN calls, merged by log-sum-exp, forward and backward.

    python scripts/cudnn_split_prototype.py --shapes 32768/512 8192/512 --chunks 1 3 7

Uniform context blocks then a global block, B=1, bf16, q/k/v in transformers' physical layout
(``[1, T, H, D]`` memory seen as ``[1, H, T, D]``). One autograd function runs

* the blocks: one batched causal cuDNN call on zero-copy ``[blocks, H, block, D]`` views;
* the global rows: unmasked cuDNN calls against the context keys, cut into ``--chunks`` key chunks
  (batched), plus a causal call against the global block's own keys; outputs merged by their
  log-sum-exps;
* the backward: the same calls' cuDNN backward kernels, each given the *merged* output and
  log-sum-exp (the way ring attention does), so every part's gradient is exact for the whole softmax.

Prints the largest difference from flex on the same layout (output and gradients) and fwd / fwd+bwd
times against dense causal cuDNN attention in the same run.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

aten = torch.ops.aten


def cudnn_fwd(q, k, v, causal: bool):
    """cuDNN attention on ``[N, H, L, D]`` (strided) tensors: output, log-sum-exp and what the backward needs."""
    out, lse, cq, ck, mq, mk, seed, offset, _ = aten._scaled_dot_product_cudnn_attention(q, k, v, None, True, 0.0, causal, False)
    return out, lse, (cq, ck, mq, mk, seed, offset)


def cudnn_bwd(dout, q, k, v, out, lse, state, causal: bool):
    cq, ck, mq, mk, seed, offset = state
    return aten._scaled_dot_product_cudnn_attention_backward(dout, q, k, v, out, lse, seed, offset, None, cq, ck, mq, mk,
                                                             0.0, causal)


class CudnnBlockAttention(torch.autograd.Function):
    """``[1, H, T, D]`` q, k, v (views of ``[1, T, H, D]`` memory) -> ``[1, T, H, D]``: blocks of ``bs``, last ``G`` global."""

    @staticmethod
    def forward(ctx, q, k, v, bs: int, G: int, nc: int):
        _, H, T, D = q.shape
        Lc = T - G
        n, C = Lc // bs, Lc // nc
        blk = lambda x: x[0, :, :Lc].unflatten(1, (n, bs)).transpose(0, 1)  # noqa: E731 - [n, H, bs, D] view
        chunks = lambda x: x[0, :, :Lc].unflatten(1, (nc, C)).transpose(0, 1)  # noqa: E731 - [nc, H, C, D] view
        ob, lse_b, st_b = cudnn_fwd(blk(q), blk(k), blk(v), True)
        qg = q[:, :, Lc:]
        qg_x = qg.expand(nc, H, G, D).contiguous()  # the global queries once per key chunk (4 MB each)
        oc, lse_c, st_c = cudnn_fwd(qg_x, chunks(k), chunks(v), False)
        os_, lse_s, st_s = cudnn_fwd(qg, k[:, :, Lc:], v[:, :, Lc:], True)
        lse_parts = torch.cat([lse_c.reshape(nc, H, G), lse_s.reshape(1, H, G)]).float()
        lse = torch.logsumexp(lse_parts, dim=0)  # [H, G]: the global rows' softmax over all their keys
        w = torch.exp(lse_parts - lse)[..., None]  # [nc + 1, H, G, 1]
        og = (torch.cat([oc, os_]).float() * w).sum(0).to(q.dtype)  # [H, G, D]
        out = q.new_empty(1, T, H, D)
        out[0, :Lc].view(n, bs, H, D).copy_(ob.transpose(1, 2))
        out[0, Lc:].copy_(og.transpose(0, 1))
        ctx.save_for_backward(q, k, v, out, lse_b, lse, qg_x)
        ctx.states, ctx.shape = (st_b, st_c, st_s), (bs, G, nc, lse_c.shape, lse_s.shape)
        return out

    @staticmethod
    def backward(ctx, dout):
        q, k, v, out, lse_b, lse, qg_x = ctx.saved_tensors
        st_b, st_c, st_s = ctx.states
        bs, G, nc, lse_c_shape, lse_s_shape = ctx.shape
        _, H, T, D = q.shape
        Lc = T - G
        n, C = Lc // bs, Lc // nc
        blk = lambda x: x[0, :, :Lc].unflatten(1, (n, bs)).transpose(0, 1)  # noqa: E731
        chunks = lambda x: x[0, :, :Lc].unflatten(1, (nc, C)).transpose(0, 1)  # noqa: E731
        dout_t, out_t = dout.transpose(1, 2), out.transpose(1, 2)  # [1, H, T, D] views
        dqb, dkb, dvb = cudnn_bwd(blk(dout_t), blk(q), blk(k), blk(v), blk(out_t), lse_b, st_b, True)
        og, dog = out_t[:, :, Lc:], dout_t[:, :, Lc:]
        og_x, dog_x = og.expand(nc, H, G, D).contiguous(), dog.expand(nc, H, G, D).contiguous()
        lse_x = lse.expand(nc, H, G).reshape(lse_c_shape).contiguous()
        dqc, dkc, dvc = cudnn_bwd(dog_x, qg_x, chunks(k), chunks(v), og_x, lse_x, st_c, False)
        dqs, dks, dvs = cudnn_bwd(dog, q[:, :, Lc:], k[:, :, Lc:], v[:, :, Lc:], og, lse.reshape(lse_s_shape), st_s, True)
        grads = []
        for d_blocks, d_chunks, d_self in ((dqb, None, dqs + dqc.sum(0, keepdim=True)), (dkb, dkc, dks), (dvb, dvc, dvs)):
            g = q.new_empty(1, T, H, D).transpose(1, 2)  # physical layout, like the inputs
            blk(g).copy_(d_blocks)
            if d_chunks is not None:
                chunks(g).add_(d_chunks)  # context keys: their own block's gradient plus the global rows'
            g[:, :, Lc:].copy_(d_self)
            grads.append(g)
        return (*grads, None, None, None)


def main() -> None:
    from triton.testing import do_bench

    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", nargs="+", default=["32768/512", "8192/512"])
    p.add_argument("--chunks", type=int, nargs="+", default=[1, 3, 7], help="key chunks of the global rows' context")
    p.add_argument("--global-tokens", type=int, default=512)
    p.add_argument("--heads", type=int, default=32)
    args = p.parse_args()
    H, D, G = args.heads, 128, args.global_tokens
    flex = torch.compile(flex_attention, dynamic=False)
    bench = lambda fn: do_bench(fn, warmup=25, rep=100, return_mode="median")  # noqa: E731
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}; H={H} D={D} global={G} bf16 B=1")
    print("| shape | variant | fwd ms | fwd+bwd ms | fwd x | fwd+bwd x | max out diff | max grad diff |\n|---|---|---|---|---|---|---|---|")
    for shape in args.shapes:
        T, bs = map(int, shape.split("/"))
        Lc = T - G
        q, k, v = (torch.randn(1, T, H, D, device="cuda", dtype=torch.bfloat16).transpose(1, 2).requires_grad_(True)
                   for _ in range(3))
        g = torch.randn(1, T, H, D, device="cuda", dtype=torch.bfloat16)

        def timed(call):  # (fwd ms, fwd+bwd ms) of call() -> [1, T, H, D]
            def fb():
                torch.autograd.grad(call(), (q, k, v), g)
            with torch.no_grad():
                f = bench(call)
            return f, bench(fb)

        def dense():
            with sdpa_kernel([SDPBackend.CUDNN_ATTENTION]):
                return F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2)
        base = timed(dense)
        print(f"| {shape} | dense causal cuDNN | {base[0]:.3f} | {base[1]:.3f} | 1.00x | 1.00x | - | - |", flush=True)
        ids = torch.cat([torch.arange(Lc, device="cuda") // bs, torch.full((G,), -1, device="cuda")])
        bm = create_block_mask(lambda b, h, qi, ki: (ki <= qi) & ((ids[qi] < 0) | (ids[qi] == ids[ki])), 1, None, T, T,
                               device="cuda")
        flex_call = lambda: flex(q, k, v, block_mask=bm).transpose(1, 2)  # noqa: E731
        ref = flex_call()
        ref_grads = torch.autograd.grad(ref, (q, k, v), g)
        f, fb = timed(flex_call)
        print(f"| {shape} | flex | {f:.3f} | {fb:.3f} | {base[0] / f:.2f}x | {base[1] / fb:.2f}x | - | - |", flush=True)
        for nc in args.chunks:
            if Lc % nc:
                continue
            call = lambda nc=nc: CudnnBlockAttention.apply(q, k, v, bs, G, nc)  # noqa: E731
            try:
                out = call()
                grads = torch.autograd.grad(out, (q, k, v), g)
                d_out = float((out.float() - ref.float()).abs().max())
                d_grad = max(float((a.float() - b.float()).abs().max()) for a, b in zip(grads, ref_grads))
                f, fb = timed(call)
                print(f"| {shape} | cuDNN split, {nc} key chunk(s) | {f:.3f} | {fb:.3f} | {base[0] / f:.2f}x | "
                      f"{base[1] / fb:.2f}x | {d_out:.4f} | {d_grad:.4f} |", flush=True)
            except Exception as e:  # noqa: BLE001 - a prototype: report and go on
                print(f"| {shape} | cuDNN split, {nc} chunk(s) | error {type(e).__name__}: {str(e)[:300]} |", flush=True)
        del q, k, v, g, ref, ref_grads
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
