"""The block layout: the one definition of who attends to whom.

A packed sample is context blocks ``B_0 .. B_{n-1}`` followed by one global block ``G``::

    [s s B_0 tokens][s s B_1 tokens] ... [s s B_{n-1} tokens][G tokens][pad]
     ^ sink slots (k per block, learned embeddings owned by the model)

* a token of an (isolated) context block attends causally to earlier tokens of its own block,
  its block's sinks included;
* a token of ``G`` -- or of a *released* block (block dropout) -- attends causally to every
  earlier token;
* padding attends to nothing and is attended by nothing.

Every attention backend, loss and KV cache reads the layout built here, so the training mask and
inference-time cache reuse are the same function.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace

import torch

from lit_block.host_copies import to_device

GLOBAL_BLOCK = -1  # block id of global-block tokens (and of padding)


@dataclass(frozen=True)
class BlockLayout:
    """A batch of packed samples, sinks included. All tensors are ``[B, T]`` unless noted."""

    input_ids: torch.Tensor  # token ids; sink slots hold a placeholder id (the model swaps in sink embeddings)
    block_ids: torch.Tensor  # context block index >= 0, GLOBAL_BLOCK for global tokens and padding
    position_ids: torch.Tensor  # positions in the packed sequence (RoPE only sees differences)
    attention_mask: torch.Tensor  # bool, False on padding
    sink_mask: torch.Tensor  # bool, True on sink slots
    released: torch.Tensor  # bool [B, N]: context block i of sample b is released to full attention
    token_index: torch.Tensor  # long [B, S]: packed position of each caller token (aligns logits back)
    num_sinks: int = 0

    @property
    def batch_size(self) -> int:
        return self.input_ids.shape[0]

    @property
    def seq_len(self) -> int:
        return self.input_ids.shape[1]

    def query_is_global(self) -> torch.Tensor:
        """``[B, T]`` bool: rows that attend to every earlier token (global and released blocks)."""
        in_block = self.block_ids >= 0
        if self.released.shape[1] == 0:
            return ~in_block
        released_token = self.released.gather(1, self.block_ids.clamp(min=0)) & in_block
        return ~in_block | released_token

    def dense_mask(self) -> torch.Tensor:
        """``[B, 1, T, T]`` bool, True where query row may attend to key column: the contract."""
        T = self.seq_len
        idx = torch.arange(T, device=self.block_ids.device)
        causal = idx[None, :, None] >= idx[None, None, :]  # [1, T, T]
        same_block = self.block_ids[:, :, None] == self.block_ids[:, None, :]
        valid = self.attention_mask
        allowed = causal & (self.query_is_global()[:, :, None] | same_block)
        allowed = allowed & valid[:, None, :] & valid[:, :, None]
        # padded rows see only themselves so the softmax stays finite; their outputs are never read
        allowed = allowed | (torch.eye(T, dtype=torch.bool, device=idx.device) & ~valid[:, :, None])
        return allowed[:, None]

    def with_released(self, released: torch.Tensor) -> BlockLayout:
        """The same layout with another set of released blocks (block dropout)."""
        released = released.to(dtype=torch.bool, device=self.block_ids.device)
        if released.shape != self.released.shape:
            raise ValueError(f"released has shape {tuple(released.shape)}, expected {tuple(self.released.shape)}")
        return replace(self, released=released)

    def to(self, device: torch.device | str) -> BlockLayout:
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        moved = {k: to_device(v, device) if isinstance(v, torch.Tensor) else v for k, v in moved.items()}
        return BlockLayout(**moved)


def attended_pairs(block_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention work of a batch of caller tokens, as counts of (query, key) pairs.

    Args:
        block_ids: ``[B, S]`` context block per token, ``-1`` for the global block.
        attention_mask: ``[B, S]``, 0 on padding.

    Returns:
        ``(block, full)``: pairs attended under block attention (no released blocks) and under full
        causal attention; ``block / full`` is the fraction of attention work block attention does.
    """
    valid = torch.ones_like(block_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    position = torch.cumsum(valid.long(), dim=1) - 1  # index among the sample's real tokens
    prev = torch.cat([torch.full_like(block_ids[:, :1], GLOBAL_BLOCK - 1), block_ids[:, :-1]], dim=1)
    starts = torch.where(block_ids != prev, position, torch.zeros_like(position))
    block_start = torch.cummax(starts, dim=1).values  # where the token's block starts
    own = torch.where(block_ids >= 0, position - block_start + 1, position + 1)  # keys each query sees
    return (own * valid).sum(), ((position + 1) * valid).sum()


def _order_violations(block_ids: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """``[B, S]`` bool: valid tokens that break "context blocks 0, 1, 2, ... as contiguous runs, then the global
    block", computed for the whole batch at once (no host sync; the caller reads ``.any()`` once)."""
    context = valid & (block_ids >= 0)
    # the largest context id among earlier valid tokens (-1 before any): a token must repeat it or add one
    earlier = torch.cummax(torch.where(context, block_ids, -1), dim=1).values
    earlier = torch.cat([torch.full_like(earlier[:, :1], -1), earlier[:, :-1]], dim=1)
    step = block_ids - earlier
    out_of_order = context & (step != 0) & (step != 1)
    # a context token after a valid global token
    seen_global = torch.cummax((valid & (block_ids < 0)).to(torch.int8), dim=1).values.bool()
    return out_of_order | (context & seen_global)


def _raise_block_order_error(block_ids: torch.Tensor, valid: torch.Tensor) -> None:
    """The error for the first sample that breaks the order (``_order_violations`` found one)."""
    for b in range(block_ids.shape[0]):
        ids = block_ids[b][valid[b]]
        context = ids >= 0
        if context.any():
            ctx = ids[context]
            if ctx[0] != 0:
                raise ValueError(f"sample {b}: context blocks must be numbered from 0, first is {int(ctx[0])}")
            step = ctx[1:] - ctx[:-1]
            if ((step != 0) & (step != 1)).any():
                bad = int(ctx[1:][(step != 0) & (step != 1)][0])
                raise ValueError(
                    f"sample {b}: context block ids must be contiguous runs 0, 1, 2, ... in order; "
                    f"found block {bad} out of order (an empty or interleaved block)"
                )
            # a context token after the first global token breaks "blocks first, then G"
            first_global = torch.nonzero(~context)
            if len(first_global) and context[int(first_global[0]) :].any():
                raise ValueError(f"sample {b}: a context-block token follows a global-block token")


def layout_from_tokens(
    input_ids: torch.Tensor,
    block_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    num_sinks: int = 0,
    released: torch.Tensor | None = None,
    sink_token_id: int = 0,
    max_length: int | None = None,
) -> BlockLayout:
    """Insert ``num_sinks`` sink slots at the start of every context block of a batch.

    Args:
        input_ids: ``[B, S]`` token ids.
        block_ids: ``[B, S]`` context block index per token, ``-1`` for global tokens.
        attention_mask: ``[B, S]``, 0 on padding (default: no padding).
        num_sinks: sink slots per context block (0 keeps the sequence as it is).
        released: ``[B, N]`` bool, blocks released to full attention (default: none).
        sink_token_id: placeholder id written into sink slots.
        max_length: refuse packed samples longer than this.

    Returns:
        A :class:`BlockLayout` of length ``S + num_sinks * N``, ``N`` the most blocks in a sample.
    """
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be [batch, seq], got shape {tuple(input_ids.shape)}")
    if block_ids.shape != input_ids.shape:
        raise ValueError(
            f"block_ids shape {tuple(block_ids.shape)} does not match input_ids shape {tuple(input_ids.shape)}"
        )
    if attention_mask is not None and attention_mask.shape != input_ids.shape:
        raise ValueError(
            f"attention_mask shape {tuple(attention_mask.shape)} does not match input_ids shape {tuple(input_ids.shape)}"
        )
    if num_sinks < 0:
        raise ValueError(f"num_sinks must be >= 0, got {num_sinks}")
    device = input_ids.device
    B, S = input_ids.shape
    valid = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    block_ids = torch.where(valid, block_ids.long(), GLOBAL_BLOCK)  # padding never belongs to a block
    # one host sync for the whole batch (a GPU batch used to pay several per sample here): any violation, most blocks
    violated, max_id = torch.stack([_order_violations(block_ids, valid).any().long(), block_ids.max()]).tolist() \
        if block_ids.numel() else (0, -1)
    if violated:
        _raise_block_order_error(block_ids, valid)
    n_blocks = max_id + 1
    if released is None:
        released = torch.zeros(B, n_blocks, dtype=torch.bool, device=device)
    released = released.to(device=device, dtype=torch.bool)
    if released.dim() != 2 or released.shape[0] != B or released.shape[1] < n_blocks:
        raise ValueError(f"released must be [batch={B}, blocks>={n_blocks}], got shape {tuple(released.shape)}")

    # every token moves right by the sinks of the blocks that start at or before it
    started = torch.cummax(block_ids, dim=1).values + 1  # blocks started so far, per token
    token_index = torch.arange(S, device=device)[None, :] + num_sinks * started
    T = S + num_sinks * n_blocks
    if max_length is not None and T > max_length:
        raise ValueError(
            f"packed sample has {T} tokens ({S} tokens + {num_sinks} sinks x {n_blocks} blocks), "
            f"over max_length={max_length}"
        )

    out_ids = torch.full((B, T), sink_token_id, dtype=input_ids.dtype, device=device)
    out_blocks = torch.full((B, T), GLOBAL_BLOCK, dtype=torch.long, device=device)
    out_valid = torch.zeros(B, T, dtype=torch.bool, device=device)
    out_sink = torch.zeros(B, T, dtype=torch.bool, device=device)
    out_ids.scatter_(1, token_index, input_ids)
    out_blocks.scatter_(1, token_index, block_ids)
    out_valid.scatter_(1, token_index, valid)

    if num_sinks > 0:
        # the first token of each block marks where its sinks go: the num_sinks slots right before it
        prev = torch.cat([torch.full_like(block_ids[:, :1], GLOBAL_BLOCK), block_ids[:, :-1]], dim=1)
        first = (block_ids >= 0) & (block_ids != prev)
        b_idx, t_idx = torch.nonzero(first, as_tuple=True)
        for j in range(num_sinks):
            slot = token_index[b_idx, t_idx] - num_sinks + j
            out_blocks[b_idx, slot] = block_ids[b_idx, t_idx]
            out_valid[b_idx, slot] = True
            out_sink[b_idx, slot] = True

    positions = torch.arange(T, device=device).expand(B, T)
    return BlockLayout(
        input_ids=out_ids,
        block_ids=out_blocks,
        position_ids=positions,
        attention_mask=out_valid,
        sink_mask=out_sink,
        released=released,
        token_index=token_index,
        num_sinks=num_sinks,
    )


def pack_tokens(context_blocks: Sequence[Sequence[int]], global_block: Sequence[int]) -> tuple[list[int], list[int]]:
    """Concatenate blocks into ``(input_ids, block_ids)`` lists, checking each block is non-empty."""
    if len(global_block) == 0:
        raise ValueError("the global block is empty: every packed sample ends with one (question, answer, continuation)")
    input_ids: list[int] = []
    block_ids: list[int] = []
    for i, block in enumerate(context_blocks):
        if len(block) == 0:
            raise ValueError(f"context block {i} is empty")
        input_ids.extend(int(t) for t in block)
        block_ids.extend([i] * len(block))
    input_ids.extend(int(t) for t in global_block)
    block_ids.extend([GLOBAL_BLOCK] * len(global_block))
    return input_ids, block_ids


def pack_sample(
    context_blocks: Sequence[Sequence[int]],
    global_block: Sequence[int],
    num_sinks: int = 0,
    released: Sequence[bool] | None = None,
    max_length: int | None = None,
    sink_token_id: int = 0,
) -> BlockLayout:
    """Build the layout of one packed sample (batch of 1) from token id lists."""
    if num_sinks < 0:
        raise ValueError(f"num_sinks must be >= 0, got {num_sinks}")
    if released is not None and len(released) != len(context_blocks):
        raise ValueError(f"released has {len(released)} entries for {len(context_blocks)} context blocks")
    ids, blocks = pack_tokens(context_blocks, global_block)
    released_t = None if released is None else torch.tensor([list(released)], dtype=torch.bool).reshape(1, -1)
    return layout_from_tokens(
        torch.tensor([ids]),
        torch.tensor([blocks]),
        num_sinks=num_sinks,
        released=released_t,
        sink_token_id=sink_token_id,
        max_length=max_length,
    )


# ---------------------------------------------------------------- the layout of cached blocks (serving)


def isolated_blocks(blocks: Sequence[Sequence[int]], num_sinks: int = 0, sink_token_id: int = 0) -> BlockLayout:
    """The layout a block's KV cache is computed under: each block alone, one sample per block.

    A context block attends only to itself and its sinks, so its keys and values do not depend on
    what comes before it: each block is packed as the one context block of its own sample (no global
    block), its ``num_sinks`` sinks first, at local positions ``0 .. num_sinks + L - 1``. Placed at
    its offset in a prompt (``block_spans``) and rotated there, it is exactly that block of the
    prompt's :func:`layout_from_tokens`. Shorter blocks are padded at the end (``attention_mask``
    False there): under causal attention no real token sees the padding that follows it.
    """
    if not blocks:
        raise ValueError("no blocks to lay out")
    for i, block in enumerate(blocks):
        if len(block) == 0:
            raise ValueError(f"context block {i} is empty")
    longest = max(len(b) for b in blocks)
    ids = torch.full((len(blocks), longest), sink_token_id, dtype=torch.long)
    valid = torch.zeros(len(blocks), longest, dtype=torch.bool)
    for i, block in enumerate(blocks):
        ids[i, : len(block)] = torch.as_tensor(list(block), dtype=torch.long)
        valid[i, : len(block)] = True
    return layout_from_tokens(ids, torch.zeros_like(ids), valid, num_sinks=num_sinks, sink_token_id=sink_token_id)


def block_spans(block_lengths: Sequence[int], num_sinks: int = 0) -> tuple[list[tuple[int, int]], int]:
    """Where each context block lies in a packed sample, without building it: ``(start, length)``
    per block (``length`` counts its sinks, which come first) and the position where the global
    block starts -- the positions :func:`layout_from_tokens` gives the same blocks."""
    if num_sinks < 0:
        raise ValueError(f"num_sinks must be >= 0, got {num_sinks}")
    spans, start = [], 0
    for i, n in enumerate(block_lengths):
        if n <= 0:
            raise ValueError(f"context block {i} is empty")
        spans.append((start, num_sinks + n))
        start += num_sinks + n
    return spans, start


def sink_slots(layout: BlockLayout) -> torch.Tensor:
    """``[B, T]`` long: which of the model's sink embeddings each sink slot takes (slot ``j`` of a
    block's run takes sink ``j``), ``-1`` on every other position."""
    if layout.num_sinks == 0:
        return torch.full_like(layout.block_ids, -1)
    rank = torch.cumsum(layout.sink_mask.long(), dim=1) - 1  # every block has exactly num_sinks sinks
    return torch.where(layout.sink_mask, rank % layout.num_sinks, torch.full_like(rank, -1))


def place_sinks(embeds: torch.Tensor, layout: BlockLayout, sink_embeddings: torch.Tensor) -> torch.Tensor:
    """``embeds [B, T, hidden]`` of ``layout.input_ids`` with the model's sink embeddings (``[k, hidden]``)
    in the sink slots, as :func:`sink_slots` assigns them: the training forward and the block store's
    prefill both build their inputs here, so a cached block starts with exactly the sinks it trained with."""
    if layout.num_sinks == 0:
        return embeds
    if sink_embeddings.shape[0] != layout.num_sinks:
        raise ValueError(f"the layout has {layout.num_sinks} sinks per block, the model {sink_embeddings.shape[0]}")
    sinks = sink_embeddings.to(embeds.dtype)[sink_slots(layout).clamp(min=0)]
    return torch.where(layout.sink_mask[..., None], sinks, embeds)
