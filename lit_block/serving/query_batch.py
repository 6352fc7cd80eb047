"""The queries of several answers prefilled in one forward, each over its own assembled block caches.

Once an admission batch's blocks are fetched, each answer still has to run its query (the global block)
over its cache before its first token exists. One after another, the k-th answer's first token waits
for k - 1 other forwards, each of which reads all the weights; on a GPU each is also a thousand or more
kernel launches. Here the answers are rows of one slab, every layer ``[rows, kv_heads, C + Q, head_dim]``:

    row r:  | left padding | its context (ctx_r) | query padding | its query (q_r) |
            0          C - ctx_r                 C         C + Q - q_r         C + Q

Contexts end at column ``C`` (the longest), queries end at column ``C + Q`` (the longest query), so
``logits_to_keep=1`` is every row's last real query token. A ``[rows, Q, C + Q]`` key mask lets a real
query token see its row's context and its own earlier query tokens (``padded_rows_attention``); a
padding token sees only itself. Positions are each row's own (``ctx_r + i``), so RoPE is what the row
computes alone. The queries' new keys and values are copied back into each answer's own cache, which
then holds exactly what :meth:`Generation.prefill` leaves there, up to the order of floating-point sums.
"""

from __future__ import annotations

import torch

from lit_block.serving.generation import Generation
from lit_block.serving.prompt_cache import preallocated_cache

PAD_TOKEN = 0  # the input of a padding slot: any id, its output is never read


def chunks(generations: list[Generation], max_tokens: int) -> list[list[Generation]]:
    """Groups whose slab holds at most ``max_tokens`` row-columns (rows x (longest context + longest query)), the
    answers sorted by context length first, so that each group pads little; an answer too long for the budget
    forms a group alone."""
    groups: list[list[Generation]] = []
    for g in sorted(generations, key=lambda g: g.context):
        group = groups[-1] if groups else None
        if group:
            width = g.context + max(len(x.query_ids) for x in [*group, g])  # sorted: g's context is the longest
            if (len(group) + 1) * width <= max_tokens:
                group.append(g)
                continue
        groups.append([g])
    return groups


@torch.no_grad()
def prefill_queries(model, generations: list[Generation]) -> list[torch.Tensor]:
    """Run every answer's query over its assembled cache in one forward (see the module doc): each answer's
    first-token logits ``[vocab]`` (float32), in order; each cache then holds its query too."""
    first = generations[0].cache.layers
    like = first[0].buffer_keys  # [1, kv_heads, capacity, head_dim]
    rows, layers = len(generations), len(first)
    context = max(g.context for g in generations)
    width = max(len(g.query_ids) for g in generations)
    # zeros: masked columns still enter the attention's products (with weight 0), so they must be finite
    keys = like.new_zeros(layers, rows, like.shape[1], context + width, like.shape[3])
    values = torch.zeros_like(keys)
    ids = torch.full((rows, width), PAD_TOKEN, dtype=torch.long)
    positions = torch.zeros(rows, width, dtype=torch.long)
    mask = torch.eye(width, dtype=torch.bool).repeat(rows, 1, 1)  # padding sees only itself
    mask = torch.cat([torch.zeros(rows, width, context, dtype=torch.bool), mask], dim=2)
    for r, g in enumerate(generations):
        n, q = g.context, len(g.query_ids)
        for i, layer in enumerate(g.cache.layers):
            keys[i, r, :, context - n : context] = layer.keys[0]
            values[i, r, :, context - n : context] = layer.values[0]
        pad = width - q
        ids[r, pad:] = torch.tensor(g.query_ids)
        positions[r, pad:] = torch.arange(n, n + q)
        # query token i (slot pad + i) sees the row's context and query tokens 0..i
        mask[r, pad:, context - n : context] = True
        mask[r, pad:, context + pad :] = torch.ones(q, q, dtype=torch.bool).tril()
    device = like.device
    cache = preallocated_cache(list(zip(keys, values)), context)
    logits = model.model(input_ids=ids.to(device), position_ids=positions.to(device), past_key_values=cache,
                         use_cache=True, logits_to_keep=1, key_mask=mask.to(device)).logits[:, -1].float()
    for r, g in enumerate(generations):
        n, q = g.context, len(g.query_ids)
        for i, layer in enumerate(g.cache.layers):  # the query's keys and values, after the context
            layer.buffer_keys[0, :, n : n + q] = keys[i, r, :, context + width - q :]
            layer.buffer_values[0, :, n : n + q] = values[i, r, :, context + width - q :]
            layer.length = n + q
            layer._expose()
    return list(logits.unbind(0))
