"""Context blocks + query -> answer, with every block's KV cache taken from (or added to) the store.

    result = generate(model, ["passage A ...", "passage B ..."], "Question: ...\nAnswer:",
                      GenerationConfig(max_new_tokens=32, stop=("\n",)), store=store)

``Generation`` is the same answer one step at a time (prefill, then one token per ``advance``): the
server interleaves many of them, so each of its answers is exactly what ``generate`` returns.

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
from lit_block.host_copies import to_device
from lit_block.serving.kv_store import BlockKV, BlockKVStore
from lit_block.serving.prompt_cache import PositionMajorCache
from lit_block.serving.query_prefill import QueryPrefill, forward_step, set_cache_length


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
    stop_token_ids: tuple[int, ...] = ()  # tokens that end the answer like EOS (a chat template's end of turn)

    def __post_init__(self):
        check_number("max_new_tokens", self.max_new_tokens, low=1, integer=True)
        check_number("temperature", self.temperature, low=0, low_open=True)
        check_number("top_k", self.top_k, low=0, integer=True)
        check_number("top_p", self.top_p, low=0, high=1, low_open=True)
        if self.seed is not None:
            check_number("seed", self.seed, low=0, integer=True)
        if isinstance(self.stop, str) or not all(isinstance(s, str) for s in self.stop):
            raise UsageError(f"stop must be a sequence of strings, got {self.stop!r}")
        if not all(isinstance(t, int) and not isinstance(t, bool) for t in self.stop_token_ids):
            raise UsageError(f"stop_token_ids must be a sequence of token ids, got {self.stop_token_ids!r}")


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
    input_ids = to_device(torch.tensor([ids]), model.sink_embeddings.device)
    return forward_step(model, input_ids, start, cache, cached_prefix=cached_prefix)[0, -1].float()


def held_back(text: str, stop: Sequence[str]) -> int:
    """How many characters at the end of a growing answer may still change: an unfinished UTF-8 character
    (decoded as U+FFFD) or the start of a stop string, which would cut the text there."""
    n = len(text) - len(text.rstrip("\ufffd"))
    partial = max((k for s in stop for k in range(1, len(s)) if text.endswith(s[:k])), default=0)
    return max(n, partial)


class Generation:
    """One answer, a step at a time: the prompt checked here, prefilled by :meth:`prefill`, then one token per
    :meth:`advance` until it returns False; :meth:`result` is what :func:`generate` returns."""

    def __init__(self, model, context_blocks: Sequence[str | Sequence[int]], query: str | Sequence[int],
                 config: GenerationConfig = GenerationConfig(), full_attention: bool = False,
                 started: float | None = None):
        self.started = time.perf_counter() if started is None else started  # TTFT counts from here
        self.model, self.config, self.full_attention = model, config, full_attention
        self.blocks = [_ids(model, b, f"context block {i}") for i, b in enumerate(context_blocks)]
        self.query_ids = _ids(model, query, "the query")
        if not self.query_ids:
            raise ValueError("the query is empty: the global block needs at least one token")
        for i, b in enumerate(self.blocks):
            if not b:
                raise ValueError(f"context block {i} is empty")
        self.context = sum(len(b) for b in self.blocks) + (0 if full_attention else model.num_sink_tokens * len(self.blocks))
        total = self.context + len(self.query_ids) + config.max_new_tokens
        limit = getattr(model.config, "max_position_embeddings", None)
        if limit is not None and total > limit:
            raise ValueError(f"prompt and answer need {total} positions ({self.context} context, {len(self.query_ids)} "
                             f"query, {config.max_new_tokens} new tokens), more than the model's {limit}")
        window = getattr(model.config, "sliding_window", None)
        if window is not None and total > window:
            raise ValueError(f"the model uses a sliding window of {window} tokens; block caches need full attention")
        eos = model.config.eos_token_id
        self.eos = set(eos if isinstance(eos, list) else [eos] if eos is not None else []) | set(config.stop_token_ids)
        self.token_ids: list[int] = []
        self.text, self.stopped_by, self.finished = "", "length", False
        self.block_stats: dict = {}
        self.cached_tokens = 0  # prompt tokens whose blocks were found in the store
        self.ttft_s = 0.0
        self.logits: torch.Tensor | None = None
        self.greedy: int | None = None  # the argmax of ``logits``, when a batch computed it

    @torch.no_grad()
    def prefill(self, store: BlockKVStore | None = None, fetched: Sequence[tuple[BlockKV, bool]] | None = None,
                fingerprint: str | None = None, own_cache: bool = False) -> None:
        """The prompt's prefill, up to the first token's logits. Block path: the blocks' caches come from ``store``
        (its misses prefilled now), or from ``fetched`` -- ``store.fetch`` of :attr:`blocks`, done by a caller that
        prefilled the misses of several answers together. ``own_cache``: copy the cache out of the query runner's
        static buffers (CUDA graphs), which the next answer's prefill reuses while this one still decodes."""
        model = self.model
        if self.full_attention:
            self.cache = DynamicCache()  # the baseline: transformers' own causal prefill of the whole prompt
            logits = _step(model, [t for b in self.blocks for t in b] + self.query_ids, 0, self.cache, cached_prefix=False)
        else:
            prefill = QueryPrefill.of(model)  # static buffers and CUDA graphs on a GPU, eager elsewhere
            buffers = self.assemble(store, fetched, fingerprint, runner=prefill)
            logits = prefill(self.query_ids, self.context, self.cache)
            if own_cache and buffers is not None:
                self.cache = _copied(buffers, self.context + len(self.query_ids), self.context + self.extra_positions)
        self.prefilled(logits)

    @property
    def extra_positions(self) -> int:
        """Positions the cache keeps free after the context: the query and the answer."""
        return len(self.query_ids) + self.config.max_new_tokens

    def assemble(self, store: BlockKVStore | None = None, fetched: Sequence[tuple[BlockKV, bool]] | None = None,
                 fingerprint: str | None = None, runner: QueryPrefill | None = None):
        """Block path, first half of :meth:`prefill`: the blocks' caches (from ``fetched`` or ``store``) assembled
        into :attr:`cache`, with room for the query and the answer; the query is not run. ``runner``: assemble into
        its static buffers (returned; None when it has none) instead of a cache of this answer's own."""
        store = store if store is not None else BlockKVStore()
        if fetched is None:
            fetched = store.fetch(self.model, self.blocks, fingerprint)
        kvs = [kv for kv, _ in fetched]
        self.block_stats = {"hits": sum(found for _, found in fetched),
                            "misses": len({kv.key for kv, found in fetched if not found})}
        self.cached_tokens = sum(len(ids) for ids, (_, found) in zip(self.blocks, fetched) if found)
        buffers = None
        if runner is not None and kvs:
            buffers = runner.buffers(kvs[0].keys, sum(kv.length for kv in kvs) + self.extra_positions)
        self.cache, self.context = store.assemble(self.model, kvs, self.extra_positions, buffers=buffers,
                                                  fingerprint=fingerprint)
        return buffers

    def prefill_query(self) -> None:
        """Second half of :meth:`prefill` for an answer assembled into a cache of its own: its query alone, then its
        first token (the fallback when a batched query forward failed, which may have written past the context)."""
        set_cache_length(self.cache, self.context)
        self.prefilled(QueryPrefill.of(self.model)(self.query_ids, self.context, self.cache))

    def prefilled(self, logits: torch.Tensor) -> None:
        """The prompt is in the cache and ``logits [vocab]`` predict the first token (however the query was run)."""
        self.first_token_logits = logits.cpu()  # waits for the device: the first token's logits exist now
        self.ttft_s = time.perf_counter() - self.started
        self.logits = logits
        self.greedy = int(self.first_token_logits.argmax())  # from the host's copy: no second wait for the device
        seed = self.config.seed
        self.generator = torch.Generator(device=logits.device).manual_seed(seed) if seed is not None else None
        self.position = self.context + len(self.query_ids)

    @torch.no_grad()
    def advance(self) -> bool:
        """Choose the next token and run it, unless the answer ends: False once the answer is finished."""
        token = self.choose()
        if token is None:
            return False
        self.run(token)
        return True

    def choose(self) -> int | None:
        """The next token, to be run (``run``, or a batch's forward and ``accept``); None when the answer ends here
        (EOS, a stop string, ``max_new_tokens``)."""
        if self.logits is None and not self.finished:
            raise RuntimeError("prefill() the prompt before advancing")
        if self.finished:
            return None
        config, model = self.config, self.model
        greedy = self.greedy if not config.do_sample else None
        token = greedy if greedy is not None else next_token(self.logits, config, self.generator)
        if config.stop_at_eos and token in self.eos:
            self.stopped_by = "eos"
            return self._finish()
        self.token_ids.append(token)
        self.text = model.tokenizer.decode(self.token_ids, skip_special_tokens=True) if model.tokenizer is not None else ""
        hit = [self.text.index(s) for s in config.stop if s and s in self.text]
        if hit:
            self.text, self.stopped_by = self.text[: min(hit)], "stop"
            return self._finish()
        if len(self.token_ids) >= config.max_new_tokens:
            return self._finish()
        return token

    @torch.no_grad()
    def run(self, token: int) -> None:
        """Run the chosen token over this answer's own cache: the logits of the next choice."""
        self.accept(_step(self.model, [token], self.position, self.cache))

    def accept(self, logits: torch.Tensor, greedy: int | None = None) -> None:
        """``[vocab]`` logits after the chosen token, however it was run (alone, or in a batch holding the cache);
        ``greedy``: their argmax, when the batch took every row's at once (one wait for the device, not one per answer)."""
        self.logits, self.greedy = logits, greedy
        self.position += 1

    def _finish(self) -> None:
        self.finished = True
        self.cache = self.logits = None  # the answer's cache is freed as soon as it is done

    def stable_text(self) -> str:
        """The part of the answer so far that no later token can change (what a stream may send)."""
        if self.finished:
            return self.text
        return self.text[: len(self.text) - held_back(self.text, self.config.stop)]

    def result(self) -> GenerationResult:
        return GenerationResult(text=self.text, token_ids=list(self.token_ids), first_token_logits=self.first_token_logits,
                                context_tokens=self.context, stopped_by=self.stopped_by, ttft_s=self.ttft_s,
                                block_stats=self.block_stats)


def _copied(buffers: tuple[torch.Tensor, torch.Tensor], filled: int, capacity: int) -> Cache:
    keys = buffers[0].new_empty(capacity, *buffers[0].shape[1:])
    values = torch.empty_like(keys)
    keys[:filled].copy_(buffers[0][:filled])
    values[:filled].copy_(buffers[1][:filled])
    return PositionMajorCache(keys, values, filled)


@torch.no_grad()
def generate(model, context_blocks: Sequence[str | Sequence[int]], query: str | Sequence[int],
             config: GenerationConfig = GenerationConfig(), store: BlockKVStore | None = None,
             full_attention: bool = False, fingerprint: str | None = None) -> GenerationResult:
    """Answer ``query`` over ``context_blocks`` (texts or token id lists) with ``model`` (a ``BlockAttentionLM``).
    ``fingerprint``: the model's, computed once by a caller whose weights are frozen (see ``BlockKVStore.get_many``)."""
    generation = Generation(model, context_blocks, query, config, full_attention)
    generation.prefill(store, fingerprint=fingerprint)
    while generation.advance():
        pass
    return generation.result()
