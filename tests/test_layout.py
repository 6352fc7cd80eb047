"""The block layout: packing, sink insertion, the mask, and clear errors for bad input."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from layouts import allowed_keys, random_layout
from lit_block.layout import GLOBAL_BLOCK, block_spans, isolated_blocks, layout_from_tokens, pack_sample


def test_pack_sample_places_sinks_before_every_block():
    layout = pack_sample([[10, 11], [12]], [13, 14], num_sinks=2, sink_token_id=0)
    assert layout.input_ids.tolist() == [[0, 0, 10, 11, 0, 0, 12, 13, 14]]
    assert layout.block_ids.tolist() == [[0, 0, 0, 0, 1, 1, 1, -1, -1]]
    assert layout.sink_mask.tolist() == [[True, True, False, False, True, True, False, False, False]]
    assert layout.token_index.tolist() == [[2, 3, 6, 7, 8]]
    assert layout.position_ids.tolist() == [list(range(9))]


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), num_sinks=st.integers(0, 3))
def test_sink_insertion_keeps_every_token_and_adds_k_sinks_per_block(seed, num_sinks):
    plain = random_layout(seed, num_sinks=0)
    sunk = random_layout(seed, num_sinks=num_sinks)
    # caller tokens land at token_index with their ids and blocks unchanged
    gathered_ids = sunk.input_ids.gather(1, sunk.token_index)
    gathered_blocks = sunk.block_ids.gather(1, sunk.token_index)
    assert torch.equal(gathered_ids[plain.attention_mask], plain.input_ids[plain.attention_mask])
    assert torch.equal(gathered_blocks, plain.block_ids)
    for b in range(plain.batch_size):
        n_blocks = int(plain.block_ids[b].max()) + 1
        assert int(sunk.sink_mask[b].sum()) == num_sinks * n_blocks
        # every sink belongs to the block whose first token follows its run
        sinks = torch.nonzero(sunk.sink_mask[b]).flatten().tolist()
        for s in sinks:
            nxt = next(t for t in range(s, sunk.seq_len) if not sunk.sink_mask[b, t])
            assert sunk.block_ids[b, s] == sunk.block_ids[b, nxt]


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), num_sinks=st.integers(0, 2))
def test_dense_mask_matches_the_contract_row_by_row(seed, num_sinks):
    layout = random_layout(seed, num_sinks=num_sinks)
    mask = layout.dense_mask()[:, 0]
    for b in range(layout.batch_size):
        for t in range(layout.seq_len):
            if layout.attention_mask[b, t]:
                assert torch.nonzero(mask[b, t]).flatten().tolist() == allowed_keys(layout, b, t)
            else:  # padding sees only itself (finite softmax), and nobody sees padding
                assert torch.nonzero(mask[b, t]).flatten().tolist() == [t]
                assert not mask[b, t + 1 :, t].any()


def test_released_block_rows_see_everything_before_them():
    layout = pack_sample([[1, 2], [3, 4]], [5], released=[False, True])
    mask = layout.dense_mask()[0, 0]
    assert mask[3].tolist() == [True, True, True, True, False]  # block 1 released: sees block 0
    assert mask[1].tolist() == [True, True, False, False, False]  # block 0 isolated
    assert layout.query_is_global().tolist() == [[False, False, True, True, True]]


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: pack_sample([[1], []], [2]), "context block 1 is empty"),
        (lambda: pack_sample([[1]], []), "global block is empty"),
        (lambda: pack_sample([[1]], [2], num_sinks=-1), "num_sinks must be >= 0"),
        (lambda: pack_sample([[1, 2]], [3], num_sinks=2, max_length=4), "over max_length=4"),
        (lambda: pack_sample([[1], [2]], [3], released=[True]), "released has 1 entries for 2 context blocks"),
        (lambda: layout_from_tokens(torch.zeros(1, 3, dtype=torch.long), torch.zeros(1, 4, dtype=torch.long)),
         "does not match input_ids shape"),
        (lambda: layout_from_tokens(torch.zeros(1, 3, dtype=torch.long), torch.tensor([[0, 2, -1]])),
         "block 2 out of order"),
        (lambda: layout_from_tokens(torch.zeros(1, 3, dtype=torch.long), torch.tensor([[1, 1, -1]])),
         "numbered from 0"),
        (lambda: layout_from_tokens(torch.zeros(1, 3, dtype=torch.long), torch.tensor([[0, -1, 0]])),
         "follows a global-block token"),
        (lambda: layout_from_tokens(torch.zeros(3, dtype=torch.long), torch.zeros(3, dtype=torch.long)),
         "must be \\[batch, seq\\]"),
    ],
)
def test_bad_input_gets_a_clear_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@settings(max_examples=200, deadline=None)
@given(rows=st.lists(st.lists(st.tuples(st.integers(-2, 3), st.booleans()), min_size=1, max_size=9), min_size=1, max_size=4))
def test_the_batched_order_check_flags_exactly_the_batches_the_per_sample_check_rejects(rows):
    """``_order_violations`` (one sync per batch) agrees with the per-sample rule that words the error, on random
    ids of every kind: in order, out of order, interleaved, context after global, padding anywhere."""
    from lit_block.layout import _order_violations, _raise_block_order_error

    width = max(len(r) for r in rows)
    rows = [r + [(-1, False)] * (width - len(r)) for r in rows]
    valid = torch.tensor([[v for _, v in r] for r in rows])
    block_ids = torch.where(valid, torch.tensor([[b for b, _ in r] for r in rows]), GLOBAL_BLOCK)
    try:
        _raise_block_order_error(block_ids, valid)
        rejected = False
    except ValueError:
        rejected = True
    assert bool(_order_violations(block_ids, valid).any()) == rejected


def test_padding_is_never_part_of_a_block():
    ids = torch.tensor([[5, 6, 7, 0]])
    layout = layout_from_tokens(ids, torch.tensor([[0, 0, -1, 0]]), torch.tensor([[1, 1, 1, 0]]), num_sinks=1)
    assert layout.block_ids.tolist() == [[0, 0, 0, GLOBAL_BLOCK, GLOBAL_BLOCK]]
    assert layout.attention_mask.tolist() == [[True, True, True, True, False]]


def test_attended_pairs_counts_what_the_dense_mask_allows():
    from layouts import random_layout

    from lit_block.layout import attended_pairs

    for seed in range(5):
        layout = random_layout(seed, num_sinks=0, release_p=0.0)
        ids = layout.block_ids
        block, full = attended_pairs(ids, layout.attention_mask)
        valid = layout.attention_mask
        assert block == layout.dense_mask()[:, 0][valid].sum()  # real query rows only
        n = valid.sum(1)
        assert full == (n * (n + 1) // 2).sum()


def test_sink_slots_give_slot_j_of_every_block_sink_j():
    from lit_block.layout import place_sinks, sink_slots

    layout = pack_sample([[10, 11], [12]], [13, 14], num_sinks=2)
    assert sink_slots(layout).tolist() == [[0, 1, -1, -1, 0, 1, -1, -1, -1]]
    embeds = torch.zeros(1, layout.seq_len, 3)
    sinks = torch.tensor([[1.0] * 3, [2.0] * 3])
    assert place_sinks(embeds, layout, sinks)[0, :, 0].tolist() == [1, 2, 0, 0, 1, 2, 0, 0, 0]
    with pytest.raises(ValueError, match="2 sinks per block, the model 1"):
        place_sinks(embeds, layout, sinks[:1])  # a layout built for another model


def test_isolated_blocks_and_spans_are_the_packed_layout():
    blocks, query, k = [[5, 6, 7], [8], [9, 10]], [11, 12], 2
    packed = layout_from_tokens(torch.tensor([[t for b in blocks for t in b] + query]),
                                torch.tensor([[i for i, b in enumerate(blocks) for _ in b] + [-1] * len(query)]), num_sinks=k)
    spans, global_start = block_spans([len(b) for b in blocks], k)
    for (start, length), block in zip(spans, blocks):
        assert packed.sink_mask[0, start : start + k].all() and not packed.sink_mask[0, start + k : start + length].any()
        assert packed.input_ids[0, start + k : start + length].tolist() == block
    assert int(packed.token_index[0, -len(query)]) == global_start
    alone = isolated_blocks(blocks, k)
    assert alone.attention_mask.sum(1).tolist() == [k + len(b) for b in blocks]  # padded at the end only
    for i, (start, length) in enumerate(spans):
        assert torch.equal(alone.input_ids[i, :length], packed.input_ids[0, start : start + length])
