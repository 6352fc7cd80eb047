"""Held-out evaluation families: kept out of the training corpus, parsed right, built test-only.

Fixtures are built in code: short public-domain passages (Shakespeare, Milton) or text written here.
"""

from __future__ import annotations

import dataclasses
import gzip
from pathlib import Path

import pytest

from datamodules.corpus import build as build_module
from datamodules.corpus.build import HELDOUT_OUTPUT, BuildConfig, build
from datamodules.corpus.cli import build_parser
from datamodules.corpus.packing import PackedDocument, PackedUnit
from datamodules.corpus.schema import PackageSpec, SkippedInput, Unit
from datamodules.corpus.sources import ADAPTER_MODULES, HELDOUT_MODULES, all_sources, heldout_sources
from datamodules.corpus.sources import drama, history_books, poetry


def levels(units: list[Unit]) -> list[int]:
    return [u.level for u in units]


def check_hierarchy(units: list[Unit]) -> dict[str, list[int]]:
    """Boundaries per level as the build stores them; coarse must be within middle, middle within fine."""
    assert units and units[0].level == 0 and all(u.text.strip() for u in units)
    bounds = PackedDocument([PackedUnit(u, 1, "f") for u in units]).boundaries()
    assert set(bounds["coarse"]) <= set(bounds["middle"]) <= set(bounds["fine"])
    return bounds


def starts(units: list[Unit], level: int) -> list[str]:
    """First line of each unit that opens a segment of ``level`` or coarser (after the first)."""
    return [u.text.splitlines()[0] for u in units[1:] if u.level <= level]


# --- kept apart from the training corpus -------------------------------------------------------------


def test_default_sources_and_heldout_sources_are_disjoint_by_name_and_category():
    train, held = all_sources(), heldout_sources()
    assert len(held) >= 3
    assert not {s.name for s in train} & {s.name for s in held}
    assert not {s.category for s in train} & {s.category for s in held}
    assert {s.category for s in held} >= {"drama", "poetry", "history-book"}
    assert not set(ADAPTER_MODULES) & set(HELDOUT_MODULES)
    train_packages = {(p.manager, p.name) for s in train for p in s.packages}
    assert not train_packages & {(p.manager, p.name) for s in held for p in s.packages}  # packages unseen in training
    for s in held:
        assert len(s.level_names) == 3 and s.license
        assert all(p.sha256 and p.filename for p in s.packages)  # pinned


def test_cli_heldout_flag_gives_test_only_config_in_its_own_folder():
    args = build_parser().parse_args(["build", "--heldout"])["build"]
    fields = {f.name for f in dataclasses.fields(BuildConfig)}
    cfg = BuildConfig(**{k: v for k, v in vars(args).items() if k in fields and v is not None})
    assert cfg.heldout and cfg.output == HELDOUT_OUTPUT == "data/heldout-families"
    assert cfg.split_fractions == (0.0, 0.0, 1.0)
    default = BuildConfig(**{k: v for k, v in vars(build_parser().parse_args(["build"])["build"]).items()
                             if k in fields and v is not None})
    assert not default.heldout and default.output == "data/semanticseg"
    assert BuildConfig(heldout=True, output="/tmp/x").output == "/tmp/x"


# --- drama -------------------------------------------------------------------------------------------

PLAY = """HAMLET, PRINCE OF DENMARK

PERSONS REPRESENTED.

Claudius, King of Denmark.

ACT I.

Scene I. Elsinore. A platform before the Castle.

[Francisco at his post. Enter to him Bernardo.]

Ber.
Who's there?

Fran.
Nay, answer me: stand, and unfold yourself.

Scene II. Elsinore. A room of state in the Castle.

KING.
Though yet of Hamlet our dear brother's death
The memory be green,

and that it us befitted
To bear our hearts in grief,

[Exit.]

ACT II. SCENE I. A room in Polonius's house.

POLONIUS
Give him this money and these notes, Reynaldo.

ACT II.

SCENE 2. A room in the Castle.

Rey.
I will, my lord.
"""


def test_drama_acts_scenes_speeches():
    units = drama.units_from_play(PLAY)
    check_hierarchy(units)
    assert levels(units) == [0, 2, 2, 1, 2, 0, 1]  # a heading keeps the block under it in its unit
    assert units[0].text.startswith("ACT I.\n\nScene I. Elsinore.")  # front matter left out; act + scene + direction
    assert "[Francisco at his post." in units[0].text
    assert starts(units, 1) == ["Scene II. Elsinore. A room of state in the Castle.", "ACT II. SCENE I. A room in "
                                "Polonius's house.", "ACT II."]  # a repeated act heading opens a scene, not an act
    assert starts(units, 0) == ["ACT II. SCENE I. A room in Polonius's house."]
    king = next(u for u in units if "KING.\n" in u.text)
    assert "and that it us befitted" in king.text  # a block with no speaker continues the speech
    assert units[-1].text.startswith("ACT II.\n\nSCENE 2.") and "Rey.\nI will" in units[-1].text
    assert "".join(u.text for u in units) == PLAY[PLAY.index("ACT I."):]
    assert drama.act_number("FIFTH") == 5 and drama.act_number("IV") == 4 and drama.act_number("3") == 3


def test_drama_parse_reads_plays_only(tmp_path: Path):
    texts = tmp_path / drama.TEXTS_DIR
    texts.mkdir(parents=True)
    (texts / "hamlet_gut.txt").write_text(PLAY)
    (texts / "hamlet_gut_f.txt").write_text(PLAY)  # the folio edition: left out
    (texts / "sonnets_gut.txt").write_text("THE SONNETS\n\nI\n\nFrom fairest creatures we desire increase,\n")
    (texts / "notes_gut.txt").write_text("no acts here\n")
    with pytest.warns(SkippedInput, match="no act heading"):
        docs = list(drama.parse([tmp_path]))
    assert [d.file for d in docs] == [f"{drama.TEXTS_DIR}/hamlet_gut.txt"]


# --- poetry ------------------------------------------------------------------------------------------

EPIC = """
PARADISE LOST
BOOK I.

  Of Mans First Disobedience, and the Fruit
Of that Forbidden Tree, whose mortal tast
Brought Death into the World, and all our woe,
  Say first, for Heav'n hides nothing from thy view
Nor the deep Tract of Hell, say first what cause
    THE END OF THE FIRST BOOK.

BOOK II.

High on a Throne of Royal State, which far
Outshon the wealth of ORMUS and of IND,
  Thou Spirit, who led'st this glorious Eremite
Into the desert, his victorious field        10
"""


def test_poetry_books_verse_paragraphs_lines():
    units = poetry.units_from_epic(EPIC)
    check_hierarchy(units)
    assert levels(units) == [0, 2, 2, 1, 2, 0, 2, 1, 2]
    assert units[0].text == "BOOK I.\n\n  Of Mans First Disobedience, and the Fruit\n"  # title line left out
    assert starts(units, 0) == ["BOOK II."]
    assert starts(units, 1) == ["  Say first, for Heav'n hides nothing from thy view", "BOOK II.",
                                "  Thou Spirit, who led'st this glorious Eremite"]
    text = "".join(u.text for u in units)
    assert "THE END" not in text and "field\n" in text and "10" not in text  # line numbers dropped
    assert poetry.units_from_epic("no books here\n") is None


def test_poetry_parse_reports_a_missing_poem(tmp_path: Path):
    texts = tmp_path / poetry.TEXTS_DIR
    texts.mkdir(parents=True)
    (texts / poetry.POEMS[0]).write_text(EPIC)
    with pytest.warns(SkippedInput, match="poem file missing"):
        docs = list(poetry.parse([tmp_path]))
    assert len(docs) == 1 and levels(docs[0].units).count(0) == 2


# --- history books -----------------------------------------------------------------------------------

CHAPTER_HTML = """<HTML><HEAD><TITLE>Chapter 9</TITLE></HEAD><BODY>
<p align=center><a href="mainindex.htm"><b>INDEX</b></a></p>
<p align="center"><font size=+2><b>Chapter 9<br>
  A TALE OF TWO MODEMS</b></font></p>
<p><font>The first paragraph tells how the two modems met.</font></p>
<p><font>A second paragraph, with <i>emphasis</i> and a <b>bold</b> name, goes on.</font></p>
<p><font><b>The Quarrel</b></font> <font><br>
  </font><font>The modems disagreed about the baud rate.</font></p>
<p><b>Q:</b> Why?<br><b>A:</b> Nobody knows.</p>
<p>Some closing thoughts.<br><br><b>The Reconciliation</b><br>They agreed on 2400 baud.</p>
<p>Literature:<br>A book list that is left out.</p>
<p>Design and formatting by Somebody</p>
</BODY></HTML>"""


def test_history_book_html_chapter_sections_paragraphs():
    text = history_books.render_html(CHAPTER_HTML)
    units = history_books.units_from_chapter(text)
    check_hierarchy(units)
    assert levels(units) == [0, 2, 1, 2, 2, 1]
    assert units[0].text.startswith("Chapter 9\nA TALE OF TWO MODEMS\n\nThe first paragraph")
    assert starts(units, 1) == ["The Quarrel", "The Reconciliation"]
    joined = "".join(u.text for u in units)
    assert "INDEX" not in joined and "Design and formatting" not in joined and "book list" not in joined
    assert "\x01" not in joined and "\x02" not in joined
    assert "Q: Why?\nA: Nobody knows." in joined  # a bold run-in label is no heading


def test_history_book_parse_cfi_orders_chapters(tmp_path: Path):
    base = tmp_path / history_books.CFI_DIR
    base.mkdir(parents=True)
    for name in ("ch10web.htm", "ch2web.htm", "preface.htm"):
        (base / name).write_text(CHAPTER_HTML.replace("Chapter 9", name), encoding="latin-1")
    docs = list(history_books.parse_cfi([tmp_path]))
    assert [Path(d.file).name for d in docs] == ["preface.htm", "ch2web.htm", "ch10web.htm"]


HISTORY_TXT = """                      A Short Book

Table of Contents

1. Beginnings
    1.1. Early Days

Chapter 1.\u00a0Beginnings

    The project started small, with a handful of
    people and one computer.

    It grew quickly.

1.1.\u00a0Early Days

    The first release came out in winter.

1.1.1.\u00a0A Detail That Needs A Long Heading
Which Wraps

    More text.

Appendix A.\u00a0A Manifesto

    Words of the founder.
"""


def test_history_book_text_chapters_sections_paragraphs(tmp_path: Path):
    units = history_books.units_from_history(HISTORY_TXT.replace("\u00a0", " "))
    check_hierarchy(units)
    assert levels(units) == [0, 2, 1, 1, 0]
    assert units[0].text.startswith("Chapter 1. Beginnings\n\n    The project")  # contents left out
    assert units[3].text.startswith("1.1.1. A Detail That Needs A Long Heading\nWhich Wraps\n\n    More text.")
    path = tmp_path / history_books.HISTORY_TXT
    path.parent.mkdir(parents=True)
    path.write_bytes(gzip.compress(HISTORY_TXT.encode()))
    (doc,) = history_books.parse_history([tmp_path])
    assert levels(doc.units) == [0, 2, 1, 1, 0] and "\u00a0" not in doc.text
    assert history_books.units_from_history("no chapters\n") is None


# --- --heldout builds only the held-out families, all in the test split --------------------------------


def _local(source, folder: Path):
    return dataclasses.replace(source, packages=(PackageSpec("local", f"fixture-{source.name}", "1",
                                                             filename=str(folder)),))


def test_heldout_build_is_test_only_and_never_mixes_with_training(tmp_path, tiny_tokenizer_dir, monkeypatch):
    from datasets import load_from_disk

    texts = tmp_path / "pkg" / drama.TEXTS_DIR
    texts.mkdir(parents=True)
    for i in range(6):  # several plays, so that a random split would not put all of them in one split
        (texts / f"play{i}_gut.txt").write_text(PLAY * 3)
    play_source = _local(drama.SOURCES[0], tmp_path / "pkg")
    training = dataclasses.replace(play_source, name="training-only", category="training-category")
    monkeypatch.setattr(build_module, "heldout_sources", lambda: [play_source])
    monkeypatch.setattr(build_module, "all_sources", lambda: [training])
    common = dict(cache_dir=str(tmp_path / "cache"), tokenizer=str(tiny_tokenizer_dir), min_tokens=40,
                  max_tokens=300, offline=True)

    out, reports, _ = build(BuildConfig(output=str(tmp_path / "held"), heldout=True, **common))
    data = load_from_disk(str(out))
    assert list(data) == ["test"]
    rows = list(data["test"])
    assert len(rows) >= 6 and {r["split"] for r in rows} == {"test"}
    assert {r["source"] for r in rows} == {"shakespeare-plays"} and [r.name for r in reports] == ["shakespeare-plays"]
    for r in rows:
        assert set(r["boundaries_coarse"]) <= set(r["boundaries_middle"]) <= set(r["boundaries_fine"])
        assert r["level_names"] == ["act", "scene", "speech or stage direction"]

    out, reports, _ = build(BuildConfig(output=str(tmp_path / "train"), **common))  # the default build
    data = load_from_disk(str(out))
    assert {r["source"] for split in data for r in data[split]} == {"training-only"}
    assert len(data) > 1  # a real train/validation/test assignment
