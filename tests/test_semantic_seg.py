"""Candidate cut points, the segmentation DataModule and external datasets."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import REPO
from datamodules.corpus.external import import_dataset
from datamodules.semantic_seg import SemanticSegDataModule, document_units, windows
from lit_block.candidates import candidate_starts
from lit_block.cli import main
from lit_block.errors import UsageError

EXTERNAL = REPO / "tests" / "fixtures" / "corpus" / "external" / "semanticseg_sample.jsonl"


def test_candidate_splitters():
    text = "Title\n\nFirst sentence. Second one! third stays.\nNext line\n"
    assert candidate_starts(text, "lines") == [0, 7, 48]
    assert candidate_starts(text, "paragraphs") == [0, 7]
    assert candidate_starts(text, "sentences") == [0, 7, 23, 48]
    assert candidate_starts("", "lines") == []
    assert candidate_starts("a---b\n\nc", "regex") == [0, 4, 7]
    code = "x = f(1,\n      2)\ny = 3 \\\n    + 4\nz = 5\n"
    assert candidate_starts(code, "code") == [0, 18, 34]  # x = ..., y = ..., z = ...
    with pytest.raises(ValueError, match="unknown splitter 'words'"):
        candidate_starts(text, "words")


def _row(text: str, fine: list[int], middle: list[int], coarse: list[int]) -> dict:
    return {"id": "d", "category": "c", "text": text,
            "boundaries_fine": fine, "boundaries_middle": middle, "boundaries_coarse": coarse}


@settings(max_examples=40, deadline=None)
@given(n_lines=st.integers(2, 60), max_units=st.integers(2, 9), every=st.integers(1, 4))
def test_windows_label_every_boundary_exactly_once(n_lines, max_units, every):
    lines = [f"line {i}\n" for i in range(n_lines)]
    starts = [sum(map(len, lines[:i])) for i in range(n_lines)]
    fine = [s for i, s in enumerate(starts) if i and i % every == 0]
    row = _row("".join(lines), fine, fine[::2], fine[::4])
    labelled = {}
    for w in windows(row, "lines", max_units):
        assert len(w["unit_texts"]) <= max_units
        for start, label, counted in zip(w["unit_starts"], w["labels"], w["label_mask"]):
            if counted:
                assert start not in labelled  # each unit's label counts once
                labelled[start] = label.tolist()
    assert sorted(labelled) == starts[1:]  # every unit but the document's first
    assert [s for s, lab in labelled.items() if lab[2]] == fine
    assert [s for s, lab in labelled.items() if lab[0]] == fine[::4]


def test_gold_boundaries_off_the_candidates_are_counted():
    _, labels, missed = document_units(_row("abc def\nghi\n", [4, 8], [8], []), "lines")
    assert missed == 1 and labels[:, 2].tolist() == [0, 1]


def test_external_dataset_imports_and_serves_through_the_datamodule(tmp_path):
    out = tmp_path / "external"
    assert main(["data", "import", str(EXTERNAL), "--output", str(out), "--segments-column", "segments",
                 "--category-column", "domain"]) == 0
    dm = SemanticSegDataModule(dataset_path=str(out), splitter="paragraphs", batch_size=2)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert sorted(batch["category"]) == ["manual", "story"]
    assert batch["labels"].shape[0] == 2 and batch["labels"].shape[2] == 3
    assert int(batch["labels"][:, :, 2].sum()) == 3  # 2 + 1 segment boundaries, all on paragraph starts
    assert batch["unit_mask"].sum() == 5


def test_external_import_names_a_missing_column(tmp_path):
    with pytest.raises(UsageError, match="column 'paragraphs'"):
        import_dataset(str(EXTERNAL), str(tmp_path / "x"), {"segments": "paragraphs"})


def test_datamodule_without_a_dataset_says_how_to_build_one(tmp_path):
    dm = SemanticSegDataModule(dataset_path=str(tmp_path / "none"))
    with pytest.raises(FileNotFoundError, match="lit-block data build"):
        dm.setup("fit")


def test_windows_refuse_tiny_max_units():
    with pytest.raises(ValueError, match="max_units must be >= 2"):
        windows(_row("a\nb\n", [2], [], []), "lines", 1)
    assert torch.is_tensor(windows(_row("a\nb\n", [2], [], []), "lines", 2)[0]["labels"])
