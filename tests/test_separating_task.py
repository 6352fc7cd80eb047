"""scripts/separating_task.py: the two block layouts cut the same ids, ``straddle`` parts every key from its value,
and the scorer gives the plain forward's answers."""

from __future__ import annotations

import pytest
import torch

from lit_block.model import BlockAttentionLM
from test_distill_recipe import load_script

task = load_script("separating_task")


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return BlockAttentionLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()


def test_layouts_cut_the_same_ids_and_straddle_parts_keys_from_values(tiny):
    samples = task.make_samples(tiny.tokenizer, n=5, pairs=4, seed=1)
    for s in samples:
        n_context = sum(map(len, s["pieces"]))
        for layout in task.LAYOUTS:
            ids = task.block_ids_of(s, layout)
            assert len(ids) == n_context + len(s["query"]) and ids[n_context:] == [-1] * len(s["query"])
            assert ids[:n_context] == sorted(ids[:n_context])  # blocks in order, each contiguous
        starts = [sum(map(len, s["pieces"][:i])) for i in range(len(s["pieces"]))]
        for key in range(1, len(s["pieces"]), 2):  # each key's last token and its value's first token
            last_of_key, first_of_value = starts[key + 1] - 1, starts[key + 1]
            within, straddle = (task.block_ids_of(s, layout) for layout in task.LAYOUTS)
            assert within[last_of_key] == within[first_of_value]
            assert straddle[last_of_key] != straddle[first_of_value]
        assert len(set(s["candidates"])) == 4 and 0 <= s["gold"] < 4


def test_answers_are_the_forward_pass_log_probabilities(tiny):
    sample = task.make_samples(tiny.tokenizer, n=1, pairs=3, seed=2)[0]
    ids = torch.tensor([[t for p in sample["pieces"] for t in p] + sample["query"]])
    with torch.no_grad():
        full = tiny(ids, full_attention=True).logits[0, -1].log_softmax(-1)
        block = tiny(ids, torch.tensor([task.block_ids_of(sample, "straddle")])).logits[0, -1].log_softmax(-1)
    torch.testing.assert_close(task.answer(tiny, sample, None), full[sample["candidates"]])
    torch.testing.assert_close(task.answer(tiny, sample, "straddle"), block[sample["candidates"]])
    assert not torch.allclose(full, block)  # the layouts do differ for the model


def test_table_reports_each_layouts_gap_and_a_students_share_of_it():
    correct = {("teacher", "full"): [True] * 8 + [False] * 2, ("teacher", "within"): [True] * 5 + [False] * 5,
               ("teacher", "straddle"): [True] * 2 + [False] * 8,
               ("student", "full"): [True] * 8 + [False] * 2, ("student", "within"): [True] * 6 + [False] * 4,
               ("student", "straddle"): [True] * 5 + [False] * 5}
    out = task.table(correct, "teacher")
    assert out.startswith("task gap (teacher: full attention - block attention, within): 30.0%")
    assert "task gap (teacher: full attention - block attention, straddle): 60.0%" in out
    assert "| student | block, straddle | 50.0% [" in out and "| 50.0% [" in out  # (0.5 - 0.2) / 0.6
    assert "| student | block, within | 60.0% [" in out and "| 33.3% [" in out  # (0.6 - 0.5) / 0.3
