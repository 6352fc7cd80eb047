"""``BlockKVStore``: each block's KV cache computed once, keyed by content, reused at any position.

    store = BlockKVStore(max_bytes=2 << 30)
    kvs = store.get_many(model, [block_a_ids, block_b_ids])   # prefills what is not cached yet
    cache, length = store.assemble(model, kvs)                 # a transformers cache for the prompt

A block is prefilled alone, with the model's sink tokens in front, at local positions ``0 .. L-1``
(block attention: a context block sees only itself): the layout is ``lit_block.layout.isolated_blocks``,
the one the training mask is built from. Entries are keyed by the block's token ids and the model's
fingerprint (config, tokenizer vocabulary and the weights' content and dtype, sinks included, read
afresh on every lookup), so a cache built by another model or tokenizer, or by this model before its
weights changed, is never returned. A caller whose weights cannot change -- a server -- computes the
fingerprint once and passes it (``fingerprint=``): 40 ms per lookup saved on the 135M model. Least
recently used entries are evicted to stay under ``max_bytes``. ``assemble`` moves each block's keys to
its offset in the prompt (``lit_block.layout.block_spans``, rotated by ``lit_block.serving.rope``) and
writes them into one cache with room for the query and answer.
"""

from __future__ import annotations

import hashlib
import json
from array import array
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import DynamicCache
from transformers.cache_utils import Cache

from lit_block.layout import block_spans, isolated_blocks, place_sinks
from lit_block.serving.prompt_cache import PositionMajorCache, cache_keyword
from lit_block.serving.rope import KeyRerotator, find_rotary_embedding


@dataclass(frozen=True)
class BlockKV:
    """One block's cache at local positions: keys and values ``[length, layers, kv_heads, head_dim]``
    (position-major, so the blocks of a prompt concatenate into one contiguous cache)."""

    key: str  # content key: model fingerprint + token ids
    keys: torch.Tensor
    values: torch.Tensor
    length: int  # cached positions: the model's sinks + the block's tokens

    @property
    def nbytes(self) -> int:
        return 2 * self.keys.numel() * self.keys.element_size()


def model_fingerprint(model) -> str:
    """A digest of what decides a block's cache: config, tokenizer vocabulary, and the content, dtype,
    shape and device of every parameter and buffer (sinks and rotary frequencies included).

    Computed afresh on every call: an edit through ``.data`` (weight averaging, ``vector_to_parameters``)
    does not move a tensor's version counter, so no memo keyed on it can be trusted. Each tensor's bits,
    read as integers, are summed along its rows and along its columns on its own device; only these sums
    travel to the CPU to be hashed. The sums are exact (modular), so a change to any one element, or a swap
    of two, changes them. The cost is two reads of the weights: for the 135M model, about 40 ms on a 2-core
    CPU (a tenth of a 256-token block's prefill), about 12 ms on an H200 (kernel launches).
    """
    h = hashlib.sha256(json.dumps(model.config.to_dict(), sort_keys=True, default=str).encode())
    h.update(_vocab_digest(getattr(model, "tokenizer", None), model).encode())
    sums = []
    with torch.no_grad():
        for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
            h.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}:{tensor.device};".encode())
            sums += _content_sums(tensor)
    if sums:
        h.update(torch.cat(sums).cpu().numpy().tobytes())  # one transfer (and one sync) for the whole model
    return h.hexdigest()[:32]


PAD_SLACK = 1.25  # a prefill batch's padded tokens may exceed its real tokens by a quarter
_SAME_SIZE_INT = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}  # bytes per element -> int dtype


def _content_sums(tensor: torch.Tensor) -> list[torch.Tensor]:
    """The bytes of the row and column sums of the tensor's bit patterns (wrapping integer sums: exact, and
    independent of the order in which a device adds them up)."""
    if tensor.numel() == 0:
        return []  # no content: its shape is already in the digest
    t = tensor.detach()
    if t.is_complex():
        t = torch.view_as_real(t)  # complex128 has no integer of its size (16 bytes); its float parts do
    t = t.contiguous()
    bits = t.view(_SAME_SIZE_INT[t.element_size()])  # the same bytes, read as integers
    grid = bits.reshape(-1, bits.shape[-1]) if bits.dim() else bits.reshape(1, 1)  # rows x last dimension
    # summed in the tensor's own integer width: wraps, so the sums are exact modulo 2**bits on any device;
    # returned as bytes (a view: no extra kernel) so that sums of every width concatenate into one transfer
    return [grid.sum(1, dtype=bits.dtype).view(torch.uint8), grid.sum(0, dtype=bits.dtype).view(torch.uint8)]


def _vocab_digest(tokenizer, model) -> str:
    """The tokenizer vocabulary's digest, memoised on the model while the same tokenizer keeps its size."""
    if tokenizer is None:
        return ""
    memo = getattr(model, "_lit_block_vocab_digest", None)
    if memo is not None and memo[0] is tokenizer and memo[1] == len(tokenizer):  # added tokens change the size
        return memo[2]
    digest = hashlib.sha256(json.dumps(sorted(tokenizer.get_vocab().items())).encode()).hexdigest()
    model._lit_block_vocab_digest = (tokenizer, len(tokenizer), digest)
    return digest


class BlockKVStore:
    """An LRU store of per-block KV caches under a byte budget, shared by any number of models."""

    def __init__(self, max_bytes: int = 1 << 30, max_batch_tokens: int = 1 << 16):
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        if max_batch_tokens <= 0:
            raise ValueError(f"max_batch_tokens must be positive, got {max_batch_tokens}")
        self.max_bytes = max_bytes
        self.max_batch_tokens = max_batch_tokens  # padded tokens per prefill batch: bounds its activations
        self.entries: OrderedDict[str, BlockKV] = OrderedDict()  # oldest first
        self.bytes = 0
        self.hits = self.misses = self.evictions = 0

    # ---------------------------------------------------------------- lookup and prefill

    @staticmethod
    def block_key(fingerprint: str, token_ids: Sequence[int]) -> str:
        return hashlib.sha256(fingerprint.encode() + array("q", token_ids).tobytes()).hexdigest()

    def get(self, model, token_ids: Sequence[int], fingerprint: str | None = None) -> BlockKV:
        """The cache of one block (prefilled now if it is not stored)."""
        return self.get_many(model, [token_ids], fingerprint)[0]

    def get_many(self, model, blocks: Sequence[Sequence[int]], fingerprint: str | None = None) -> list[BlockKV]:
        """Caches of several blocks, in order; misses are prefilled together, in batches of similar length.
        ``fingerprint``: the model's :func:`model_fingerprint`, computed by a caller whose weights are frozen
        (default: computed now, so that an edited model never gets a stale cache)."""
        return [kv for kv, _ in self.fetch(model, blocks, fingerprint)]

    def fetch(self, model, blocks: Sequence[Sequence[int]], fingerprint: str | None = None) -> list[tuple[BlockKV, bool]]:
        """:meth:`get_many`, with each block's flag: True where its cache was already stored (a hit). A missing
        block that occurs twice in one call is prefilled once and counted once."""
        fingerprint = model_fingerprint(model) if fingerprint is None else fingerprint
        keys = [self.block_key(fingerprint, ids) for ids in blocks]
        found: dict[str, BlockKV] = {}
        stored: set[str] = set()
        todo: dict[str, Sequence[int]] = {}  # key -> ids of the blocks to prefill
        hits = 0
        for key, ids in zip(keys, blocks):
            if key in self.entries:  # stored before this call (new caches are inserted after the loop)
                hits += 1
                self.entries.move_to_end(key)  # most recently used
                found[key] = self.entries[key]
                stored.add(key)
            elif key not in todo:  # a miss repeated in one call is prefilled once
                self._check_block(model, ids)  # a refused block leaves the store as it was
                todo[key] = ids
        for batch in self.batches(todo):
            for kv in self.prefill(model, [todo[key] for key in batch], batch):
                found[kv.key] = kv
        # counted once every prefill succeeded: a call that fails (and that the server then retries request by
        # request to find the culprit) leaves the counters as they were
        self.hits += hits
        self.misses += len(todo)
        for key in todo:  # inserted after every prefill: a failing batch inserts nothing
            self._insert(found[key])
        return [(found[key], key in stored) for key in keys]

    def batches(self, todo: dict[str, Sequence[int]]) -> list[list[str]]:
        """Misses grouped for prefill, longest first: a batch is padded to its longest block, so it takes blocks
        while the padding stays under a quarter of its tokens and the whole under ``max_batch_tokens``."""
        order = sorted(todo, key=lambda key: -len(todo[key]))
        batches: list[list[str]] = []
        real = 0
        for key in order:
            n = len(todo[key])
            if batches:
                padded = (len(batches[-1]) + 1) * len(todo[batches[-1][0]])
                if padded <= PAD_SLACK * (real + n) and padded <= self.max_batch_tokens:
                    batches[-1].append(key)
                    real += n
                    continue
            batches.append([key])
            real = n
        return batches

    def _check_block(self, model, ids: Sequence[int]) -> None:
        if len(ids) == 0:
            raise ValueError("a context block is empty")
        limit = getattr(model.config, "max_position_embeddings", None)
        if limit is not None and len(ids) + model.num_sink_tokens > limit:
            raise ValueError(
                f"a context block of {len(ids)} tokens (+{model.num_sink_tokens} sinks) is longer than the model's "
                f"context of {limit} positions"
            )

    @torch.no_grad()
    def prefill(self, model, blocks: Sequence[Sequence[int]], keys: Sequence[str]) -> list[BlockKV]:
        """Encode blocks alone (sinks first, local positions, padded at the end: ``isolated_blocks``) in one batch."""
        device = model.sink_embeddings.device
        layout = isolated_blocks(blocks, model.num_sink_tokens).to(device)
        embeds = place_sinks(model.model.get_input_embeddings()(layout.input_ids), layout, model.sink_embeddings)
        cache = DynamicCache()
        # causal attention, no padding mask: padding only follows the real tokens, which never see it
        base = model.model.base_model
        base(inputs_embeds=embeds, position_ids=layout.position_ids, **cache_keyword(base, cache), use_cache=True)
        all_keys = torch.stack([layer.keys for layer in cache.layers], dim=2)  # [n_blocks, heads, layers, L, dim]
        all_values = torch.stack([layer.values for layer in cache.layers], dim=2)
        lengths = [model.num_sink_tokens + len(ids) for ids in blocks]  # on the host: no wait for the forward
        return [BlockKV(key, all_keys[i, :, :, :n].permute(2, 1, 0, 3).contiguous(),
                        all_values[i, :, :, :n].permute(2, 1, 0, 3).contiguous(), n) for i, (key, n) in
                enumerate(zip(keys, lengths))]

    def _insert(self, kv: BlockKV) -> None:
        if kv.nbytes > self.max_bytes:
            raise ValueError(
                f"one block's cache needs {kv.nbytes:,} bytes, more than the store's budget of {self.max_bytes:,} bytes"
            )
        self.entries[kv.key] = kv
        self.bytes += kv.nbytes
        while self.bytes > self.max_bytes:
            _, old = self.entries.popitem(last=False)
            self.bytes -= old.nbytes
            self.evictions += 1

    # ---------------------------------------------------------------- assembly

    @staticmethod
    def rerotator(model, fingerprint: str | None = None) -> KeyRerotator:
        """The model's key re-rotator, kept on the model (an id-keyed table could outlive it and be reused) and
        rebuilt when the model's rotary frequencies change (``model.to(torch.bfloat16)`` rounds them; an edit through
        ``.data`` moves no version counter). ``fingerprint``: the model's (``model_fingerprint``, which covers its
        buffers), from a caller that has it: the kept one serves while it is unchanged. Without it the frequencies'
        values are compared, which waits for a GPU."""
        kept = getattr(model, "_lit_block_rerotator", None)  # (fingerprint it was checked under, rerotator)
        if kept is not None and fingerprint is not None and kept[0] == fingerprint:
            return kept[1]
        inv_freq = find_rotary_embedding(model.model).inv_freq.detach().float()
        if kept is None or not torch.equal(kept[1].inv_freq.to(inv_freq.device), inv_freq):
            kept = (None, KeyRerotator(model.model, model.config))
        model._lit_block_rerotator = (fingerprint, kept[1])
        return kept[1]

    @torch.no_grad()
    def assemble(self, model, blocks: Sequence[BlockKV], extra_positions: int = 0,
                 buffers: tuple[torch.Tensor, torch.Tensor] | None = None,
                 fingerprint: str | None = None) -> tuple[Cache, int]:
        """One cache holding the blocks in order, each block's keys moved to its offset, with room for
        ``extra_positions`` more (the query and the answer); and the cached length. ``buffers`` (keys and
        values ``[capacity, layers, kv_heads, head_dim]``) are written into instead of new ones. ``fingerprint``:
        the model's, when the caller has it (see ``rerotator``)."""
        if not blocks:
            return DynamicCache(), 0
        lengths = [kv.length for kv in blocks]
        total = sum(lengths)
        if buffers is None:
            keys = blocks[0].keys.new_empty(total + extra_positions, *blocks[0].keys.shape[1:])
            values = torch.empty_like(keys)
        else:
            keys, values = buffers
            if keys.shape[0] < total + extra_positions:
                raise ValueError(f"the cache buffers hold {keys.shape[0]} positions, {total + extra_positions} needed")
        torch.cat([kv.values for kv in blocks], out=values[:total])  # values carry no position: one copy
        k = model.num_sink_tokens
        spans, _ = block_spans([n - k for n in lengths], k)  # each block's offset in the packed prompt
        self.rerotator(model, fingerprint).place_blocks(keys[:total], [kv.keys for kv in blocks], [start for start, _ in spans])
        return PositionMajorCache(keys, values, total), total

    # ---------------------------------------------------------------- bookkeeping

    def stats(self) -> dict[str, int]:
        return {"hits": self.hits, "misses": self.misses, "evictions": self.evictions, "entries": len(self.entries),
                "bytes": self.bytes, "max_bytes": self.max_bytes}

    def clear(self) -> None:
        self.entries.clear()
        self.bytes = 0
