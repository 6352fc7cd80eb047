"""Decoding many answers with one forward per step: their caches as rows of one slab.

An answer's cache holds its prompt and the tokens decoded so far at positions ``0 .. n-1``. Row ``r`` of every
layer's ``[rows, kv_heads, capacity, head_dim]`` buffer holds its answer's cache at columns ``0 .. n_r - 1``; a step
writes each row's new key at that row's own column ``n_r`` (``prompt_cache.SlabLayer``), gives it RoPE position
``n_r``, and lets it see columns ``0 .. n_r`` (the key mask). What each row computes is what ``Generation.run``
computes for it alone, up to the order of floating-point sums in batched matrix products.

Rows never move: an answer joins by copying its cache into a free row, and a finished answer frees its row (a free
row still computes, at column 0, and nothing reads it). An admission batch's answers can join before their queries
run (``prefill``): their assembled contexts are copied into free rows and all their queries run in one forward over
those rows, each query token written at its row's own columns, so the first tokens need no other buffer and no
copy afterwards. The slab is reallocated -- live rows copied to the new
buffers -- only when no row is free or a joining answer would not fit; rows and columns are then rounded up with
room to spare (``ROW_QUANTUM``, ``COLUMN_QUANTUM``), so a server's slab keeps one shape for long.

On CUDA with the split-key kernel (which skips the masked columns a row does not see) every step of a slab has the
same shapes, inputs in static device tensors: after ``CAPTURE_AFTER`` eager steps the forward is captured in a CUDA
graph and replayed until the next reallocation (a decode step of an 8B model is ~1,000 kernel launches whose
enqueueing took 31.8 of a 32.8 ms step on an H100, docs/serve.md). Eagerly, the attention sees only the columns up
to the longest row.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from lit_block.attention.transformers_hook import DECODE_KERNELS
from lit_block.host_copies import copy_to_device, to_device
from lit_block.serving.generation import Generation
from lit_block.serving.prompt_cache import PositionMajorCache, cache_keyword, slab_cache
from lit_block.serving.query_prefill import record_graph

PAD_TOKEN = 0  # the input of a freed row: any id, its output is never read
ROW_QUANTUM = 8  # a slab's rows: a multiple of this, a quarter more than its live answers
COLUMN_QUANTUM = 1024  # its columns: a multiple of this, an eighth more than its longest answer needs
CAPTURE_AFTER = 2  # eager steps of one slab before its forward is captured


@dataclass
class LaunchedStep:
    """A decoding step queued on the device (``DecodeBatch.launch``), to be finished."""

    rows: list[tuple[Generation, int]]  # each answer and its slab row
    logits: torch.Tensor  # [rows, vocab] float32, on the device
    greedy: torch.Tensor  # [rows] each row's argmax, on the host (written when ``done`` has passed)
    done: torch.cuda.Event | None  # recorded after the copy to the host; None off CUDA (computed already)


class DecodeBatch:
    """The answers decoding together (see the module doc). ``graphs``: capture the step in a CUDA graph (None: on
    CUDA with the split-key kernel; with SDPA a graph would read every column of the capacity)."""

    def __init__(self, model, decode_kernel: str = "sdpa", graphs: bool | None = None):
        if decode_kernel not in DECODE_KERNELS:
            raise ValueError(f"decode_kernel {decode_kernel!r}: expected one of {', '.join(DECODE_KERNELS)}")
        self.model = model
        self.decode_kernel = decode_kernel  # padded_rows_attention's kernel for the step (sdpa or split-key)
        self.graphs = graphs
        self.rows: list[Generation | None] = []  # row -> its answer, None when free
        self.keys: torch.Tensor | None = None  # [layers, rows, kv_heads, capacity, head_dim]
        self.values: torch.Tensor | None = None
        self.rebuilds = 0  # slabs allocated so far (each copies every live answer's cache): a server's metric
        self._static: dict[str, torch.Tensor] = {}  # the graph's inputs and output, for the current slab
        self._graph: torch.cuda.CUDAGraph | None = None
        self._weights: tuple[int, ...] = ()  # the parameters' addresses the graph was captured with
        self._steps = 0  # steps run on the current slab

    def free_rows(self) -> None:
        """Every row free (the server is idle); the buffers and the graph stay for the next answers: a wave of
        requests after an idle spell would otherwise reallocate the slab and capture its graph again."""
        self.rows = [None] * len(self.rows)

    def clear(self) -> None:
        """Everything dropped, the buffers' memory included (after a failed step)."""
        self.rows, self.keys, self.values = [], None, None
        self._forget_graph()

    def _forget_graph(self) -> None:
        """The slab's graph and its static inputs go (new buffers, or none): eager steps until a new capture."""
        self._static, self._graph, self._steps = {}, None, 0

    @torch.no_grad()
    def step(self, generations: list[Generation], tokens: list[int]) -> None:
        """Run each answer's chosen token in one forward; each answer gets its next logits (``Generation.accept``)."""
        self.finish(self.launch(generations, tokens))

    @torch.no_grad()
    def launch(self, generations: list[Generation], tokens: list[int]) -> LaunchedStep:
        """The first half of :meth:`step`: its forward queued on the device, not waited for, so that the host can queue
        other work (an admission's misses) meanwhile. :meth:`finish` it before anything else changes the slab."""
        self._place(generations)
        row_of = {id(g): r for r, g in enumerate(self.rows) if g is not None}
        ids, columns = [PAD_TOKEN] * len(self.rows), [0] * len(self.rows)  # columns: each row's write column and position
        for g, token in zip(generations, tokens):
            ids[row_of[id(g)]], columns[row_of[id(g)]] = token, g.position
        ids, columns = torch.tensor(ids)[:, None], torch.tensor(columns)  # lists first: a tensor's item writes cost ~7 us
        self._steps += 1
        if self._graphs_on():
            logits = self._replayed(ids, columns)
        else:
            width = int(columns.max()) + 1  # eagerly the attention reads only the columns some row sees
            columns = to_device(columns, self.keys.device)
            seen = torch.arange(width, device=columns.device)[None] <= columns[:, None]  # [rows, width]: 0 .. n_r
            logits = self._forward(to_device(ids, self.keys.device), columns[:, None], seen, self.keys.shape[1], width)
        logits = logits[:, -1].to(torch.float32, copy=True)  # a copy: a replay rewrites the graph's output
        greedy = logits.argmax(-1)  # every row's greedy choice in one kernel, read in one wait
        if greedy.is_cuda:  # to pinned host memory, then a mark on the stream: finish waits for this step only
            greedy, done = greedy.to("cpu", non_blocking=True), torch.cuda.Event()
            done.record()
        else:
            done = None
        return LaunchedStep([(g, row_of[id(g)]) for g in generations], logits, greedy, done)

    def finish(self, launched: LaunchedStep) -> None:
        """Wait for a launched step's forward (only: work queued after it may still run) and give each answer its
        logits."""
        if launched.done is not None:
            launched.done.synchronize()
        greedy = launched.greedy.tolist()
        for g, row in launched.rows:
            g.accept(launched.logits[row], greedy[row])

    def _forward(self, ids: torch.Tensor, columns: torch.Tensor, seen: torch.Tensor, rows: int, width: int,
                 first_row: int = 0) -> torch.Tensor:
        """The forward of slab rows ``first_row .. first_row + rows - 1``: their tokens ``ids [rows, T]`` written at
        ``columns [rows, T]`` (also their RoPE positions), token t of row r seeing the columns ``seen [rows, T,
        width]`` (``[rows, width]`` when T is 1) -> logits of each row's last token ``[rows, 1, vocab]``."""
        cut = slice(first_row, first_row + rows)
        cache = slab_cache(self.keys[:, cut], self.values[:, cut], columns, width)
        # key_mask: lit_block's attention reads the slab once per layer (HF's 2-D mask path expands the GQA heads)
        return self.model.model(input_ids=ids, position_ids=columns, **cache_keyword(self.model.model, cache),
                                use_cache=True, logits_to_keep=1, key_mask=seen, decode_kernel=self.decode_kernel).logits

    def _graphs_on(self) -> bool:
        if self.graphs is None:
            return self.keys.device.type == "cuda" and self.decode_kernel == "split-key"
        return self.graphs

    def _replayed(self, ids: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
        """The step on the slab's static inputs, from its CUDA graph once captured (after ``CAPTURE_AFTER`` steps)."""
        static = self._static
        if not static:
            static.update(ids=torch.zeros_like(ids, device=self.keys.device),
                          columns=torch.zeros_like(columns, device=self.keys.device))
        copy_to_device(static["ids"], ids)
        copy_to_device(static["columns"], columns)
        width = self.keys.shape[3]

        def run() -> torch.Tensor:
            columns = static["columns"]
            seen = torch.arange(width, device=columns.device)[None] <= columns[:, None]  # [rows, width]: 0 .. n_r
            return self._forward(static["ids"], columns[:, None], seen, len(self.rows), width)

        weights = tuple(p.data_ptr() for p in self.model.parameters())
        if self._graph is not None and weights != self._weights:  # a parameter was replaced: it would read freed memory
            self._graph = None
        if self._graph is None and self._steps > CAPTURE_AFTER:
            try:
                self._graph, static["logits"] = record_graph(run)
                self._weights = weights
            except RuntimeError as error:  # something in the forward cannot be captured: eager from now on
                warnings.warn(f"CUDA graph capture of the decode step failed, decoding eagerly: {error}", stacklevel=3)
                self.graphs = False
        if self._graph is None:
            return run()
        self._graph.replay()
        return static["logits"]

    def _place(self, generations: list[Generation]) -> None:
        """Free the rows of answers no longer decoding, and give new ones a row (reallocating when needed)."""
        live = {id(g) for g in generations}
        self.rows = [g if g is not None and id(g) in live else None for g in self.rows]
        placed = {id(g) for g in self.rows if g is not None}
        new = [g for g in generations if id(g) not in placed]
        if not new:
            return
        # columns the longest answer reaches: its cache and every token it may still write
        self._make_room(generations, new, max(_last_column(g) for g in generations))
        free = [r for r, g in enumerate(self.rows) if g is None]
        for g, r in zip(new, free):
            self._write_row(g.cache, r, g.position)
            self.rows[r] = g
            g.cache = None  # the slab holds it now

    @torch.no_grad()
    def prefill(self, generations: list[Generation]) -> list[torch.Tensor]:
        """The queries of answers whose contexts are assembled (``Generation.assemble``: own caches, queries not run),
        in one forward over slab rows (see the module doc): each answer's first-token logits ``[vocab]`` (float32),
        in order. The answers then hold slab rows (their ``cache`` None) and join the next ``step`` where they are.
        If the forward fails, nothing of them is in the slab and their own caches are as they were."""
        width_q = max(len(g.query_ids) for g in generations)  # Q: the longest query; shorter ones are left-padded
        live = [g for g in self.rows if g is not None]
        # a live row inside the forward's rows writes Q padding tokens at its own next columns (overwritten before
        # anything reads them: each step writes its column first); a new row writes its padding after its query
        needed = max([g.context + width_q + g.config.max_new_tokens for g in generations]
                     + [max(_last_column(g), g.position + width_q) for g in live])
        self._make_room(live + generations, generations, needed)
        chosen = self._free_rows(len(generations))
        first, last = chosen[0], chosen[-1]
        rows = last - first + 1
        device = self.keys.device
        ids = torch.full((rows, width_q), PAD_TOKEN, dtype=torch.long)
        ends = torch.zeros(rows, dtype=torch.long)  # a row's column after its content: where its padding goes
        pad = torch.full((rows,), width_q)  # padding slots a row has before its query (all of them: not a new row)
        for r in range(rows):
            if (g := self.rows[first + r]) is not None:
                ends[r] = g.position
        width = 1
        for g, r in zip(generations, chosen):
            n, q = g.context, len(g.query_ids)
            self._write_row(g.cache, r, n)
            ids[r - first, width_q - q:] = torch.tensor(g.query_ids)
            ends[r - first], pad[r - first] = n + q, width_q - q
            width = max(width, n + q)
        slot = torch.arange(width_q)
        real = slot[None] >= pad[:, None]  # [rows, Q]: slot t of row r is one of its query tokens
        # query token i (slot pad + i) at column ends - q + i; padding slot t at ends + t, past the row's content
        columns = torch.where(real, ends[:, None] - width_q + slot[None], ends[:, None] + slot[None])
        seen = torch.arange(width)[None, None] <= columns[:, :, None]  # the row's context and query up to itself
        seen &= real[:, :, None]
        seen[:, :, 0] = True  # a padding slot sees column 0 only (any finite key): its output is never read
        logits = self._forward(to_device(ids, device), to_device(columns, device), to_device(seen, device), rows, width,
                               first)
        logits = logits[:, -1].to(torch.float32, copy=True)
        for g, r in zip(generations, chosen):
            self.rows[r] = g
            g.cache = None  # the slab holds it now
        return [logits[r - first] for r in chosen]

    def _make_room(self, generations: list[Generation], new: list[Generation], needed: int) -> None:
        """Reallocate (keeping the live answers among ``generations``) unless ``new`` fit in free rows and every row's
        writes in ``needed`` columns."""
        if self.keys is None or self.rows.count(None) < len(new) or needed > self.keys.shape[3]:
            self._reallocate(generations, needed)

    def _free_rows(self, k: int) -> list[int]:
        """``k`` free rows for a batch's forward: the first run of ``k`` adjacent ones, so that the forward computes
        only them; else the first ``k`` (the forward then spans the live rows between them, as padding)."""
        free = [r for r, g in enumerate(self.rows) if g is None]
        for i in range(len(free) - k + 1):
            if free[i + k - 1] - free[i] == k - 1:
                return free[i : i + k]
        return free[:k]

    def _reallocate(self, generations: list[Generation], needed: int) -> None:
        """New buffers, larger than the old in rows and columns as needed; the live answers copied to rows 0, 1, ..."""
        old_keys, old_values, old_rows = self.keys, self.values, self.rows
        self.rebuilds += 1
        live = len(generations)
        rows, capacity = _round_up(live + live // 4 + 1, ROW_QUANTUM), _round_up(needed + needed // 8, COLUMN_QUANTUM)
        if old_keys is None:
            first = next(g for g in generations if g.cache is not None).cache.layers  # a joining answer's own cache
            like, layers = first[0].keys, len(first)
        else:
            like, layers = old_keys[0], old_keys.shape[0]
            rows, capacity = max(rows, old_keys.shape[1]), max(capacity, old_keys.shape[3])
        self._forget_graph()  # its memory goes before the new buffers are allocated
        # zeros: a free row's masked columns still enter the split-key kernel's products (with weight 0): finite
        self.keys = torch.zeros((layers, rows, like.shape[-3], capacity, like.shape[-1]), dtype=like.dtype,
                                device=like.device)
        self.values = torch.zeros_like(self.keys)
        old_row = {id(g): r for r, g in enumerate(old_rows) if g is not None}
        kept = [g for g in generations if id(g) in old_row]
        for r, g in enumerate(kept):
            n = g.position
            self.keys[:, r, :, :n] = old_keys[:, old_row[id(g)], :, :n]
            self.values[:, r, :, :n] = old_values[:, old_row[id(g)], :, :n]
        self.rows = [*kept, *[None] * (rows - len(kept))]

    def _write_row(self, cache, row: int, n: int) -> None:
        """The first ``n`` positions of an answer's own cache into columns ``0 .. n-1`` of ``row``."""
        if cache is None:
            raise RuntimeError("an answer joins the decode batch without its cache")
        if isinstance(cache, PositionMajorCache):  # an assembled prompt: one copy ([n, layers, kv_heads, head_dim])
            self.keys[:, row, :, :n] = cache.keys_buffer[:n].permute(1, 2, 0, 3)
            self.values[:, row, :, :n] = cache.values_buffer[:n].permute(1, 2, 0, 3)
            return
        for i, layer in enumerate(cache.layers):
            self.keys[i, row, :, :n] = layer.keys[0, :, :n]
            self.values[i, row, :, :n] = layer.values[0, :, :n]


def _round_up(n: int, quantum: int) -> int:
    return -(-n // quantum) * quantum


def _last_column(g: Generation) -> int:
    """Columns an answer's row needs: its cache and every token it may still write."""
    return g.position + g.config.max_new_tokens - len(g.token_ids)

