"""Host-to-device copies that do not wait for the device, and a server's path from its block misses to its queries'
logits that never waits either (so the host builds the next forward while the device runs the last one)."""

from __future__ import annotations

import pytest
import torch

from lit_block.host_copies import copy_to_device, to_device
from lit_block.serving import BlockKVStore
from lit_block.serving.decode_batch import DecodeBatch
from lit_block.serving.generation import Generation, GenerationConfig
from lit_block.serving.kv_store import model_fingerprint
from test_serving import random_blocks, tiny_lm


@pytest.mark.parametrize("view", ["transposed", "expanded"])
@pytest.mark.parametrize("dtype", [torch.long, torch.bool, torch.float32])
def test_copies_keep_values_shape_and_dtype(dtype, view):
    base = (torch.arange(12).reshape(3, 4) % 3).to(dtype)
    src = base.T if view == "transposed" else base[:1].T.expand(4, 3)  # expanded: stride 0, as a layout's positions
    device = "cuda" if torch.cuda.is_available() else "cpu"
    moved = to_device(src, device)
    assert moved.device.type == device and moved.dtype == dtype and torch.equal(moved.cpu(), src)
    dst = torch.zeros(4, 3, dtype=dtype, device=device)
    copy_to_device(dst, src)
    assert torch.equal(dst.cpu(), src)


@pytest.mark.cuda
def test_a_copy_to_the_device_does_not_wait_for_it_where_a_plain_one_does():
    src = torch.arange(1000)
    torch.cuda.set_sync_debug_mode("error")
    try:
        moved = to_device(src, "cuda")
        with pytest.raises(RuntimeError, match="synchroniz"):  # the check itself catches a waiting copy
            src.to("cuda")
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.equal(moved.cpu(), src)


@pytest.mark.cuda
def test_misses_assembly_and_slab_queries_never_wait_for_the_device():
    """``BlockKVStore.fetch`` (prefilling misses), ``Generation.assemble`` (keys moved into place) and
    ``DecodeBatch.prefill`` (the queries' forward) queue their work without the host waiting for the device: the
    first wait is the caller's read of the logits."""
    lm = tiny_lm(sinks=2).cuda()
    prompts = [(random_blocks([5, 11, 9], seed=1), random_blocks([4], seed=11)[0]),
               (random_blocks([9, 2], seed=2), random_blocks([6], seed=12)[0])]
    store, batch, fingerprint = BlockKVStore(), DecodeBatch(lm), model_fingerprint(lm)  # as the engine: once

    def logits():
        answers = [Generation(lm, blocks, query, GenerationConfig(max_new_tokens=2)) for blocks, query in prompts]
        fetched = store.fetch(lm, [b for g in answers for b in g.blocks], fingerprint)  # misses the first time
        for g, start in zip(answers, (0, len(answers[0].blocks))):
            g.assemble(store, fetched=fetched[start : start + len(g.blocks)], fingerprint=fingerprint)
        out = batch.prefill(answers)
        batch.clear()
        return out

    expected = [t.cpu() for t in logits()]  # warm-up: lazy initialisations may wait once
    store.clear()
    for _ in range(2):  # misses, then hits
        torch.cuda.set_sync_debug_mode("error")
        try:
            got = logits()
        finally:
            torch.cuda.set_sync_debug_mode("default")
        for a, b in zip(got, expected):
            torch.testing.assert_close(a.cpu(), b)
