"""The model's one worker thread: requests queue up, their block misses are prefilled together, answers decode together.

    engine = ServingEngine(model, BlockKVStore(max_bytes=4 << 30))
    job = Job(engine.generation(blocks, query, config), stream=True, notify=callback)
    engine.submit(job)   # callback("first" | "delta" | "done" | "error", payload) from the worker thread

One thread owns the model and the store, so nothing else ever touches them and no lock is needed
around a forward pass. Each turn of its loop:

1. decode: every active answer chooses its next token and all of them run in one forward
   (``lit_block.serving.decode_batch``: their caches as rows of one slab; ``batch_decode=False`` runs
   one forward per answer instead), so a long answer delays a new request's first token by one
   step, not by its whole length. The step is queued on the device, not waited for;
2. admit: take the queued requests (waiting ``batch_window_s`` after an idle spell, so that a burst
   of concurrent requests is admitted together), up to ``max_batch_requests``;
3. fetch: one ``BlockKVStore.fetch`` over all admitted requests' blocks -- a block that several of
   them miss is prefilled once, and all misses go through the model in a few padded batches --
   queued while the device still runs the step (the host's launches of an eager forward take longer
   than a decoding step's device time); then the step's tokens are read;
4. prefill: each request's cache is assembled and its query prefilled (``batch_queries``: all of them in one
   forward, in the rows of the decode slab they then decode in, ``DecodeBatch.prefill``): each request's first
   token's logits (TTFT).

The host waits for the device twice a turn, for the step's tokens and for the first tokens; every other copy
to the device is asynchronous (``lit_block.host_copies``), so the host queues the next forward while the
device runs the last one.

Every answer is a :class:`lit_block.serving.generation.Generation`, the same object ``generate`` steps
through, with its own cache (an assembled copy, then its row of the decode slab: a request never writes
into a stored block), its own sampling generator, and its errors caught and reported to it alone.
"""

from __future__ import annotations

import os
import queue
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from lit_block.attention.transformers_hook import resolve_decode_kernel
from lit_block.serving.decode_batch import DecodeBatch, LaunchedStep
from lit_block.serving.engine_options import MAX_BATCH_REQUESTS
from lit_block.serving.generation import Generation, GenerationConfig
from lit_block.serving.kv_store import BlockKVStore, model_fingerprint
from lit_block.serving.metrics import ServerMetrics
from lit_block.serving.pointwise_compile import compile_pointwise


def prefer_expandable_segments() -> None:
    """Ask torch's CUDA allocator for expandable segments, unless the user chose a setting; call before any CUDA
    allocation. A server's decode slab is rebuilt in sizes that change with its rows and columns (GBs at 8B), and with
    fixed segments the freed ones fragment: an H100 holding the whole store ran out of memory with 19.6 GiB reserved
    but unallocated."""
    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")


@dataclass
class Job:
    """One request inside the engine."""

    generation: Generation
    stream: bool  # send text deltas as they become stable, not only the finished answer
    notify: Callable[[str, object], None]  # called from the worker thread: must be thread-safe and not block
    cancelled: threading.Event = field(default_factory=threading.Event)  # the client went away
    sent: str = ""  # text already streamed
    queue_s: float = 0.0  # from arrival to admission

    def emit(self, kind: str, payload: object = None) -> None:
        try:
            self.notify(kind, payload)
        except RuntimeError:  # the request's event loop is gone (server shutting down): nobody to tell
            self.cancelled.set()


class ServingEngine:
    """The worker (see the module doc). ``store=None``: caching off, every prompt prefilled whole with plain causal
    attention (the full-prefill baseline)."""

    def __init__(self, model, store: BlockKVStore | None, max_batch_requests: int = MAX_BATCH_REQUESTS,
                 max_active_requests: int = 64, batch_window_s: float = 0.005, metrics: ServerMetrics | None = None,
                 batch_decode: bool = True, sync_phases: bool = False, batch_queries: bool | None = None,
                 decode_kernel: str = "auto", fuse_pointwise: bool = False):
        """``sync_phases``: wait for the accelerator at the end of each phase of the loop, so that the phase times
        (``/metrics``' ``engine_seconds_total``) hold their own GPU work instead of the next phase's (a profiling aid:
        it costs the overlap of host and device). ``batch_queries``: the queries of an admission batch run in one
        forward, in the decode slab's rows (``DecodeBatch.prefill``; with ``batch_decode``), instead of one forward
        each; None: on a GPU (where a forward of several short queries costs about what one costs, docs/serve.md),
        off on CPU (where a forward costs in proportion to its rows and batching measured no gain).
        ``decode_kernel``: the batched decoding step's attention (``padded_rows_attention``: ``sdpa``, ``split-key``,
        Triton's, for GPUs, or ``auto``: ``resolve_decode_kernel``). ``fuse_pointwise``: compile the model's norms and
        MLPs in place (``lit_block.serving.pointwise_compile``) before serving."""
        self.model, self.store = model, store
        if fuse_pointwise:
            compile_pointwise(model)
        device = next(model.parameters()).device
        on_gpu = device.type == "cuda"
        self.sync_phases = sync_phases and on_gpu
        # once: the served weights never change, and hashing them costs 40 ms per lookup on the 135M model
        self.fingerprint = model_fingerprint(model) if store is not None else None
        self.max_batch_requests, self.max_active_requests = max_batch_requests, max_active_requests
        self.batch_window_s = batch_window_s
        self.metrics = metrics or ServerMetrics()
        kernel = resolve_decode_kernel(decode_kernel, str(device))
        self.decoder = DecodeBatch(model, kernel) if batch_decode else None  # None: one forward per answer per turn
        self.batch_queries = on_gpu if batch_queries is None else batch_queries
        self._pending: queue.Queue[Job | None] = queue.Queue()
        self._active: list[Job] = []
        self._closed = False
        self._warned_fallback = False
        self._thread = threading.Thread(target=self._run, name="lit-block-engine", daemon=True)
        self._thread.start()

    @property
    def caching(self) -> bool:
        return self.store is not None

    def generation(self, blocks: Sequence[str | Sequence[int]], query: str | Sequence[int], config: GenerationConfig,
                   started: float | None = None) -> Generation:
        """An answer as this engine computes it (block path with the store, or full prefill without)."""
        return Generation(self.model, blocks, query, config, full_attention=not self.caching, started=started)

    def submit(self, job: Job) -> None:
        if self._closed:
            raise RuntimeError("the server is shutting down")
        self._pending.put(job)

    def close(self, timeout: float = 10.0) -> None:
        self._closed = True
        self._pending.put(None)
        self._thread.join(timeout)

    def gauges(self) -> dict[str, int]:
        return {"active_requests": len(self._active), "queued_requests": self._pending.qsize()}

    # ---------------------------------------------------------------- the loop

    def _run(self) -> None:
        while True:
            with self._phase("decode"):
                launched = self._launch_decode()
            jobs = self._admit()
            if jobs is None:
                break
            # the admission's misses are queued while the device runs the step; the queries wait for the step's
            # tokens, as their forward may reallocate the slab the step writes
            fetched = self._fetch_all(jobs)
            with self._phase("decode"):
                self._finish_decode(launched)
            if jobs:
                with self._phase("prefill"):
                    self._prefill_queries(jobs, fetched)
        for job in self._active:
            job.emit("error", RuntimeError("the server is shutting down"))
        self._active.clear()
        while not self._pending.empty():
            job = self._pending.get_nowait()
            if job is not None:
                job.emit("error", RuntimeError("the server is shutting down"))

    def _admit(self) -> list[Job] | None:
        """Queued requests to prefill now (None: shut down)."""
        jobs: list[Job] = []
        room = min(self.max_batch_requests, self.max_active_requests - len(self._active))
        if room <= 0:
            return jobs
        if not self._active:  # idle: wait for work, then for the rest of its burst
            job = self._pending.get()
            if job is None:
                return None
            jobs.append(job)
            if self.batch_window_s > 0:
                time.sleep(self.batch_window_s)
        while len(jobs) < room:
            try:
                job = self._pending.get_nowait()
            except queue.Empty:
                break
            if job is None:
                if not jobs:
                    return None
                self._pending.put(None)  # seen at the next admission: the jobs taken already are answered first
                break
            jobs.append(job)
        now = time.perf_counter()
        for job in jobs:
            job.queue_s = now - job.generation.started
        return [job for job in jobs if not job.cancelled.is_set()]

    @contextmanager
    def _phase(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            if self.sync_phases:
                torch.cuda.synchronize()
            self.metrics.spent(name, time.perf_counter() - start)

    def _fetch_all(self, jobs: list[Job]) -> dict[int, list | Exception]:
        if not jobs:
            return {}
        self.metrics.add(admissions=1)
        with self._phase("fetch"):
            return self._fetch(jobs) if self.caching else {}

    def _prefill_queries(self, jobs: list[Job], fetched: dict[int, list | Exception]) -> None:
        batch = self.batch_queries and self.caching and self.decoder is not None and len(jobs) > 1
        batched = []
        for job in jobs:
            try:
                found = fetched.get(id(job))
                if isinstance(found, Exception):
                    raise found
                if batch and job.generation.blocks:
                    job.generation.assemble(self.store, fetched=found, fingerprint=self.fingerprint)
                    batched.append(job)
                    continue
                job.generation.prefill(self.store, fetched=found, fingerprint=self.fingerprint, own_cache=True)
            except Exception as err:  # noqa: BLE001 - this request fails; the others, the store and the loop go on
                job.emit("error", err)
                continue
            self._first_token(job)
        if not batched:
            return
        rebuilds = self.decoder.rebuilds
        try:
            logits = self.decoder.prefill([job.generation for job in batched])
            self.metrics.add(query_batches=1)
        except Exception as err:  # noqa: BLE001 - the shared forward failed: each query alone, so only a culprit fails
            logits = [None] * len(batched)
            self.metrics.add(query_batch_fallbacks=1)
            if not self._warned_fallback:  # once: a forward that always fails would otherwise only be slow
                self._warned_fallback = True
                warnings.warn(f"the batched query forward failed, each query runs alone: {err!r}", stacklevel=2)
        self.metrics.add(decode_slab_rebuilds=self.decoder.rebuilds - rebuilds)
        for job, first in zip(batched, logits):
            try:
                if first is None:
                    job.generation.prefill_query()
                else:
                    job.generation.prefilled(first)
            except Exception as err:  # noqa: BLE001
                job.emit("error", err)
                continue
            self._first_token(job)

    def _first_token(self, job: Job) -> None:
        """``job``'s prompt is prefilled: count it, tell its client, and let it decode."""
        generation = job.generation
        prompt = sum(map(len, generation.blocks)) + len(generation.query_ids)
        stats = generation.block_stats
        self.metrics.prefilled(generation.ttft_s, stats.get("hits", 0), stats.get("misses", 0),
                               generation.cached_tokens, prompt)
        job.emit("first")
        self._active.append(job)

    def _fetch(self, jobs: list[Job]) -> dict[int, list | Exception]:
        """Every job's blocks from the store, its misses and the other jobs' prefilled together."""
        with_blocks = [job for job in jobs if job.generation.blocks]
        out: dict[int, list | Exception] = {id(job): [] for job in jobs}
        if not with_blocks:
            return out
        self.metrics.add(prefill_batches=1)
        try:
            flat = self.store.fetch(self.model, [b for job in with_blocks for b in job.generation.blocks], self.fingerprint)
        except Exception:  # noqa: BLE001 - find the culprit: each job on its own, so the others still get answers
            for job in with_blocks:
                try:
                    out[id(job)] = self.store.fetch(self.model, job.generation.blocks, self.fingerprint)
                except Exception as err:  # noqa: BLE001
                    out[id(job)] = err
            return out
        start = 0
        for job in with_blocks:
            n = len(job.generation.blocks)
            out[id(job)] = flat[start : start + n]
            start += n
        return out

    def _launch_decode(self) -> LaunchedStep | None:
        """Every active answer chooses its next token; those that go on run it: queued as one batched step (finished
        by ``_finish_decode``), or one forward each (done here)."""
        going, tokens = [], []
        for job in self._active:
            if job.cancelled.is_set():
                continue
            generation = job.generation
            try:
                token = generation.choose()
            except Exception as err:  # noqa: BLE001 - as in _prefill_queries: only this request fails
                job.emit("error", err)
                continue
            if job.stream:
                stable = generation.stable_text()
                if len(stable) > len(job.sent) and stable.startswith(job.sent):
                    job.emit("delta", stable[len(job.sent):])
                    job.sent = stable
            if token is None:
                self.metrics.add(completion_tokens=len(generation.token_ids))
                job.emit("done", generation.result())
            else:
                going.append(job)
                tokens.append(token)
        if self.decoder is None:
            # survivors go into a new list: removing a failed answer from the one being walked would hand the
            # next answer's token to the one after it
            self._active = []
            for job, token in zip(going, tokens):
                try:
                    job.generation.run(token)
                except Exception as err:  # noqa: BLE001
                    job.emit("error", err)
                    continue
                self.metrics.add(decode_steps=1, decode_rows=1)
                self._active.append(job)
            return None
        self._active = going
        if not going:
            self.decoder.free_rows()  # idle: the slab stays allocated (and its CUDA graph captured) for the next wave
            return None
        rebuilds = self.decoder.rebuilds
        try:
            launched = self.decoder.launch([job.generation for job in going], tokens)
        except Exception as err:  # noqa: BLE001 - the shared forward failed (out of memory, say): its answers fail
            self._fail_decoding(err)
            return None
        self.metrics.add(decode_steps=1, decode_rows=len(going), decode_slab_rebuilds=self.decoder.rebuilds - rebuilds)
        return launched

    def _finish_decode(self, launched: LaunchedStep | None) -> None:
        if launched is None:
            return
        try:
            self.decoder.finish(launched)
        except Exception as err:  # noqa: BLE001
            self._fail_decoding(err)

    def _fail_decoding(self, err: Exception) -> None:
        for job in self._active:
            job.emit("error", err)
        self._active = []
        self.decoder.clear()
