"""Windowing real text into packed samples, and batching them."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from datamodules.text_blocks import TextBlocksDataModule, collate_packed, expand_text_files, window_blocks


@settings(max_examples=80, deadline=None)
@given(
    n_tokens=st.integers(0, 600),
    sample=st.integers(40, 200),
    block=st.integers(1, 50),
    glob=st.integers(2, 30),
)
def test_windows_keep_blocks_small_and_score_only_the_global_block(n_tokens, sample, block, glob):
    if glob >= sample:
        return
    tokens = list(range(n_tokens))
    for s in window_blocks(tokens, sample, block, glob):
        ids, blocks, target = s["input_ids"], s["block_ids"], s["target_mask"]
        assert len(ids) == len(blocks) == len(target) <= sample
        assert blocks[-glob:] == [-1] * glob and -1 not in blocks[:-glob]
        sizes = [blocks.count(i) for i in range(max(blocks) + 1)]
        assert all(0 < n <= block for n in sizes)
        assert sum(target) == glob - 1 and all(target[-(glob - 1):])
        assert ids == tokens[ids[0] : ids[0] + len(ids)]  # a contiguous window of the document


def test_collate_right_pads():
    batch = collate_packed(
        [{"input_ids": [5, 6, 7], "block_ids": [0, -1, -1], "target_mask": [False, False, True]},
         {"input_ids": [8], "block_ids": [-1], "target_mask": [False]}],
        pad_token_id=9,
    )
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 9, 9]]
    assert batch["block_ids"].tolist() == [[0, -1, -1], [-1, -1, -1]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["target_mask"].tolist() == [[False, False, True], [False, False, False]]


def test_bundled_texts_are_the_default_and_missing_files_are_named(tmp_path):
    assert len(expand_text_files(None)) >= 3
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        expand_text_files([str(tmp_path / "nope.txt")])


def test_datamodule_builds_batches_from_real_text(tiny_tokenizer_dir):
    dm = TextBlocksDataModule(tokenizer=str(tiny_tokenizer_dir), sample_tokens=128, block_tokens=32, global_tokens=32,
                              batch_size=2)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape[0] == 2
    assert int(batch["target_mask"].sum()) == 2 * 31
    with pytest.raises(ValueError, match="global_tokens"):
        TextBlocksDataModule(sample_tokens=64, global_tokens=64)
