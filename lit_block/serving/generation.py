"""Context blocks + query -> answer, with every block's KV cache taken from (or added to) the store.

    result = generate(model, ["passage A ...", "passage B ..."], "Question: ...\nAnswer:",
                      GenerationConfig(max_new_tokens=32, stop=("\n",)), store=store)

Block path (``full_attention=False``): each context block is prefilled alone with the model's sinks
(or found in the store), the blocks' caches are assembled at their offsets, and only the query -- the
global block -- is prefilled over them; decoding then continues as usual. This computes exactly
what ``BlockAttentionLM.forward`` computes on the packed sequence (tested). With
``full_attention=True`` the same prompt is prefilled whole with plain causal attention and no sinks
(the full-attention reference; nothing is cached).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache
from transformers.cache_utils import Cache

from lit_block.errors import UsageError, check_number
from lit_block.serving.kv_store import BlockKVStore
from lit_block.serving.query_prefill import QueryPrefill, forward_step


@dataclass(frozen=True)
class GenerationConfig:
    max_new_tokens: int = 64
    do_sample: bool = False  # greedy when False
    temperature: float = 1.0
    top_k: int = 0  # 0: no top-k cut
    top_p: float = 1.0  # 1.0: no nucleus cut
    stop: tuple[str, ...] = ()  # stop strings: the answer ends before the first one
    stop_at_eos: bool = True
    seed: int | None = None  # sampling seed

    def __post_init__(self):
        check_number("max_new_tokens", self.max_new_tokens, low=1, integer=True)
        check_number("temperature", self.temperature, low=0, low_open=True)
        check_number("top_k", self.top_k, low=0, integer=True)
        check_number("top_p", self.top_p, low=0, high=1, low_open=True)
        if self.seed is not None:
            check_number("seed", self.seed, low=0, integer=True)
        if isinstance(self.stop, str) or not all(isinstance(s, str) for s in self.stop):
            raise UsageError(f"stop must be a sequence of strings, got {self.stop!r}")


@dataclass
class GenerationResult:
    text: str  # the answer, cut before any stop string
    token_ids: list[int]  # generated tokens (stop string tokens included)
    first_token_logits: torch.Tensor  # [vocab] float32: the prediction after the query
    context_tokens: int  # cached positions the query attended to (sinks included)
    stopped_by: str  # "eos", "stop" or "length"
    ttft_s: float  # seconds from the call to the first token's logits (cache lookups and assembly included)
    block_stats: dict = field(default_factory=dict)  # hits / misses of this call


def _ids(model, item: str | Sequence[int], what: str) -> list[int]:
    if isinstance(item, str):
        if model.tokenizer is None:
            raise UsageError(f"{what} is text but the model has no tokenizer; pass token ids")
        return model.tokenizer(item, add_special_tokens=False)["input_ids"]
    ids = torch.as_tensor(item)  # one pass in C over 32k ids, not a Python loop
    if ids.numel() and (ids.dim() != 1 or ids.is_floating_point() or ids.dtype == torch.bool):
        raise UsageError(f"{what} must be text or a flat list of integer token ids")
    vocab = model.config.vocab_size
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocab):
        bad = ids[(ids < 0) | (ids >= vocab)][0]
        raise UsageError(f"{what}: token id {int(bad)} is outside the model's vocabulary (0 .. {vocab - 1})")
    return ids.tolist()


def next_token(logits: torch.Tensor, config: GenerationConfig, generator: torch.Generator | None) -> int:
    """Greedy or sampled (temperature, top-k, top-p) choice from ``[vocab]`` logits."""
    if not config.do_sample:
        return int(logits.argmax())
    logits = logits.float() / config.temperature
    if config.top_k:
        kth = logits.topk(min(config.top_k, logits.numel())).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if config.top_p < 1.0:
        sorted_logits, order = logits.sort(descending=True)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        drop = cumulative - sorted_logits.softmax(-1) > config.top_p  # keep the smallest set reaching top_p
        logits = logits.masked_fill(torch.zeros_like(drop).scatter(0, order, drop), float("-inf"))
    return int(torch.multinomial(logits.softmax(-1), 1, generator=generator))


def _step(model, ids: list[int], start: int, cache: Cache, cached_prefix: bool = True) -> torch.Tensor:
    """Run ``ids`` at positions ``start ..`` over ``cache`` (which grows); the last position's logits ``[vocab]``."""
    input_ids = torch.tensor([ids], device=model.sink_embeddings.device)
    return forward_step(model, input_ids, start, cache, cached_prefix=cached_prefix)[0, -1].float()


@torch.no_grad()
def generate(model, context_blocks: Sequence[str | Sequence[int]], query: str | Sequence[int],
             config: GenerationConfig = GenerationConfig(), store: BlockKVStore | None = None,
             full_attention: bool = False) -> GenerationResult:
    """Answer ``query`` over ``context_blocks`` (texts or token id lists) with ``model`` (a ``BlockAttentionLM``)."""
    start = time.perf_counter()
    blocks = [_ids(model, b, f"context block {i}") for i, b in enumerate(context_blocks)]
    query_ids = _ids(model, query, "the query")
    if not query_ids:
        raise ValueError("the query is empty: the global block needs at least one token")
    for i, b in enumerate(blocks):
        if not b:
            raise ValueError(f"context block {i} is empty")
    context = sum(len(b) for b in blocks) + (0 if full_attention else model.num_sink_tokens * len(blocks))
    total = context + len(query_ids) + config.max_new_tokens
    limit = getattr(model.config, "max_position_embeddings", None)
    if limit is not None and total > limit:
        raise ValueError(f"prompt and answer need {total} positions ({context} context, {len(query_ids)} query, "
                         f"{config.max_new_tokens} new tokens), more than the model's {limit}")
    window = getattr(model.config, "sliding_window", None)
    if window is not None and total > window:
        raise ValueError(f"the model uses a sliding window of {window} tokens; block caches need full attention")
    stats: dict = {}
    if full_attention:
        cache = DynamicCache()  # the baseline: transformers' own causal prefill of the whole prompt
        logits = _step(model, [t for b in blocks for t in b] + query_ids, 0, cache, cached_prefix=False)
    else:
        store = store if store is not None else BlockKVStore()
        hits, misses = store.hits, store.misses
        kvs = store.get_many(model, blocks)
        prefill = QueryPrefill.of(model)  # static buffers and CUDA graphs on a GPU, eager elsewhere
        extra = len(query_ids) + config.max_new_tokens
        buffers = prefill.buffers(kvs[0].keys, sum(kv.length for kv in kvs) + extra) if kvs else None  # or fresh ones
        cache, context = store.assemble(model, kvs, extra, buffers=buffers)
        stats = {"hits": store.hits - hits, "misses": store.misses - misses}
        logits = prefill(query_ids, context, cache)
    first_logits = logits.cpu()  # waits for the device: the first token's logits exist now
    ttft = time.perf_counter() - start
    generator = torch.Generator(device=logits.device).manual_seed(config.seed) if config.seed is not None else None
    eos = model.config.eos_token_id
    eos = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    out: list[int] = []
    position = context + len(query_ids)
    stopped_by, text = "length", ""
    while True:
        token = next_token(logits, config, generator)
        if config.stop_at_eos and token in eos:
            stopped_by = "eos"
            break
        out.append(token)
        text = model.tokenizer.decode(out, skip_special_tokens=True) if model.tokenizer is not None else ""
        hit = [text.index(s) for s in config.stop if s and s in text]
        if hit:
            text, stopped_by = text[: min(hit)], "stop"
            break
        if len(out) >= config.max_new_tokens:
            break
        logits = _step(model, [token], position, cache)
        position += 1
    return GenerationResult(text=text, token_ids=out, first_token_logits=first_logits, context_tokens=context,
                            stopped_by=stopped_by, ttft_s=ttft, block_stats=stats)
