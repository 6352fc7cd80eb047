"""Decoding many answers with one forward per step: their caches as rows of one left-padded slab.

An answer's cache holds its prompt and the tokens decoded so far at positions ``0 .. n-1``. Rows of
different lengths are aligned at the right: row ``r`` fills columns ``C - n_r .. C - 1`` of every
layer's ``[rows, kv_heads, capacity, head_dim]`` buffer, so each step writes every row's new key at
the same column ``C`` (transformers' preallocated-cache update), a 2-D mask hides each row's left
padding, and ``position_ids`` give each row its own RoPE position -- as transformers' own batched
generation does with left padding. What each row computes is what ``Generation.run`` computes for it
alone, up to the order of floating-point sums in batched matrix products.

A row joins with its prefilled cache copied into a free row; the slab is rebuilt (live rows copied,
right-aligned anew, with half as many rows and as many columns again to spare) when there is no free
row, when a joining cache is longer than ``C`` (a rebuild leaves an eighth of the longest row as
headroom for that), when the capacity would not hold every row's remaining tokens, or when left
padding has grown past half of it. Finished answers free their rows;
a free row still computes (its mask sees only the new column, so its values stay finite) until a
rebuild drops it.
"""

from __future__ import annotations

import torch

from lit_block.serving.generation import Generation
from lit_block.serving.prompt_cache import preallocated_cache

PAD_TOKEN = 0  # the input of a freed row: any id, its output is never read
JOIN_HEADROOM = 8  # a rebuilt slab's column sits longest // JOIN_HEADROOM (an eighth) past its longest row


class DecodeBatch:
    """The answers decoding together (see the module doc)."""

    def __init__(self, model):
        self.model = model
        self.rows: list[Generation | None] = []  # row -> its answer, None when free
        self.keys: torch.Tensor | None = None  # [layers, rows, kv_heads, capacity, head_dim]
        self.values: torch.Tensor | None = None
        self.column = 0  # C: where the next step writes; every live row ends just before it
        self.rebuilds = 0  # slabs built so far (each copies every live answer's cache): a server's metric

    def clear(self) -> None:
        self.rows, self.keys, self.values, self.column = [], None, None, 0

    @torch.no_grad()
    def step(self, generations: list[Generation], tokens: list[int]) -> None:
        """Run each answer's chosen token in one forward; each answer gets its next logits (``Generation.accept``)."""
        self._place(generations)
        device = self.keys.device
        row_of = {id(g): r for r, g in enumerate(self.rows) if g is not None}
        n_rows, column = len(self.rows), self.column
        ids = torch.full((n_rows, 1), PAD_TOKEN, dtype=torch.long)
        positions = torch.zeros(n_rows, 1, dtype=torch.long)
        mask = torch.zeros(n_rows, column + 1, dtype=torch.bool)
        mask[:, column] = True  # every row sees its new token (a freed row only that): no row softmaxes over nothing
        for g, token in zip(generations, tokens):
            r = row_of[id(g)]
            ids[r, 0], positions[r, 0] = token, g.position
            mask[r, column - g.position :] = True
        cache = preallocated_cache(list(zip(self.keys, self.values)), column)
        # key_mask: lit_block's attention reads the slab once per layer (HF's 2-D mask path expands the GQA heads)
        logits = self.model.model(input_ids=ids.to(device), position_ids=positions.to(device),
                                  past_key_values=cache, use_cache=True, logits_to_keep=1,
                                  key_mask=mask.to(device)).logits[:, -1].float()
        self.column += 1
        for g in generations:
            g.accept(logits[row_of[id(g)]])

    def _place(self, generations: list[Generation]) -> None:
        """Free the rows of answers no longer decoding, and give new ones a row (rebuilding when needed)."""
        live = {id(g) for g in generations}
        self.rows = [g if g is not None and id(g) in live else None for g in self.rows]
        placed = {id(g) for g in self.rows if g is not None}
        new = [g for g in generations if id(g) not in placed]
        if not new:
            return
        needed = max(g.config.max_new_tokens - len(g.token_ids) for g in generations)  # tokens still to write
        fits = self.keys is not None and all(g.position <= self.column for g in new) \
            and self.column + needed <= self.keys.shape[3] and self.rows.count(None) >= len(new)
        padding = 1 - sum(g.position for g in generations) / (len(generations) * max(self.column, 1))
        if not fits or padding > 0.5:
            self._rebuild(generations, needed)
            return
        free = [r for r, g in enumerate(self.rows) if g is None]
        for g, r in zip(new, free):
            self._copy_in(g, r)

    def _rebuild(self, generations: list[Generation], needed: int) -> None:
        """A slab of the live answers only, right-aligned at the longest, with room for every remaining token."""
        old_keys, old_values, old_rows, old_column = self.keys, self.values, self.rows, self.column
        self.rebuilds += 1
        longest = max(g.position for g in generations)
        # headroom on the left: an answer arriving with a cache up to this much longer joins in place (a RAG server's
        # prompts differ by tens of tokens, and a rebuild copies every row's cache), for attention over that many more
        # masked columns
        self.column = longest + longest // JOIN_HEADROOM
        if old_keys is None:
            first = _cache_layers(next(g for g in generations if g.cache is not None))
            like, layers = first[0].keys, len(first)
        else:
            like, layers = old_keys[0], old_keys.shape[0]
        # room to spare, rows and columns, so that answers arriving later join in place instead of by a rebuild
        rows = len(generations) + max(1, len(generations) // 2)
        shape = (layers, rows, like.shape[-3], self.column + 2 * needed, like.shape[-1])
        # zeros: masked columns still enter the attention's product (with weight 0), so they must be finite
        self.keys = torch.zeros(shape, dtype=like.dtype, device=like.device)
        self.values = torch.zeros_like(self.keys)
        old_row = {id(g): r for r, g in enumerate(old_rows) if g is not None}
        self.rows = [*generations, *[None] * (rows - len(generations))]
        for r, g in enumerate(generations):
            if id(g) in old_row:
                src, n = old_row[id(g)], g.position
                self.keys[:, r, :, self.column - n : self.column] = old_keys[:, src, :, old_column - n : old_column]
                self.values[:, r, :, self.column - n : self.column] = old_values[:, src, :, old_column - n : old_column]
            else:
                self._copy_in(g, r)

    def _copy_in(self, g: Generation, row: int) -> None:
        """An answer's own cache (prompt and decoded tokens so far) into ``row``, ending at the current column."""
        n = g.position
        for i, layer in enumerate(_cache_layers(g)):
            self.keys[i, row, :, self.column - n : self.column] = layer.keys[0, :, :n]
            self.values[i, row, :, self.column - n : self.column] = layer.values[0, :, :n]
        self.rows[row] = g
        g.cache = None  # the slab holds it now


def _cache_layers(g: Generation):
    if g.cache is None:
        raise RuntimeError("an answer joins the decode batch without its cache")
    return g.cache.layers
