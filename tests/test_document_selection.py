"""A capped run reads documents from every category in turn, not the corpus's first N (which hold a few sources)."""

from __future__ import annotations

from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from datamodules.document_selection import balanced_indices, select_documents


@given(st.lists(st.sampled_from("abcde"), max_size=60), st.integers(0, 70))
def test_the_cap_takes_each_category_in_turn_in_corpus_order(categories, limit):
    chosen = balanced_indices(categories, limit)
    assert chosen == sorted(set(chosen)) and len(chosen) == min(limit, len(categories))
    taken, available = Counter(categories[i] for i in chosen), Counter(categories)
    for c in available:  # a category not exhausted trails no other by more than one document
        assert taken[c] == available[c] or all(taken[c] >= taken[o] - 1 for o in available)
        firsts = [i for i, x in enumerate(categories) if x == c][: taken[c]]
        assert [i for i in chosen if categories[i] == c] == firsts  # its first documents, in order


def test_a_capped_split_covers_every_category_and_leaves_out_what_is_excluded():
    from datasets import Dataset

    rows = Dataset.from_list([{"category": c, "text": f"{c}{i}"} for c in ("x", "y", "z") for i in range(5)])
    capped = select_documents(rows, limit=6)  # the first 6 in corpus order would all be "x"
    assert Counter(capped["category"]) == {"x": 2, "y": 2, "z": 2}
    assert capped["text"] == ["x0", "x1", "y0", "y1", "z0", "z1"]
    assert select_documents(rows, exclude=["y"], limit=4)["category"] == ["x", "x", "z", "z"]
    assert select_documents(rows, categories=["z"], limit=100)["text"] == [f"z{i}" for i in range(5)]
    assert select_documents(rows, limit=len(rows))["text"] == rows["text"]  # under the cap: unchanged
