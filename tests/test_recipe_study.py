"""scripts/recipe_study.py: recipes compared on the same documents; the registered rule reads the right intervals."""

from __future__ import annotations

import json

import pytest
from conftest import load_script

from lit_block.segmentation.evaluation import pooled_pk_table
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
    (folder / f"{name}.json").write_text(json.dumps({"|".join(k): v for k, v in found.items()}))


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
