"""QueryPrefill: static cache buffers, padded query buckets and graph replay give the eager path's answers.

On CPU the "graph" re-runs the captured forward on its static inputs, so the padding, the static
buffers, the kept-logits index and the cache length are checked here; the CUDA test checks the
captured graph itself on a GPU.
"""

from __future__ import annotations

import pytest
import torch

from lit_block.serving import BlockKVStore, GenerationConfig, generate
from lit_block.serving.query_prefill import QueryPrefill
from test_serving import forward_last_logits, random_blocks, tiny_lm


def with_runner(lm, **kwargs) -> QueryPrefill:
    kwargs.setdefault("capture_after", 1)  # a graph at the first sighting, unless a test says otherwise
    lm._lit_block_query_prefill = runner = QueryPrefill(lm, use_graphs=True, **kwargs)
    return runner


@pytest.mark.parametrize("query_len", [1, 5, 8, 9])
def test_padded_static_prefill_equals_the_block_attention_forward(query_len):
    lm = tiny_lm("qwen3", sinks=2)
    runner = with_runner(lm, bucket=8)
    *blocks, query = random_blocks([7, 12, 3, query_len], seed=query_len)
    store = BlockKVStore()
    expected = forward_last_logits(lm, blocks, query)
    first = generate(lm, blocks, query, GenerationConfig(max_new_tokens=1), store=store)
    again = generate(lm, blocks, query, GenerationConfig(max_new_tokens=1), store=store)  # replays the same entry
    assert list(runner.graphs) == [(first.context_tokens, runner.padded(query_len))]
    assert (first.first_token_logits - expected).abs().max() < 1e-4
    assert (again.first_token_logits - expected).abs().max() < 1e-4


def test_decoding_after_a_padded_prefill_matches_the_eager_path():
    lm = tiny_lm("llama", sinks=1)
    *blocks, query = random_blocks([9, 6, 5], seed=3)
    greedy = GenerationConfig(max_new_tokens=6, stop_at_eos=False)
    eager = generate(lm, blocks, query, greedy)  # no runner: fresh buffers, eager forward
    with_runner(lm, bucket=16)  # the query's 5 tokens padded to 16: the padding must not leak into decoding
    static = generate(lm, blocks, query, greedy)
    assert static.token_ids == eager.token_ids
    assert (static.first_token_logits - eager.first_token_logits).abs().max() < 1e-5


def test_graphs_are_kept_per_shape_evicted_lru_and_dropped_when_weights_move():
    lm = tiny_lm("llama", sinks=0)
    runner = with_runner(lm, bucket=4, max_graphs=2)
    one = GenerationConfig(max_new_tokens=1)
    for lengths in ([5, 3], [6, 3], [6, 7], [5, 3]):
        *blocks, query = random_blocks(lengths, seed=sum(lengths))
        result = generate(lm, blocks, query, one)
        assert (result.first_token_logits - forward_last_logits(lm, blocks, query)).abs().max() < 1e-4
    assert list(runner.graphs) == [(6, 8), (5, 4)]  # (context, bucket); (6, 4) was least recently used
    lm.to(torch.float64).to(torch.float32)  # every parameter replaced: graphs captured with the old ones must go
    *blocks, query = random_blocks([4, 2], seed=11)
    result = generate(lm, blocks, query, one)
    assert list(runner.graphs) == [(4, 4)]
    assert (result.first_token_logits - forward_last_logits(lm, blocks, query)).abs().max() < 1e-4


def test_a_shape_is_captured_only_once_seen_capture_after_times(monkeypatch):
    """One-off shapes (most RAG prompts) run eagerly; the second sighting captures, later ones replay; every answer
    equals the block-attention forward either way."""
    from lit_block.serving import query_prefill

    captures = []
    capture = query_prefill.QueryPrefill._capture
    monkeypatch.setattr(query_prefill.QueryPrefill, "_capture", lambda self, *a: captures.append(a[:2]) or capture(self, *a))
    lm = tiny_lm("llama", sinks=1)
    runner = with_runner(lm, bucket=4, capture_after=2)
    one = GenerationConfig(max_new_tokens=1)
    for lengths in ([5, 3], [6, 3], [5, 3], [5, 3], [7, 2]):
        *blocks, query = random_blocks(lengths, seed=sum(lengths))
        result = generate(lm, blocks, query, one)
        assert (result.first_token_logits - forward_last_logits(lm, blocks, query)).abs().max() < 1e-4
    assert captures == [(6, 4)] and list(runner.graphs) == [(6, 4)]  # [5, 3]: 5 context positions + 1 sink
    assert runner.sightings == {(6, 4): 2, (7, 4): 1, (8, 4): 1}  # counted until captured


def test_buffers_grow_to_fit_and_off_graphs_there_are_none():
    lm = tiny_lm("llama", sinks=0)
    block = torch.zeros(3, 2, 1, 4)  # a block's keys: [length, layers, kv_heads, head_dim]
    assert QueryPrefill(lm).buffers(block, 10) is None  # CPU default: eager, fresh buffers
    runner = QueryPrefill(lm, use_graphs=True, bucket=8)
    keys, values = runner.buffers(block, 10)
    assert keys.shape == (4096, 2, 1, 4) and values.shape == keys.shape
    runner.graphs[(1, 8)] = None  # stands for a captured graph over the old buffers
    keys, _ = runner.buffers(block, 5000)
    assert keys.shape[0] == 8192 and not runner.graphs


def test_each_query_keeps_its_own_logits_when_one_graph_serves_several(monkeypatch):
    """A CUDA graph writes its output into one static tensor at every replay, and the server prefills several
    queries of one shape before any of them chooses its first token: each must get a copy of its logits, not a
    view of that tensor (in float32 ``.float()`` copies nothing). The replay is made static here as on a GPU."""
    from lit_block.serving import Generation
    from lit_block.serving import query_prefill

    statics: dict[int, torch.Tensor] = {}
    eager_replay = query_prefill._Graph.replay

    def static_replay(graph):
        out = eager_replay(graph)
        return statics.setdefault(id(graph), torch.empty_like(out)).copy_(out)

    monkeypatch.setattr(query_prefill._Graph, "replay", static_replay)
    lm = tiny_lm("llama", sinks=1)
    with_runner(lm, bucket=8)
    store, blocks = BlockKVStore(), random_blocks([9, 6], seed=3)
    first, second = (Generation(lm, blocks, query, GenerationConfig(max_new_tokens=1))
                     for query in random_blocks([5, 5], seed=4))  # one shape: one graph
    first.prefill(store, own_cache=True)
    kept = first.logits.clone()
    second.prefill(store, own_cache=True)
    assert len(statics) == 1 and not torch.equal(second.logits, kept)
    assert torch.equal(first.logits, kept)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_graph_prefill_equals_the_eager_prefill_on_gpu():
    lm = tiny_lm("qwen3", sinks=2).to("cuda", torch.bfloat16)
    *blocks, query = random_blocks([30, 17, 64, 9], seed=5)
    greedy = GenerationConfig(max_new_tokens=4, stop_at_eos=False)
    runner = QueryPrefill.of(lm)
    assert runner.use_graphs
    store = BlockKVStore()
    results = [generate(lm, blocks, query, greedy, store=store) for _ in range(3)]  # capture, then replays
    assert runner.use_graphs and len(runner.graphs) == 1 and runner.graphs[next(iter(runner.graphs))].graph is not None
    runner.use_graphs = False
    eager = generate(lm, blocks, query, greedy, store=BlockKVStore())
    ids = torch.tensor([[t for b in blocks for t in b] + query], device="cuda")
    block_ids = torch.tensor([[i for i, b in enumerate(blocks) for _ in b] + [-1] * len(query)], device="cuda")
    with torch.no_grad():  # the block-attention forward on the packed sequence, same bf16 weights
        expected = lm(ids, block_ids).logits[0, -1].float().cpu()
    scale = expected.abs().max()
    for r in results:
        assert r.token_ids == eager.token_ids
        assert (r.first_token_logits - eager.first_token_logits).abs().max() < 2e-2 * scale
        assert (r.first_token_logits - expected).abs().max() < 5e-2 * scale  # bf16: rounding differs, not the maths



@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_block_placing_kernel_equals_the_torch_formula(dtype):
    from lit_block.serving.rope import KeyRerotator
    from lit_block.serving.rope_kernel import can_place_blocks

    lm = tiny_lm("llama", sinks=0)
    rot = KeyRerotator(lm.model, lm.config)
    head_dim = lm.config.hidden_size // lm.config.num_attention_heads
    blocks = [torch.randn(n, 3, 2, head_dim, device="cuda").to(dtype) for n in (5, 300, 1, 77)]
    starts = [0, 5, 305, 306]
    fused = torch.full((400, 3, 2, head_dim), 7.0, device="cuda", dtype=dtype)
    assert can_place_blocks(fused[:383], blocks)
    rot.place_blocks(fused[:383], blocks, starts)
    offsets = torch.repeat_interleave(torch.tensor(starts), torch.tensor([5, 300, 1, 77]))
    reference = rot.rotate(torch.cat(blocks).transpose(0, 2), offsets).transpose(0, 2)  # the [..., L, dim] torch path
    assert (fused[:383].float() - reference.float()).abs().max() < (1e-5 if dtype == torch.float32 else 5e-2)
    assert (fused[383:] == 7).all()  # nothing written past the blocks
