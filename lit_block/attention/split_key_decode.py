"""Split-key attention for one new token per row over a masked slab (flash-decoding), for the serving decode step.

SDPA's memory-efficient kernel gives one thread block to each (row, KV head) and walks every key, so a decode slab
of a few rows leaves most of a GPU idle (199 us a layer for one answer of 5k positions on an H100, ~15 us of bytes;
docs/serve.md). Here each (row, KV head) is cut into ``split``-key pieces, one program each: its query heads (the
GQA group, padded to 16 rows for ``tl.dot``) against its keys under the row's mask, with an online softmax; the
pieces' partial sums are then combined by their maxima. A piece that sees no key keeps m = -1e30 and weighs 0.

Exact against ``padded_rows_attention`` in float32 and float16 under Triton's CPU interpreter and in bfloat16 on CUDA
(``tests/test_split_key_decode.py``); ``scripts/split_key_decode_probe.py`` times it against SDPA. The decode step
uses it with ``decode_kernel="split-key"`` (``lit-block serve --decode-kernel``).
"""
import torch
import triton
import triton.language as tl


@triton.jit
def _partial(q_ptr, k_ptr, v_ptr, mask_ptr, acc_ptr, m_ptr, l_ptr, scale, S, k_row, k_head, k_pos, v_row, v_head,
             v_pos, mask_row, KV_HEADS: tl.constexpr,
             G: tl.constexpr, G_PAD: tl.constexpr, D: tl.constexpr, BLOCK_N: tl.constexpr, SPLIT: tl.constexpr,
             N_SPLITS: tl.constexpr, PRECISION: tl.constexpr):
    bh = tl.program_id(0)  # row * KV_HEADS + kv head
    split = tl.program_id(1)
    b = bh // KV_HEADS
    h = bh % KV_HEADS
    g = tl.arange(0, G_PAD)
    d = tl.arange(0, D)
    q = tl.load(q_ptr + (bh * G + g[:, None]) * D + d[None, :], mask=g[:, None] < G, other=0.0)
    m = tl.full((G_PAD,), -1e30, tl.float32)
    l = tl.zeros((G_PAD,), tl.float32)
    acc = tl.zeros((G_PAD, D), tl.float32)
    for start in range(split * SPLIT, split * SPLIT + SPLIT, BLOCK_N):
        n = start + tl.arange(0, BLOCK_N)
        inside = n < S
        seen = tl.load(mask_ptr + b * mask_row + n, mask=inside, other=0) != 0
        if tl.max(seen.to(tl.int32), 0) > 0:  # columns this row does not see: never read
            k = tl.load(k_ptr + b * k_row + h * k_head + n[:, None] * k_pos + d[None, :], mask=inside[:, None],
                        other=0.0)
            v = tl.load(v_ptr + b * v_row + h * v_head + n[:, None] * v_pos + d[None, :], mask=inside[:, None],
                        other=0.0)
            s = tl.dot(q, tl.trans(k), input_precision=PRECISION).to(tl.float32) * scale
            s = tl.where(seen[None, :], s, float("-inf"))
            m_new = tl.maximum(m, tl.max(s, 1))
            p = tl.exp(s - m_new[:, None])
            alpha = tl.exp(m - m_new)
            l = l * alpha + tl.sum(p, 1)
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION).to(tl.float32)
            m = m_new
    out = (bh * N_SPLITS + split) * G_PAD + g
    tl.store(acc_ptr + out[:, None] * D + d[None, :], acc)
    tl.store(m_ptr + out, m)
    tl.store(l_ptr + out, l)


def split_key_attention(query, key, value, key_mask, scaling=None, split=512, block_n=64):
    """``query [B, H, 1, D]``; ``key``/``value [B, Hkv, S, D]`` (any strides but a contiguous last dim: the decode
    slab's views are read in place); ``key_mask [B, S]`` bool -> ``[B, 1, H, D]``."""
    batch, heads, steps, dim = query.shape
    kv_heads, seq = key.shape[1], key.shape[2]
    if key.stride(-1) != 1 or value.stride(-1) != 1:
        raise ValueError("split_key_attention reads keys and values with a contiguous last dimension")
    group = heads // kv_heads * steps
    g_pad = max(16, triton.next_power_of_2(group))
    n_splits = triton.cdiv(seq, split)
    q = query.reshape(batch, kv_heads, group, dim).contiguous()
    mask = key_mask.view(torch.uint8) if key_mask.dtype == torch.bool else key_mask.to(torch.uint8)
    acc = torch.empty(batch * kv_heads, n_splits, g_pad, dim, device=query.device, dtype=torch.float32)
    m = torch.empty(batch * kv_heads, n_splits, g_pad, device=query.device, dtype=torch.float32)
    l = torch.empty_like(m)
    _partial[(batch * kv_heads, n_splits)](q, key, value, mask, acc, m, l, scaling or dim ** -0.5, seq,
                                           key.stride(0), key.stride(1), key.stride(2), value.stride(0),
                                           value.stride(1), value.stride(2), mask.stride(0), kv_heads, group, g_pad,
                                           dim, block_n, split, n_splits,
                                           "ieee" if query.dtype == torch.float32 else "tf32")  # float32: no TF32
    top = m.amax(1, keepdim=True)  # [BH, 1, G_PAD]
    w = torch.exp(m - top)  # splits that saw no key: m = -1e30, weight 0
    out = (acc * w[..., None]).sum(1) / (l * w).sum(1)[..., None]  # [BH, G_PAD, D]
    out = out[:, :group].reshape(batch, kv_heads, group, dim).to(query.dtype)
    return out.reshape(batch, heads, steps, dim).transpose(1, 2).contiguous()
