"""The server's counters, rendered in Prometheus' text exposition format (``GET /metrics``).

Store counters (hits, misses, evictions, entries, bytes) are read from the ``BlockKVStore`` at each
scrape; request counters and the TTFT histogram are kept here. The format is a few lines of text,
so it is written directly rather than through a client library (one dependency fewer).
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections import Counter

TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)  # seconds, Prometheus' upper bounds


class ServerMetrics:
    """Counters updated by the engine and the request handlers (any thread), read by ``/metrics``."""

    def __init__(self):
        self._lock = threading.Lock()
        self.requests: Counter[tuple[str, int]] = Counter()  # (endpoint, HTTP status) -> count
        self.totals: Counter[str] = Counter()  # token and block counters of finished prefills and answers
        self.ttft_counts = [0] * (len(TTFT_BUCKETS) + 1)  # per bucket, the last one past every bound (+Inf)
        self.ttft_sum = 0.0
        self.phase_seconds: Counter[str] = Counter()  # the engine's wall time per phase of its loop

    def request(self, endpoint: str, status: int) -> None:
        with self._lock:
            self.requests[(endpoint, status)] += 1

    def prefilled(self, ttft_s: float, hits: int, misses: int, cached_tokens: int, prompt_tokens: int) -> None:
        """One answer's prompt is prefilled: its TTFT and what its blocks cost."""
        with self._lock:
            self.ttft_counts[bisect_left(TTFT_BUCKETS, ttft_s)] += 1
            self.ttft_sum += ttft_s
            self.totals.update(request_block_hits=hits, request_block_misses=misses, cached_prompt_tokens=cached_tokens,
                               prompt_tokens=prompt_tokens)

    def add(self, **counts: int) -> None:
        with self._lock:
            self.totals.update(counts)

    def spent(self, phase: str, seconds: float) -> None:
        with self._lock:
            self.phase_seconds[phase] += seconds

    def render(self, store: dict[str, int] | None, gauges: dict[str, int]) -> str:
        """The exposition text: store counters (``store.stats()``; None when caching is off), gauges, requests,
        token totals and the TTFT histogram."""
        out: list[str] = []

        def metric(name: str, kind: str, help_: str, samples: list[tuple[str, float]]) -> None:
            out.extend([f"# HELP lit_block_{name} {help_}", f"# TYPE lit_block_{name} {kind}"])
            out.extend(f"lit_block_{name}{labels} {_number(value)}" for labels, value in samples)

        if store is not None:
            for key, kind, help_ in (("hits", "counter", "block lookups served from the store"),
                                     ("misses", "counter", "blocks prefilled into the store"),
                                     ("evictions", "counter", "blocks evicted to stay under the byte budget")):
                metric(f"store_{key}_total", kind, help_, [("", store[key])])
            metric("store_entries", "gauge", "blocks in the store", [("", store["entries"])])
            metric("store_bytes", "gauge", "bytes of the cached blocks", [("", store["bytes"])])
            metric("store_max_bytes", "gauge", "the store's byte budget", [("", store["max_bytes"])])
        for name, value in gauges.items():
            metric(name, "gauge", name.replace("_", " "), [("", value)])
        with self._lock:
            requests = sorted(self.requests.items())
            totals = dict(self.totals)
            counts, ttft_sum = list(self.ttft_counts), self.ttft_sum
            phases = sorted(self.phase_seconds.items())
        metric("requests_total", "counter", "requests by endpoint and HTTP status",
               [(f'{{endpoint="{e}",status="{s}"}}', n) for (e, s), n in requests])
        for key, help_ in (("prompt_tokens", "prompt tokens of prefilled requests (sinks excluded)"),
                           ("cached_prompt_tokens", "prompt tokens whose blocks were found in the store"),
                           ("completion_tokens", "generated tokens"),
                           ("request_block_hits", "blocks of requests found in the store"),
                           ("request_block_misses", "blocks of requests prefilled for them (shared by a batch)"),
                           ("admissions", "turns of the engine that admitted requests (and prefilled them together)"),
                           ("prefill_batches", "batches of requests whose block misses were prefilled together"),
                           ("query_batches", "forwards that ran several requests' queries together in the decode slab"),
                           ("query_batch_fallbacks", "such forwards that failed, their queries then run one by one"),
                           ("decode_steps", "decode forwards (one per active answer with batched decoding off)"),
                           ("decode_rows", "answers those forwards advanced (divided by decode_steps: rows per step)"),
                           ("decode_slab_rebuilds", "decode slabs rebuilt to take new answers (each copies every live "
                            "answer's cache)")):
            metric(f"{key}_total", "counter", help_, [("", totals.get(key, 0))])
        metric("engine_seconds_total", "counter", "the engine's wall time by phase: fetch (store lookups and block "
               "prefills), prefill (caches assembled, queries prefilled), decode (tokens chosen, one batched step)",
               [(f'{{phase="{k}"}}', v) for k, v in phases])
        cumulative, samples = 0, []
        for bound, n in zip([*map(_number, TTFT_BUCKETS), "+Inf"], counts):
            cumulative += n
            samples.append((f'_bucket{{le="{bound}"}}', cumulative))
        samples += [("_sum", ttft_sum), ("_count", cumulative)]
        out.extend(["# HELP lit_block_ttft_seconds time from a request's arrival to its first token's logits",
                    "# TYPE lit_block_ttft_seconds histogram"])
        out.extend(f"lit_block_ttft_seconds{suffix} {_number(value)}" for suffix, value in samples)
        return "\n".join(out) + "\n"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))
