"""scripts/recipe_study.py: recipes compared on the same documents; the registered rule reads the right intervals."""

from __future__ import annotations

import pytest
from conftest import load_script

from lit_block.segmentation.evaluation import pooled_pk_table
from lit_block.segmentation.results_file import save_results
from lit_block.segmentation.segmenter import LEVELS, METHODS

BASELINES = [m for m in METHODS if m != "segmenter"]


def entry(pk_errors: list[int], boundaries: int = 3) -> dict:
    """An ``evaluate`` entry over documents of 100 windows each, WindowDiff errors equal to Pk errors."""
    docs = [[e, e, 100] for e in pk_errors]
    pk = sum(pk_errors) / (100 * len(docs))
    return {"pk": pk, "windowdiff": pk, "reference_boundaries": boundaries, "documents": docs}


def results(errors: dict[str, list[int]], categories=("a", "b")) -> dict:
    """Per method its per-document errors, the same in every category and level; baselines err 40 per document."""
    errors = {**{b: [40] * len(next(iter(errors.values()))) for b in BASELINES}, **errors}
    return {(m, lv, c): entry(e) for m, e in errors.items() for lv in LEVELS for c in categories}


def write(folder, name: str, found: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    save_results(folder / f"{name}.json", found)


def test_a_recipe_is_the_segmenter_in_its_own_view():
    study = load_script("recipe_study")
    found = results({"R": [10, 12, 9], "C": [30, 31, 29]})
    view = study.as_segmenter(found, "C", ["R", "C"])
    assert {m for m, _, _ in view} == {"segmenter", *BASELINES}  # the other recipe is not a baseline
    assert view["segmenter", "fine", "a"] == found["C", "fine", "a"]


def test_comparison_pairs_documents_and_is_zero_against_itself():
    found = results({"R": [10, 12, 9, 11], "C": [20, 22, 19, 21]})
    _, diff = pooled_pk_table(found, ["R", "C"], "folds")
    for level in LEVELS:
        assert diff["R", level][0] == 0
        point, low, high = diff["C", level]
        assert point == pytest.approx(0.10) and 0 < low <= point <= high  # C worse on every document: above zero


@pytest.mark.parametrize("worse_on", [None, "folds", "heldout", "test"])
def test_the_rule_adopts_only_a_recipe_worse_nowhere(tmp_path, capsys, worse_on):
    study = load_script("recipe_study")
    same, worse = [10, 12, 9, 11], [20, 22, 19, 21]
    for name in ("folds", "heldout", "test"):
        write(tmp_path / "part", name, results({"R": same, "C": worse if name == worse_on else same}))
    study.report([tmp_path / "part"], ["R", "C"], tmp_path / "out")
    verdict = capsys.readouterr().out.strip().splitlines()[-1]
    assert verdict.endswith("adopt" if worse_on is None else "keep R"), verdict
    assert (tmp_path / "out" / "report.md").read_text().strip().endswith(verdict)


def test_a_recipe_winning_fewer_folds_is_not_adopted(tmp_path, capsys):
    study = load_script("recipe_study")
    folds = results({"R": [10, 10, 10], "C": [10, 10, 10]})
    folds["C", "fine", "b"] = entry([45, 45, 45])  # C loses category b's fine level to the baselines (40)
    write(tmp_path / "p", "folds", folds)
    for name in ("heldout", "test"):
        write(tmp_path / "p", name, results({"R": [10, 10, 10], "C": [10, 10, 10]}))
    study.report([tmp_path / "p"], ["R", "C"], tmp_path / "out")
    assert "folds won 1 vs 2 (False)" in capsys.readouterr().out


def test_recipes_must_name_existing_folders(tmp_path):
    study = load_script("recipe_study")
    with pytest.raises(Exception, match="NAME=FOLDER"):
        study.recipe_folder(f"R={tmp_path / 'missing'}")
    assert study.recipe_folder(f"R={tmp_path}") == ("R", tmp_path)


SEEDED = ["R@0", "R@1", "C@0", "C@1"]


def seeded_parts(tmp_path, c_errors: dict[str, list[int]]) -> list:
    """Every set scored for two seeds of R (10.5 errors a document on average) and C (``c_errors`` per set for seed
    0, one more error a document for seed 1)."""
    for name in ("folds", "heldout", "test"):
        errors = c_errors.get(name, [9, 11, 8, 10])
        write(tmp_path / "p", name, results({"R@0": [10, 12, 9, 11], "R@1": [11, 11, 10, 10],
                                             "C@0": errors, "C@1": [e + 1 for e in errors]}))
    return [tmp_path / "p"]


@pytest.mark.parametrize(("c_errors", "adopted"), [
    ({}, True),  # C's seed mean is 0.5 errors a document below R's: -0.005
    ({"test": [30, 32, 29, 31]}, False),  # +0.20 on the test split
    ({"folds": [35, 35, 35, 35]}, False),  # still beats the baselines (40) but +0.25 on the folds
])
def test_the_seeded_rule_reads_means_over_seeds(tmp_path, capsys, c_errors, adopted):
    study = load_script("recipe_study")
    study.report(seeded_parts(tmp_path, c_errors), SEEDED, tmp_path / "out")
    verdict = capsys.readouterr().out.strip().splitlines()[-1]
    assert verdict.startswith("C against R over seeds: folds won 4 vs 4"), verdict
    assert verdict.endswith("adopt" if adopted else "keep R"), verdict


def test_the_seeded_rule_needs_two_seeds_of_each_and_every_set(tmp_path, capsys):
    study = load_script("recipe_study")
    folders = seeded_parts(tmp_path, {})
    study.report(folders, ["R@0", "R@1", "C@0"], tmp_path / "out")  # one C seed: cannot be adopted
    assert capsys.readouterr().out.strip().endswith("keep R")
    (folders[0] / "test.json").unlink()
    study.report(folders, SEEDED, tmp_path / "out")
    assert capsys.readouterr().out.strip().endswith("keep R")
    assert study.seed_groups(["R@0", "C@0", "R@1", "X"]) == {"R": ["R@0", "R@1"], "C": ["C@0"], "X": ["X"]}


def test_missing_checkpoints_are_named_before_any_scoring(tmp_path):
    import argparse

    study = load_script("recipe_study")
    (tmp_path / "R").mkdir()
    (tmp_path / "R" / "academic.ckpt").write_bytes(b"")
    args = argparse.Namespace(recipes={"R@0": tmp_path / "R"}, categories=["academic", "code"], sets=[],
                              dataset=str(tmp_path / "no-corpus"))
    with pytest.raises(SystemExit, match="R@0=.*no fold checkpoint for code"):
        study.score_parts(args)
    args.categories, args.sets = ["academic"], ["heldout"]
    with pytest.raises(SystemExit, match="no full.ckpt for --sets heldout"):
        study.score_parts(args)
