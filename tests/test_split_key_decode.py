"""Split-key decode attention against SDPA's (``padded_rows_attention``): random masks, GQA, batch > 1. On CPU it runs
under Triton's interpreter (float32 and float16; the interpreter's bfloat16 dot is broken), on CUDA compiled."""

from __future__ import annotations

import os

import pytest
import torch
from conftest import decode_together

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # read when the kernel is decorated: before the import below
triton = pytest.importorskip("triton")

from lit_block.attention.split_key_decode import split_key_attention  # noqa: E402
from lit_block.attention.transformers_hook import padded_rows_attention  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPES = [torch.float32, torch.float16] + ([torch.bfloat16] if DEVICE == "cuda" else [])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(3, 8, 2, 700, 64), (2, 4, 4, 130, 32), (4, 32, 8, 1500, 128), (1, 16, 8, 33, 64)])
@pytest.mark.parametrize("slab_view", [False, True])
def test_split_key_attention_equals_sdpa(shape, dtype, slab_view):
    batch, heads, kv_heads, seq, dim = shape
    g = torch.Generator().manual_seed(seq)
    spare = 37 if slab_view else 0  # the decode slab hands attention a view of its first columns: not contiguous
    q, k, v = (torch.randn(batch, h, n, dim, generator=g).to(DEVICE, dtype)
               for h, n in ((heads, 1), (kv_heads, seq + spare), (kv_heads, seq + spare)))
    k, v = k[:, :, :seq], v[:, :, :seq]
    start = torch.randint(0, seq, (batch,), generator=g)
    mask = torch.arange(seq)[None] >= start[:, None]  # left padding, as the decode slab's rows
    mask[:, -1] = True  # every row sees its new token
    mask = mask.to(DEVICE)
    want = padded_rows_attention(q, k, v, mask).float()
    got = split_key_attention(q, k, v, mask, split=256, block_n=64).float()
    tolerance = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 2e-2}[dtype]
    torch.testing.assert_close(got, want, atol=tolerance, rtol=tolerance)


def test_batched_decoding_with_split_key_equals_sdpa(tiny_model_dir, monkeypatch):
    """The decode slab's step with either kernel, and on CUDA replayed from a graph, the queries prefilled alone or in
    the slab's rows: answers of different lengths joining at different steps (free rows, reallocations, masked
    columns) decode the same greedy tokens, from logits that agree."""
    from lit_block import BlockAttentionLM
    from lit_block.serving import BlockKVStore, Generation, GenerationConfig
    from lit_block.serving.decode_batch import DecodeBatch

    import lit_block.attention.split_key_decode as kernel_module

    calls = []  # the split-key runs really reach the kernel
    monkeypatch.setattr(kernel_module, "split_key_attention",
                        lambda *a, real=kernel_module.split_key_attention: calls.append(1) or real(*a))
    lm = BlockAttentionLM.from_pretrained(tiny_model_dir, num_sink_tokens=2).eval().to(DEVICE)
    g = torch.Generator().manual_seed(0)
    prompts = [([torch.randint(4, 500, (n,), generator=g).tolist() for n in (30 + 17 * i, 9)],
                torch.randint(4, 500, (3 + i,), generator=g).tolist()) for i in range(5)]
    joins = [0, 0, 2, 5, 5]
    results = {}
    graphs = []
    runs = [("sdpa", False, False), ("split-key", False, False), ("sdpa", False, True)]
    runs += [("split-key", True, False), ("split-key", True, True)] if DEVICE == "cuda" else [("split-key", False, True)]
    for kernel, graph, in_slab in runs:
        batch, logits = DecodeBatch(lm, kernel, graphs=graph), []
        answers = [Generation(lm, blocks, query, GenerationConfig(max_new_tokens=4 + 2 * i, do_sample=False,
                                                                  stop_at_eos=False))
                   for i, (blocks, query) in enumerate(prompts)]
        for answer in answers:  # every logits vector an answer is handed, in order
            accept = answer.accept
            answer.accept = lambda row, accept=accept: logits.append(row.cpu()) or accept(row)
        decode_together(batch, answers, joins, BlockKVStore(), lambda active: graphs.append(batch._graph is not None),
                        queries_in_slab=in_slab)
        results[kernel, graph, in_slab] = [a.token_ids for a in answers], logits
    assert len(calls) > 0 and len(calls) % lm.config.num_hidden_layers == 0  # every layer of every step
    tokens, logits = results["sdpa", False, False]
    for key, (other_tokens, other_logits) in results.items():
        assert other_tokens == tokens, key
        torch.testing.assert_close(torch.stack(other_logits), torch.stack(logits), atol=1e-4, rtol=1e-4)
    assert any(graphs) == (DEVICE == "cuda")  # on CUDA some steps were replayed
