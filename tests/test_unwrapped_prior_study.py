"""scripts/unwrapped_prior_study.py: the registered rule reads the right intervals, and scored parts merge."""

from __future__ import annotations

import json

import pytest
from conftest import load_script

from lit_block.segmentation.results_file import save_results

LEVELS = ("coarse", "middle", "fine")


def entry(errors):  # an evaluate entry over documents of 100 windows each
    return {"pk": sum(errors) / (100 * len(errors)), "windowdiff": sum(errors) / (100 * len(errors)),
            "reference_boundaries": 5, "documents": [[e, e, 100] for e in errors]}


def results(v2, v3, category="a", names=("V2", "V3")):
    """Both settings' entries on one category: the segmenter's errors per setting, a baseline far behind."""
    return {name: {(m, lv, category): entry(e if m == "segmenter" else [40] * len(e))
                   for m in ("segmenter", "fixed", "regex", "sentence", "texttiling", "semantic") for lv in LEVELS}
            for name, e in zip(names, (v2, v3))}


def test_the_rule_adopts_only_what_is_better_on_folds_and_no_worse_over_seeds():
    from lit_block.segmentation.evaluation import settings_comparison

    study = load_script("unwrapped_prior_study")

    def found(candidate, names=("V2", "V3")):
        return settings_comparison(results([10, 12, 9, 11], candidate, names=names), "x", list(names))[1]

    gain, same, loss = found([5, 6, 4, 6]), found([10, 12, 9, 11]), found([20, 22, 19, 21])
    full = {"heldout": {"0": same, "1": gain}, "test": {"0": same}}
    assert study.decide("unwrapped", {"0": gain}, full)[1]
    assert not study.decide("unwrapped", {"0": same}, full)[1]  # the folds must improve
    assert not study.decide("unwrapped", {"1": gain}, full)[1]  # ... in the registered seed
    assert not study.decide("unwrapped", {"0": gain}, {"heldout": {"0": gain, "1": loss}, "test": {"0": same}})[1]
    assert not study.decide("unwrapped", {"0": gain}, {"heldout": {"0": same}})[1]  # the test split not scored
    gain4, same4 = found([5, 6, 4, 6], ("V3", "V4")), found([10, 12, 9, 11], ("V3", "V4"))
    full4 = {"heldout": {"0": same4}, "test": {"0": same4}}
    assert study.decide("line-order", {"1": gain4, "2": gain4}, full4)[1]  # reads seeds 1 and 2
    assert not study.decide("line-order", {"0": gain4, "1": gain4, "2": same4}, full4)[1]


def test_parts_scored_apart_are_reported_together(tmp_path, capsys):
    study = load_script("unwrapped_prior_study")
    a, b, out = tmp_path / "a", tmp_path / "b", tmp_path / "out"
    a.mkdir(), b.mkdir()
    save_results(a / "folds_0.json", results([10, 12, 9, 11], [5, 6, 4, 6], "religious"))
    save_results(b / "folds_0.json", results([10, 12, 9, 11], [5, 6, 4, 6], "legal"))
    save_results(b / "folds_0b.json", results([10, 12, 9, 11], [10, 12, 9, 11], "novel"))  # V3 cannot move it
    for seed in ("0", "1"):
        save_results(b / f"heldout_{seed}.json", results([10, 12, 9, 11], [10, 12, 9, 10], "poetry"))
        save_results(b / f"test_{seed}.json", results([10, 12, 9, 11], [10, 12, 9, 11], "quotes"))
    study.report("unwrapped", [a, b], out)
    text = (out / "report.md").read_text()
    assert "folds, seed 0, the registered seven" in text and "| legal |" in text and "| religious |" in text
    assert "| folds, seed 0 | 2 / 2 won" in text and "| held-out, seed 1 | 1 / 1 families won" in text
    assert "heldout, full segmenter seed 1" in text and text.rstrip().endswith("-> adopt V3")
    assert json.loads((a / "folds_0.json").read_text())["V3"]  # the parts are left as they were


def test_a_fold_moved_by_v3_outside_the_registered_seven_is_an_error(tmp_path):
    study = load_script("unwrapped_prior_study")
    save_results(tmp_path / "folds_0.json", results([10, 12, 9, 11], [5, 6, 4, 6], "novel"))
    with pytest.raises(AssertionError, match="V3 moved a fold"):
        study.report("unwrapped", [tmp_path], tmp_path / "out")


def test_a_family_wins_only_where_every_level_with_gold_is_won():
    study = load_script("unwrapped_prior_study")
    assert study.wins_every_level("| drama | 0.1 / 0.1 (0.2 / 0.2) yes | n/a | 0.1 / 0.1 (0.2 / 0.2) yes |")
    assert not study.wins_every_level("| drama | 0.1 / 0.1 (0.2 / 0.2) yes | x (y) no | 0.1 / 0.1 (0.2 / 0.2) yes |")
    assert not study.wins_every_level("| poetry | n/a | n/a | n/a |")
