"""Scored results files: keys survive the round trip, writes are whole or nothing, bad files are named."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lit_block.output_dir import write_text_atomic
from lit_block.segmentation.results_file import load_results, save_results

NAME = st.text(st.characters(blacklist_characters="|", blacklist_categories=("Cs",)), min_size=1, max_size=8)
RESULTS = st.dictionaries(st.tuples(NAME, NAME, NAME), st.fixed_dictionaries(
    {"pk": st.floats(0, 1), "documents": st.lists(st.lists(st.integers(0, 99), min_size=3, max_size=3))}), max_size=5)


@given(RESULTS, st.dictionaries(st.sampled_from(["V2", "V3", "R@0"]), RESULTS, min_size=1, max_size=3))
def test_flat_and_named_results_come_back_as_they_were(tmp_path_factory, flat, named):
    folder = tmp_path_factory.mktemp("r")
    save_results(folder / "flat.json", flat)
    save_results(folder / "named.json", named)
    assert load_results(folder / "flat.json") == flat
    assert load_results(folder / "named.json") == named
    assert sorted(p.name for p in folder.iterdir()) == ["flat.json", "named.json"]  # no temporary file left


def test_a_failed_write_keeps_the_previous_file_and_leaves_no_part(tmp_path, monkeypatch):
    target = tmp_path / "folds.json"
    save_results(target, {("segmenter", "fine", "a"): {"pk": 0.1}})
    monkeypatch.setattr("lit_block.output_dir.os.replace",
                        lambda *a: (_ for _ in ()).throw(KeyboardInterrupt))  # killed between write and rename
    with pytest.raises(KeyboardInterrupt):
        write_text_atomic(target, "{half")
    assert load_results(target) == {("segmenter", "fine", "a"): {"pk": 0.1}}
    assert [p.name for p in tmp_path.iterdir()] == ["folds.json"]


def test_a_file_that_is_not_results_is_named(tmp_path):
    bad = tmp_path / "heldout.json"
    bad.write_text("{half")
    with pytest.raises(ValueError, match="heldout.json: not a scored results file"):
        load_results(bad)
    with pytest.raises(ValueError, match="missing.json"):
        load_results(tmp_path / "missing.json")
