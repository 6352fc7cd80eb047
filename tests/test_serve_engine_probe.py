"""The serving probe's accounting of device time (``scripts/serve_engine_probe.py``), on hand-made profiler events:
a GPU run's figures rest on it, and a CPU profile has no kernels to check it with."""

from __future__ import annotations

from types import SimpleNamespace

from torch.autograd import DeviceType

from conftest import load_script

probe = load_script("serve_engine_probe")


class Span(SimpleNamespace):
    def elapsed_us(self) -> float:
        return self.end - self.start


def cpu(key, parent=None, kernels=()):
    return SimpleNamespace(key=key, cpu_parent=parent, kernels=list(kernels), device_type=DeviceType.CPU,
                           time_range=Span(start=0, end=1))


def gpu(key, start, end):
    return SimpleNamespace(key=key, cpu_parent=None, kernels=[], device_type=DeviceType.CUDA,
                           time_range=Span(start=start, end=end))


def kernel(name, us):
    return SimpleNamespace(name=name, duration=us)


def profiler_of(events):
    return SimpleNamespace(events=lambda: events)


def test_kernels_go_to_the_engine_range_above_their_operator_and_the_rest_is_unattributed():
    fetch = cpu("engine.fetch[3]")
    linear = cpu("aten::linear", parent=fetch)
    mm = cpu("aten::mm", parent=linear, kernels=[kernel("gemm", 3000)])  # nested: found through two parents
    queries = cpu("engine.queries[3]")
    attention = cpu("aten::sdpa", parent=queries, kernels=[kernel("fmha", 1000)])
    events = [fetch, linear, mm, queries, attention,
              gpu("engine.fetch[3]", 0, 9000),  # the range's device-side twin: neither a request nor kernel time
              gpu("gemm", 0, 3000), gpu("fmha", 3000, 4000), gpu("graph kernel", 5000, 7000)]
    text = probe.kernels_by_phase(profiler_of(events))
    assert "3 requests admitted" in text  # counted once, not again for the GPU twin
    assert "engine.fetch: 3.0 ms, 1.00 per request" in text
    assert "engine.queries: 1.0 ms, 0.33 per request" in text
    assert "unattributed (CUDA graph replays, copies): 2.0 ms" in text  # the graph's kernel, launched by no operator


def test_the_busy_share_leaves_out_the_engine_ranges_which_span_the_gaps():
    events = [cpu("engine.fetch[1]"), gpu("engine.fetch[1]", 0, 1000), gpu("a", 0, 200), gpu("b", 100, 300),
              gpu("c", 900, 1000)]
    assert "busy 0.4 of 1.0 ms" in probe.device_busy(profiler_of(events))  # [0, 300] and [900, 1000]
