"""Two ways to put segmenter-like (uneven, per-row) context blocks on cuDNN, probed on their own (CUDA only).

    python scripts/uneven_cudnn_probe.py ragged    # cuDNN's ragged (cum_seq) attention: exactness, speed, plan builds
    python scripts/uneven_cudnn_probe.py buckets   # blocks padded to length buckets, one batched dense call per bucket

Layout: B=4 rows of T tokens, 32 query heads, 8 key/value heads, d=128, bf16; context blocks of 128-896 tokens (mean
512, drawn per row as ``lit-block bench attention --uneven`` does), then a 512-token global run. Only the blocks'
causal part is timed (the global rows' parts are a few dense calls either way), against dense causal attention
over the whole rows in the same process. Results and what they decided: docs/attention_notes.md.
"""

from __future__ import annotations

import sys
import time

import torch
import torch.nn.functional as F

aten = torch.ops.aten
DEVICE = "cuda"
B, H, H_KV, D = 4, 32, 8, 128


def block_lengths(total: int, mean: int, gen: torch.Generator) -> list[int]:
    """Lengths drawn uniformly from mean/4 to 7/4 mean, summing to ``total`` (the last one cut, at least 2)."""
    out: list[int] = []
    while sum(out) < total:
        out.append(int(torch.randint(mean // 4, mean * 7 // 4 + 1, (1,), generator=gen)))
    out[-1] -= sum(out) - total
    if out[-1] < 2:
        out[-2] += out.pop()
    return out


def synced_ms(fn, n: int = 5) -> float:
    fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(n):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / n * 1e3


def dense_causal_fwd_bwd(T: int) -> float:
    q = torch.randn(B, H, T, D, device=DEVICE, dtype=torch.bfloat16, requires_grad=True)
    k, v = (torch.randn(B, H_KV, T, D, device=DEVICE, dtype=torch.bfloat16, requires_grad=True) for _ in range(2))

    def step():
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        out.backward(torch.ones_like(out))
    return synced_ms(step)


def ragged(gen: torch.Generator) -> None:
    """Every block of every row one sequence of a packed ``[tokens, heads, dim]`` call (``cum_seq``: no copies)."""
    def call(q, k, v, lengths):
        cum = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device=DEVICE)
        return aten._cudnn_attention_forward(q, k, v, None, cum, cum, max(lengths), max(lengths), True, 0.0, True,
                                             False), cum

    lengths = block_lengths(2048, 128, gen)  # exactness against one causal SDPA call per block, fp32
    q = torch.randn(2048, 8, D, device=DEVICE, dtype=torch.bfloat16, requires_grad=True)
    k, v = (torch.randn(2048, 8, D, device=DEVICE, dtype=torch.bfloat16, requires_grad=True) for _ in range(2))
    (out, lse, *_, seed, offset, _), cum = call(q, k, v, lengths)
    dout = torch.randn_like(out)
    m = max(lengths)
    grads = aten._cudnn_attention_backward(dout, q, k, v, out, lse, seed, offset, None, cum, cum, m, m, 0.0, True)
    pieces = [F.scaled_dot_product_attention(*(x[s:s + n].transpose(0, 1)[None].float() for x in (q, k, v)),
                                             is_causal=True)[0].transpose(0, 1)
              for s, n in zip(cum[:-1].tolist(), lengths)]
    want = torch.cat(pieces)
    want_grads = torch.autograd.grad(want, (q, k, v), dout.float())
    errors = [(a.float() - b).abs().max().item() for a, b in zip((out, *grads), (want, *want_grads))]
    print("ragged, 2048 tokens in blocks of ~128, max abs error out / dq / dk / dv: "
          + " / ".join(f"{e:.1e}" for e in errors))
    for T in (8192, 32768):
        lengths = [n for _ in range(B) for n in block_lengths(T - 512, 512, gen) + [512]]
        q = torch.randn(B * T, H, D, device=DEVICE, dtype=torch.bfloat16)
        k, v = (torch.randn(B * T, H_KV, D, device=DEVICE, dtype=torch.bfloat16) for _ in range(2))
        forward = synced_ms(lambda: call(q, k, v, lengths))
        print(f"ragged, T={T}: forward {forward:.1f} ms; dense causal forward+backward {dense_causal_fwd_bwd(T):.1f} ms")
        for _ in range(3):  # a new layout of the same size: does cuDNN build a new plan?
            lengths = [n for _ in range(B) for n in block_lengths(T - 512, 512, gen) + [512]]
            first = synced_ms(lambda: call(q, k, v, lengths), n=1)
            print(f"  new layout, longest block {max(lengths)}: first call {first:.1f} ms")


def buckets(gen: torch.Generator) -> None:
    """Blocks gathered into ``[blocks, length, heads, dim]`` per length bucket (padded by repeating the last token,
    which only padded rows see), one batched causal call per bucket, outputs scattered back; autograd's backward."""
    for T in (8192, 32768):
        dense = dense_causal_fwd_bwd(T)
        for quantum in (64, 128, 256):
            spans = []
            for b in range(B):
                start = b * T
                for n in block_lengths(T - 512, 512, gen):
                    spans.append((start, n))
                    start += n
            by_length: dict[int, list[tuple[int, int]]] = {}
            for s, n in spans:
                by_length.setdefault(-(-n // quantum) * quantum, []).append((s, n))
            plans = []
            for length, members in sorted(by_length.items()):
                index = torch.tensor([[s + min(j, n - 1) for j in range(length)] for s, n in members], device=DEVICE)
                real = torch.tensor([[j < n for j in range(length)] for _, n in members], device=DEVICE)
                plans.append((index, real, index[real]))
            q = torch.randn(B * T, H, D, device=DEVICE, dtype=torch.bfloat16, requires_grad=True)
            k, v = (torch.randn(B * T, H_KV, D, device=DEVICE, dtype=torch.bfloat16, requires_grad=True)
                    for _ in range(2))

            def step():
                out = q.new_zeros(B * T, H, D)
                for index, real, rows in plans:
                    qb, kb, vb = (x[index].transpose(1, 2) for x in (q, k, v))  # [blocks, heads, length, dim]
                    ob = F.scaled_dot_product_attention(qb, kb, vb, is_causal=True, enable_gqa=True)
                    out = out.index_copy(0, rows, ob.transpose(1, 2)[real])
                out.backward(torch.ones_like(out))
            blocks = synced_ms(step)
            work = sum(n * n for _, n in spans)
            padded = sum(len(m) * length * length for length, m in by_length.items())
            print(f"buckets, T={T}, multiples of {quantum}: {len(by_length)} buckets, padded work x{padded / work:.2f}; "
                  f"blocks forward+backward {blocks:.1f} ms, dense causal {dense:.1f} ms: {dense / blocks:.1f}x "
                  f"(ideal for the blocks alone {B * T * T / work:.0f}x)")


if __name__ == "__main__":
    {"ragged": ragged, "buckets": buckets}[sys.argv[1]](torch.Generator().manual_seed(0))
