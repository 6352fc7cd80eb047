"""scripts/unit_conventions.py: kinds of candidate units, and the gold share per kind that a fold learns from."""

from __future__ import annotations

from conftest import load_script

TEXT = ("The sea rolled on and\non, for ever. Then it stopped. He slept.\nMorning came.\n%\nA new entry.\n"
        "Psalm 23\nThe end.\n")


def test_units_are_told_apart_by_where_they_start():
    conventions = load_script("unit_conventions")
    kinds = conventions.unit_kinds(TEXT)
    starts = [TEXT[s:s + 8] for s, _ in kinds]
    assert list(zip(starts, (k for _, k in kinds))) == [
        ("on, for ", "line-mid"),  # carries the wrapped sentence on
        ("Then it ", "inline"), ("He slept", "inline"),  # sentence starts inside a line
        ("Morning ", "line"),
        ("%\nA new ", None),  # a separator: not counted
        ("A new en", "line"), ("Psalm 23", "line"),
        ("The end.", "after-heading")]  # after a short line without end punctuation


def _row(category: str, level_cuts: list[int]) -> dict:
    return {"text": TEXT, "category": category, "boundaries_coarse": [], "boundaries_middle": [],
            "boundaries_fine": level_cuts}


def test_a_category_whose_convention_its_fold_never_saw_is_flagged():
    conventions = load_script("unit_conventions")
    kinds = dict((k, s) for s, k in reversed(conventions.unit_kinds(TEXT)) if k)  # first start of each kind
    wrapped = _row("verse", [kinds["line-mid"] - 1])  # gold one space early: the same cut
    prose = _row("novel", [kinds["inline"]])
    counts = conventions.count([wrapped, prose])
    assert counts["verse"]["line-mid", "fine"] == 1 and counts["verse"]["inline", "fine"] == 0
    assert counts["novel"]["inline", "fine"] == 1 and counts["novel"]["line-mid", "fine"] == 0
    # each is the other's only training category, and they disagree on line-mid against inline
    assert ("line-mid", "inline") in conventions.reversed_pairs(counts, "verse", "fine")
    assert ("inline", "line-mid") in conventions.reversed_pairs(counts, "novel", "fine")
    # a third category that follows the verse convention: the novel is still against its fold, the verse no longer
    counts = conventions.count([wrapped, prose, _row("songs", [kinds["line-mid"]]), _row("hymns", [kinds["line-mid"]])])
    assert conventions.reversed_pairs(counts, "verse", "fine") == []
    assert ("inline", "line-mid") in conventions.reversed_pairs(counts, "novel", "fine")
    assert "| novel |" in conventions.table(counts, "fine") and "inline > line-mid" in conventions.table(counts, "fine")
    # held-out families are set against the whole training corpus instead of each other
    corpus = conventions.count([prose])["novel"]
    assert conventions.reversed_pairs(counts, "verse", "fine", trained_on=corpus) == [("line-mid", "inline")]
    assert "the training corpus" in conventions.table(counts, "fine", trained_on=corpus)
