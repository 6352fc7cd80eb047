"""Source adapters kjv, dictd, fortunes, chatterbot on tiny hand-written fixtures (no network, no packages)."""

from __future__ import annotations

import gzip
import shutil
import stat
from collections import Counter
from pathlib import Path

import pytest

from datamodules.corpus.schema import RawDocument, SkippedInput
from datamodules.corpus.sources import chatterbot, dictd, fortunes, kjv

FIXTURES = Path(__file__).parent / "fixtures" / "corpus"


def check(doc: RawDocument) -> list[int]:
    """The invariants every document keeps; returns its unit levels."""
    levels = [u.level for u in doc.units]
    assert levels and levels[0] == 0 and set(levels) <= {0, 1, 2}
    assert "".join(u.text for u in doc.units) == doc.text
    assert all(u.text.strip() for u in doc.units)  # whitespace is folded into a neighbour
    return levels


def counts(docs: list[RawDocument]) -> dict[int, int]:
    """Units per level over all documents."""
    return dict(Counter(level for d in docs for level in check(d)))


def source(module, name: str):
    return next(s for s in module.SOURCES if s.name == name)


# --- kjv ------------------------------------------------------------------------------------------


def test_kjv_parses_decoded_text():
    text = (FIXTURES / "kjv" / "decoded.txt").read_text()
    docs = list(kjv.parse_decoded(text))
    assert [d.doc_id for d in docs] == ["Genesis", "John"]
    assert check(docs[0]) == [0, 2, 2, 1, 2]  # book, verse, verse, chapter 2, verse
    assert check(docs[1]) == [0]
    assert docs[0].units[0].text.startswith("Genesis 1\n\n  1 In the beginning")
    assert docs[0].units[3].text.startswith("Genesis 2\n\n  1 Thus")
    assert docs[0].text.endswith("which he had made.\n")  # the blank line before the next book is dropped
    assert docs[1].text == "John 11\n\n  35 Jesus wept.\n"


def test_kjv_runs_the_binary(tmp_path: Path):
    """parse() runs ROOT/usr/bin/bible on ROOT_TEXT/usr/lib/bible.data: a stand-in script prints the fixture."""
    text_root, bin_root = tmp_path / "text", tmp_path / "bin"
    (text_root / "usr/lib").mkdir(parents=True)
    (text_root / "usr/lib/bible.data").write_bytes(b"\x00")
    binary = bin_root / "usr/bin/bible"
    binary.parent.mkdir(parents=True)
    binary.write_text(f"#!/bin/sh\ncat '{FIXTURES / 'kjv' / 'decoded.txt'}'\n")
    binary.chmod(binary.stat().st_mode | stat.S_IXUSR)
    docs = list(source(kjv, "kjv").parse([text_root, bin_root]))
    assert [d.doc_id for d in docs] == ["Genesis", "John"]


def test_kjv_missing_binary_or_bad_text_is_skipped(tmp_path: Path):
    with pytest.warns(SkippedInput, match="bible binary missing"):
        assert list(source(kjv, "kjv").parse([tmp_path, tmp_path])) == []
    with pytest.warns(SkippedInput, match="no book headings"):
        assert list(kjv.parse_decoded("\n\n")) == []
    with pytest.warns(SkippedInput, match="before the first book heading"):
        assert list(kjv.parse_decoded("stray words\nGenesis 1\n\n  1 In the beginning.\n")) == []


# --- dictd ----------------------------------------------------------------------------------------


def test_dictd_gcide_entries_senses_paragraphs():
    docs = list(source(dictd, "gcide").parse([FIXTURES / "dictd" / "gcide"]))
    assert [d.doc_id for d in docs] == ["gcide/#", "gcide/Ke", "gcide/La"]  # "Dark lantern" is only an alias
    assert "00-database" not in "".join(d.text for d in docs)
    assert check(docs[2]) == [0, 1, 2, 1, 0]  # Lantern: sense 1, sense 2, quotation, {phrase}; Lark
    assert check(docs[1]) == [0, 2]  # Kettle, its Note
    assert counts(docs) == {0: 4, 1: 2, 2: 2}
    assert docs[2].units[1].text.startswith("   2. (Arch.)")
    assert docs[2].units[3].text.endswith("sliding shutter.\n\n")  # an entry keeps the blank line after it


def test_dictd_jargon_headword_block_joins_body(tmp_path: Path):
    root = tmp_path / "jargon"
    shutil.copytree(FIXTURES / "dictd" / "jargon", root)
    folder = root / dictd.DICTD
    (folder / "jargon.dict.dz").write_bytes(gzip.compress((folder / "jargon.dict").read_bytes()))
    (folder / "jargon.dict").unlink()  # read from the dictzip (gzip) file, as packaged
    docs = list(source(dictd, "jargon").parse([root]))
    assert [d.doc_id for d in docs] == ["jargon/Wi", "jargon/Ya"]
    assert check(docs[0]) == [0, 1, 1, 2]  # headword + etymology, sense 1, sense 2, follow-on prose
    assert docs[0].units[0].text.startswith("widget\n /wij'it/, n.\n\n    [from stage slang]")
    assert check(docs[1]) == [0]


def test_dictd_bad_inputs_are_skipped(tmp_path: Path):
    folder = tmp_path / dictd.DICTD
    folder.mkdir(parents=True)
    (folder / "gcide.index").write_text("")
    with pytest.warns(SkippedInput, match="empty file"):
        assert list(source(dictd, "gcide").parse([tmp_path])) == []
    (folder / "gcide.index").write_text("Lark\tA\tZ\n")
    (folder / "gcide.dict.dz").write_bytes(b"not gzip at all")
    with pytest.warns(SkippedInput, match="not a gzip"):
        assert list(source(dictd, "gcide").parse([tmp_path])) == []
    (folder / "gcide.dict.dz").unlink()
    (folder / "gcide.index").write_text("oops\n")
    with pytest.warns(SkippedInput, match="malformed index"):
        assert list(source(dictd, "gcide").parse([tmp_path])) == []
    # one undecodable entry is dropped, the good one stays
    good, bad = b"Lark \\Lark\\, n.\n   A bird.\n\n", b"Lute \\Lute\\, n.\n   A caf\xe9 harp.\n"
    (folder / "gcide.dict").write_bytes(good + bad)
    (folder / "gcide.index").write_text(f"Lark\tA\t{dictd.B64[len(good) - 1]}\nLute\t{dictd.B64[len(good)]}\tZ\n")
    with pytest.warns(SkippedInput, match="Lute: undecodable bytes"):
        docs = list(source(dictd, "gcide").parse([tmp_path]))
    assert [d.text for d in docs] == [good.decode()]


def test_dictd_base64_numbers():
    assert dictd.b64_number("A") == 0 and dictd.b64_number("BA") == 64 and dictd.b64_number("+/") == 62 * 64 + 63


# --- fortunes -------------------------------------------------------------------------------------


def test_fortunes_entries_stanzas_lines():
    roots = [FIXTURES / "fortunes" / "min", FIXTURES / "fortunes" / "full"]
    docs = list(source(fortunes, "fortunes").parse(roots))
    assert [d.doc_id for d in docs] == ["sayings", "verses"]  # no .dat, nothing from off/
    sayings, verses = docs
    assert check(sayings) == [0, 0, 2, 1, 0]  # the empty fortune ("%\n%") is dropped
    assert sayings.text.count("%\n") == 2 and not sayings.text.endswith("%\n")
    assert sayings.units[2].text == "then measure again for luck.\n\n"
    assert check(verses) == [0, 2, 2, 2, 1, 2, 0, 2]
    assert counts(docs) == {0: 5, 1: 2, 2: 6}


def test_fortunes_overstrikes():
    assert fortunes.strip_overstrikes("no ____\b\b\b\bmore and b\bbo\bol\bld") == "no more and bold"


def test_fortunes_bad_inputs_are_skipped(tmp_path: Path):
    folder = tmp_path / fortunes.FORTUNES
    folder.mkdir(parents=True)
    shutil.copy(FIXTURES / "fortunes" / "min" / fortunes.FORTUNES / "sayings", folder / "sayings")
    (folder / "sayings.u8").symlink_to("sayings")
    (folder / "empty").write_text("")
    (folder / "latin1").write_bytes(b"Caf\xe9 au lait.\n%\nTea.\n")
    (folder / "single").write_text("Only one fortune, no separator.\n")
    with pytest.warns(SkippedInput) as caught:
        docs = list(source(fortunes, "fortunes").parse([tmp_path]))
    assert [d.doc_id for d in docs] == ["sayings"]
    reasons = sorted(str(w.message).split(": ", 1)[1] for w in caught)
    assert reasons == ["empty file", "no %-separated entries", "undecodable bytes (utf-8, at byte 3)"]


# --- chatterbot -----------------------------------------------------------------------------------


def test_chatterbot_topics_conversations_turns():
    docs = list(source(chatterbot, "chatterbot").parse([FIXTURES / "chatterbot"]))
    assert [d.doc_id for d in docs] == ["english/cooking", "english/weather"]  # English only
    cooking, weather = docs
    assert check(weather) == [0, 2, 2, 1, 2]
    assert check(cooking) == [0, 2]
    assert weather.text == (
        "Topic: weather\n\n- Is it raining?\n- Only a drizzle.\n- Then I will take a hat.\n\n"
        "- Do you like snow?\n- I like it from a window.\n\n  Outside it is too cold.\n"
    )
    assert cooking.units[0].text == "Topic: cooking, food\n\n- How long should I boil an egg?\n"


def test_chatterbot_bad_inputs_are_skipped(tmp_path: Path):
    folder = tmp_path / chatterbot.ENGLISH
    folder.mkdir(parents=True)
    shutil.copy(FIXTURES / "chatterbot" / chatterbot.ENGLISH / "weather.yml", folder)
    (folder / "empty.yml").write_text("  \n")
    (folder / "broken.yml").write_text("conversations:\n- - [unclosed\n")
    (folder / "nothing.yml").write_text("categories:\n- nothing\n")
    (folder / "latin1.yml").write_bytes(b"conversations:\n- - caf\xe9\n")
    with pytest.warns(SkippedInput) as caught:
        docs = list(source(chatterbot, "chatterbot").parse([tmp_path]))
    assert [d.doc_id for d in docs] == ["english/weather"]
    reasons = sorted(str(w.message).split(": ", 1)[1] for w in caught)
    assert reasons == ["empty file", "invalid YAML", "no conversations", "undecodable bytes (utf-8, at byte 22)"]


def test_sources_are_pinned():
    for module in (kjv, dictd, fortunes, chatterbot):
        for src in module.SOURCES:
            assert src.packages and src.license and len(src.level_names) == 3
            for spec in src.packages:
                assert spec.manager in {"deb", "pypi"} and spec.version and len(spec.sha256) == 64
                assert spec.filename.endswith((".deb", ".whl"))
    categories = {s.name: s.category for m in (kjv, dictd, fortunes, chatterbot) for s in m.SOURCES}
    assert categories == {
        "kjv": "religious",
        "gcide": "dictionary",
        "devil": "dictionary",
        "foldoc": "encyclopedia",
        "jargon": "encyclopedia",
        "fortunes": "quotes",
        "chatterbot": "conversation",
    }
