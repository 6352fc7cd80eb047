"""Random block layouts for property tests, and the contract written as a plain per-row loop."""

from __future__ import annotations

import random

import torch

from lit_block.layout import BlockLayout, layout_from_tokens, pack_tokens


def random_layout(seed: int, batch: int = 2, num_sinks: int = 0, max_blocks: int = 5, max_block: int = 9,
                  max_global: int = 6, release_p: float = 0.3, pad: bool = True, vocab: int = 100) -> BlockLayout:
    """Uneven blocks (length-1 ones too), some released, right padding between samples."""
    rng = random.Random(seed)
    samples = []
    for _ in range(batch):
        n = rng.randint(1, max_blocks)
        blocks = [[rng.randrange(vocab) for _ in range(rng.choice([1, rng.randint(1, max_block)]))] for _ in range(n)]
        glob = [rng.randrange(vocab) for _ in range(rng.randint(1, max_global))]
        samples.append((pack_tokens(blocks, glob), [rng.random() < release_p for _ in range(n)]))
    S = max(len(ids) for (ids, _), _ in samples) + (2 if pad else 0)
    N = max(len(r) for _, r in samples)
    input_ids = torch.zeros(batch, S, dtype=torch.long)
    block_ids = torch.full((batch, S), -1)
    mask = torch.zeros(batch, S, dtype=torch.long)
    released = torch.zeros(batch, N, dtype=torch.bool)
    for b, ((ids, blk), rel) in enumerate(samples):
        input_ids[b, : len(ids)] = torch.tensor(ids)
        block_ids[b, : len(ids)] = torch.tensor(blk)
        mask[b, : len(ids)] = 1
        released[b, : len(rel)] = torch.tensor(rel)
    return layout_from_tokens(input_ids, block_ids, mask, num_sinks=num_sinks, released=released)


def allowed_keys(layout: BlockLayout, b: int, t: int) -> list[int]:
    """The contract, read row by row: which keys query ``t`` of sample ``b`` sees."""
    valid = layout.attention_mask[b].tolist()
    blocks = layout.block_ids[b].tolist()
    if not valid[t]:
        return []
    blk = blocks[t]
    released = blk >= 0 and bool(layout.released[b, blk])
    sees_all = blk < 0 or released
    return [j for j in range(t + 1) if valid[j] and (sees_all or blocks[j] == blk)]


def naive_attention(q, k, v, layout: BlockLayout, scale: float) -> torch.Tensor:
    """``[B, H, T, D]`` inputs -> ``[B, T, H, D]``, a softmax per row over its allowed keys; padded rows 0."""
    B, H, T, D = q.shape
    groups = H // k.shape[1]
    out = torch.zeros(B, T, H, D, dtype=q.dtype)
    for b in range(B):
        for t in range(T):
            keys = allowed_keys(layout, b, t)
            if not keys:
                continue
            for h in range(H):
                kv = h // groups
                scores = (k[b, kv, keys] @ q[b, h, t]) * scale
                out[b, t, h] = torch.softmax(scores, dim=0) @ v[b, kv, keys]
    return out
