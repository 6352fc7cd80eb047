"""The global block's prefill over assembled block caches, replayed from CUDA graphs.

Once every context block is cached, what is left of the time to first token is one short forward:
the query's tokens over the whole cached context. For an 8B model that is ~1,700 kernel launches
whose GPU work is a few milliseconds, so eager PyTorch spends most of the time launching. On CUDA,
``QueryPrefill`` keeps the prompt cache in static buffers and captures that forward in a CUDA graph
per (context length, query bucket) once that shape has been seen ``capture_after`` times; a later
prompt of the same shape replays it. A capture costs about three eager forwards (two warm-ups and the
recording), so a shape seen once -- most RAG prompts, whose passages sum to a new context length --
runs eagerly instead of paying for a graph nobody replays.

Queries are padded at the end to a multiple of ``bucket`` tokens. That is exact: under causal
attention no real token sees the padding, whose keys are written past the real ones and dropped
(the cache's length is set to the real end, so decoding overwrites them).

Graphs hold the addresses of the weights and buffers: they are dropped when a parameter is
replaced (``.to()``, loading) or the buffers grow. In-place weight updates (training) are seen.
On CPU, or when a capture fails, the same forward runs eagerly.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformers.cache_utils import Cache

from lit_block.host_copies import copy_to_device, to_device
from lit_block.serving.prompt_cache import cache_keyword


def forward_step(model, ids: torch.Tensor, start: int, cache: Cache, keep: int | torch.Tensor = 1,
                 cached_prefix: bool = True) -> torch.Tensor:
    """``ids [1, T]`` at positions ``start ..`` over ``cache`` (which grows); logits ``[1, kept, vocab]``."""
    positions = torch.arange(start, start + ids.shape[1], device=ids.device)[None]
    return model.model(input_ids=ids, position_ids=positions, **cache_keyword(model.model, cache), use_cache=True,
                       logits_to_keep=keep, cached_prefix=cached_prefix).logits


def set_cache_length(cache: Cache, length: int) -> None:
    """Mark the first ``length`` positions of a preallocated cache as filled."""
    for layer in cache.layers:
        layer.length = length
        layer._expose()


@dataclass
class _Graph:
    ids: torch.Tensor  # [1, bucket] static input, padded
    keep: torch.Tensor  # [1] index of the last real query token
    run: Callable[[], torch.Tensor]  # the captured forward, eagerly
    graph: torch.cuda.CUDAGraph | None = None  # None off CUDA: replay runs the forward on the static inputs
    logits: torch.Tensor | None = None  # [1, 1, vocab] the graph's static output

    def replay(self) -> torch.Tensor:
        if self.graph is None:
            return self.run()
        self.graph.replay()
        return self.logits


class QueryPrefill:
    """Prefill ``query`` tokens at ``start`` over a cache; on CUDA from captured graphs (see the module doc)."""

    def __init__(self, model, use_graphs: bool | None = None, bucket: int = 64, max_graphs: int = 8,
                 capture_after: int = 2):
        self.model = model
        device = model.sink_embeddings.device
        self.use_graphs = device.type == "cuda" if use_graphs is None else use_graphs
        self.bucket, self.max_graphs, self.capture_after = bucket, max_graphs, capture_after
        self.sightings: OrderedDict[tuple[int, int], int] = OrderedDict()  # shape -> times seen, LRU, bounded
        self.keys: torch.Tensor | None = None  # [capacity, layers, kv_heads, head_dim] static cache buffers
        self.values: torch.Tensor | None = None
        self.graphs: OrderedDict[tuple[int, int], _Graph] = OrderedDict()  # (start, bucket) -> graph, LRU order
        self.weights: tuple[int, ...] = ()  # parameter addresses the graphs were captured with
        self.pool = None

    @staticmethod
    def of(model) -> QueryPrefill:
        """The model's runner, kept on the model (its graphs and buffers live as long as the model)."""
        if getattr(model, "_lit_block_query_prefill", None) is None:
            model._lit_block_query_prefill = QueryPrefill(model)
        return model._lit_block_query_prefill

    def padded(self, n: int) -> int:
        return -(-n // self.bucket) * self.bucket

    def buffers(self, like: torch.Tensor, positions: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Static cache buffers with room for ``positions`` (+ query padding), shaped like a block's
        ``keys [L, layers, kv_heads, head_dim]``; ``None`` without graphs (the caller allocates)."""
        if not self.use_graphs:
            return None
        need = positions + self.bucket
        if self.keys is None or self.keys.shape[0] < need or self.keys.shape[1:] != like.shape[1:] \
                or self.keys.dtype != like.dtype or self.keys.device != like.device:
            capacity = -(-need // 4096) * 4096  # grow in 4k steps: fewer reallocations, each drops the graphs
            self.keys = self.values = None  # free the old buffers first
            self._drop_graphs()
            self.keys = like.new_empty(capacity, *like.shape[1:])
            self.values = torch.empty_like(self.keys)
        return self.keys, self.values

    @torch.no_grad()
    def __call__(self, query: list[int], start: int, cache: Cache) -> torch.Tensor:
        """Logits ``[vocab]`` (float32) after ``query`` placed at ``start``; the cache then holds the query too."""
        device = self.model.sink_embeddings.device
        bucket = self.padded(len(query))

        def eager() -> torch.Tensor:
            return forward_step(self.model, to_device(torch.tensor([query]), device), start, cache)[0, -1].float()

        static = self.keys is not None and len(cache.layers) == self.keys.shape[1] and all(
            getattr(layer, "buffer_keys", None) is not None and layer.buffer_keys.data_ptr() == self.keys[:, i].data_ptr()
            for i, layer in enumerate(cache.layers))  # the cache lives in this runner's buffers
        if not (self.use_graphs and static and start + bucket <= self.keys.shape[0]):
            return eager()
        weights = tuple(p.data_ptr() for p in self.model.parameters())
        if weights != self.weights:  # a parameter was replaced: the graphs would read freed memory
            self._drop_graphs()
            self.weights = weights
        graph = self.graphs.get((start, bucket))
        if graph is None and not self._seen_enough((start, bucket)):
            return eager()
        if graph is None:
            graph = self._capture(start, bucket, cache)
            if graph is None:  # capture failed: eager from now on
                return eager()
        self.graphs.move_to_end((start, bucket))
        ids = torch.tensor(query + [query[-1]] * (bucket - len(query)))  # padding: any real token id
        copy_to_device(graph.ids, ids[None])
        graph.keep.fill_(len(query) - 1)
        logits = graph.replay()
        set_cache_length(cache, start + len(query))  # the padding's keys are past the end: dropped
        # a copy, always: the graph's output tensor is rewritten by the next replay of this shape, which the server
        # runs for another request before this one chooses its token (float32's .float() would copy nothing)
        return logits[0, -1].to(torch.float32, copy=True)

    def _seen_enough(self, shape: tuple[int, int]) -> bool:
        """Count a sighting of ``shape``; True once it has been seen ``capture_after`` times (worth a graph)."""
        self.sightings[shape] = self.sightings.pop(shape, 0) + 1
        while len(self.sightings) > 64 * self.max_graphs:  # bounded: a server sees endless one-off shapes
            self.sightings.popitem(last=False)
        return self.sightings[shape] >= self.capture_after

    def _drop_graphs(self) -> None:
        self.graphs.clear()
        self.pool = None  # a pool outlives no graph of its own: capturing into a released one is an error

    def _capture(self, start: int, bucket: int, cache: Cache) -> _Graph | None:
        device = self.model.sink_embeddings.device
        ids = torch.zeros(1, bucket, dtype=torch.long, device=device)
        keep = torch.full((1,), bucket - 1, dtype=torch.long, device=device)

        def run() -> torch.Tensor:
            set_cache_length(cache, start)
            return forward_step(self.model, ids, start, cache, keep=keep)

        entry = _Graph(ids, keep, run)
        if device.type == "cuda":
            try:
                entry.graph, entry.logits = self._record(run)
            except RuntimeError as error:  # something in the forward cannot be captured (a host sync, say)
                warnings.warn(f"CUDA graph capture of the query prefill failed, running it eagerly: {error}",
                              stacklevel=3)
                self.use_graphs = False
                self._drop_graphs()
                set_cache_length(cache, start)
                return None
        set_cache_length(cache, start)
        while len(self.graphs) >= self.max_graphs:
            self.graphs.popitem(last=False)
        self.graphs[(start, bucket)] = entry
        return entry

    def _record(self, run: Callable[[], torch.Tensor]) -> tuple[torch.cuda.CUDAGraph, torch.Tensor]:
        if self.pool is None:
            self.pool = torch.cuda.graph_pool_handle()  # graphs share one memory pool (replayed one at a time)
        return record_graph(run, self.pool)


def record_graph(run: Callable[[], torch.Tensor], pool=None) -> tuple[torch.cuda.CUDAGraph, torch.Tensor]:
    """Warm ``run`` up on a side stream, then capture it (into ``pool``, or a pool of its own); the graph and its
    output tensor."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up off the capture: lazy inits, allocator, library handles
        for _ in range(2):
            run()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, pool=pool):
        logits = run()
    return graph, logits
