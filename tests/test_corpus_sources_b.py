"""Markup source adapters (man pages, reST, POD, AsciiDoc, licenses, e-mail) on tiny hand-written fixtures."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from conftest import REPO
from datamodules.corpus.schema import RawDocument, SkippedInput, Source
from datamodules.corpus.sources import asciidoc, email, licenses, manpages, pod, rst_docs
from datamodules.corpus.sources.text_blocks import UnitBuilder, paragraphs

FIXTURES = REPO / "tests" / "fixtures" / "corpus"


def parse_fixture(source: Source, folder: str) -> tuple[dict[str, RawDocument], set[str]]:
    """Documents by file name, and the "file: reason" of every input the adapter skipped."""
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        docs = {Path(d.file).name: d for d in source.parse([FIXTURES / folder])}
    skipped = {str(w.message).split("/")[-1] for w in record if issubclass(w.category, SkippedInput)}
    return docs, skipped


def levels(doc: RawDocument) -> list[int]:
    return [u.level for u in doc.units]


def check_well_formed(doc: RawDocument) -> None:
    assert doc.units[0].level == 0
    assert {u.level for u in doc.units} <= {0, 1, 2}
    assert all(u.text.strip() for u in doc.units)  # no whitespace-only unit
    assert "".join(u.text for u in doc.units) == doc.text


# (adapter source, fixture folder, file -> expected unit levels, expected "file: reason" skips)
CASES = [
    (
        manpages.SOURCES[0], "manpages",
        {"brewlog.1": [0, 0, 0, 2, 1, 1, 1, 2, 0, 2, 0], "teapot.7.gz": [0, 0, 2, 2, 0]},
        {"broken.1.gz: not gzip data", "empty.1: empty file", "brewlog_alias.3: redirect",
         "latin1.5: undecodable bytes (utf-8, at byte 25)", "nostructure.8: no boundaries"},
    ),
    (
        rst_docs.SOURCES[0], "rst_docs",
        {"kettle.rst.txt": [0, 2, 0, 2, 2, 1, 0]},
        {"empty.rst.txt: empty file", "latin1.rst.txt: undecodable bytes (utf-8, at byte 3)",
         "plain.rst.txt: no boundaries"},
    ),
    (rst_docs.SOURCES[1], "rst_docs", {"brewing.rst.txt": [0, 0, 1, 2, 1, 0, 1]}, set()),
    (
        pod.SOURCES[0], "pod",
        {"perlteapot.pod": [0, 0, 1, 1, 2, 2, 2, 0]},
        {"empty.pod: empty file", "latin1.pod: undecodable bytes (utf-8, at byte 16)",
         "nocommands.pod: no boundaries"},
    ),
    (
        asciidoc.SOURCES[0], "asciidoc",
        {"pour-tea.txt": [0, 2, 0, 0, 2, 1, 2], "gitteapot.txt": [0, 0, 0, 2]},
        {"empty.txt: empty file", "latin1.txt: undecodable bytes (utf-8, at byte 3)",
         "pour-options.txt: no title (an included fragment, not a page)", "one-paragraph.txt: no boundaries"},
    ),
    (
        licenses.SOURCES[0], "licenses",
        {"Tea-1.0.json": [0, 0, 0, 2, 0, 1, 1, 0, 2], "Cup-1.0.json": [0, 0, 1, 1, 1, 0, 2]},
        {"Empty.json: empty file", "Broken.json: not a license JSON object", "Kettle-1.0.json: no boundaries",
         "Latin.json: undecodable bytes (utf-8, at byte 37)", "Tea-1.0-alias.json: duplicate license text"},
    ),
    (
        email.SOURCES[0], "email",
        {"msg_tea.txt": [0, 2, 2, 1, 2, 2], "msg_mixed.txt": [0, 2, 1, 2, 1, 2, 1, 0, 1]},
        {"msg_empty.txt: empty file", "msg_noheaders.txt: no headers (not an e-mail message)"},
    ),
]


@pytest.mark.parametrize("source, folder, expected, expected_skips", CASES, ids=lambda c: getattr(c, "name", None))
def test_fixture_documents_have_the_expected_boundaries_and_skips(source, folder, expected, expected_skips):
    docs, skipped = parse_fixture(source, folder)
    assert set(docs) == set(expected)  # the good files still parse; the bad ones are left out
    for name, want in expected.items():
        check_well_formed(docs[name])
        assert levels(docs[name]) == want, name
    assert skipped == expected_skips
    if expected_skips:  # each bad input is reported as a SkippedInput warning
        with pytest.warns(SkippedInput):
            list(source.parse([FIXTURES / folder]))


ALL_SOURCES = [s for m in (manpages, rst_docs, pod, asciidoc, licenses, email) for s in m.SOURCES]


@pytest.mark.parametrize("source", ALL_SOURCES, ids=lambda s: s.name)
def test_sources_are_pinned_and_described(source):
    assert source.category in {"manuals", "technical-docs", "faq", "programming-docs", "howto", "legal", "email"}
    assert len(source.level_names) == 3 and source.license
    for spec in source.packages:
        assert spec.version and spec.filename
        assert spec.manager == "local" or len(spec.sha256) == 64


def test_man_pages_render_troff_to_plain_text():
    docs, _ = parse_fixture(manpages.SOURCES[0], "manpages")
    text = docs["brewlog.1"].text
    for markup in ("\\f", "\\-", ".B", ".TP", ".\\\"", "\\["):
        assert markup not in text
    assert "brewlog - keep a diary of tea brewing" in text
    assert "brewlog records each pot of tea you make, with the leaf" in text  # filled into one line
    assert "~/.brewlog, one per line" in text and "degrees Celsius" in text
    assert "-t, --temp\n    Set the water temperature" in text  # a tagged item: tag, then its indented body
    assert "$ brewlog -t 70 sencha\n" in text  # an example keeps its line
    assert "• Clay pots keep heat well." in docs["teapot.7.gz"].text
    assert "Size\tCups\nsmall\ttwo\n" in docs["teapot.7.gz"].text  # table rows, without the format lines


def test_rst_pages_drop_markup_and_keep_literal_blocks_whole():
    docs, _ = parse_fixture(rst_docs.SOURCES[0], "rst_docs")
    units = [u.text for u in docs["kettle.rst.txt"].units]
    text = "".join(units)
    for markup in (":func:", ":mod:", "``", "**", ".. ", "=====", "^^^^", "-----", ":synopsis:", "kettle; element"):
        assert markup not in text
    assert units[0].startswith("kettle --- Boil water\n\nSource code: Lib/kettle.py")
    assert units[2].startswith("Functions\n\nboil(litres, *, target=100)\n\n   Heat litres")  # signature + body
    assert units[3] == "   New in version 3.11.\n      The target keyword.\n\n"
    assert units[4].startswith("Example:\n\n   >>> boil(1.5)") and "target=80)\n   80\n" in units[4]  # one unit
    faq, _ = parse_fixture(rst_docs.SOURCES[1], "rst_docs")
    assert set(faq) == {"brewing.rst.txt"}  # the FAQ pages form their own source
    assert faq["brewing.rst.txt"].units[2].text.startswith("Why does my tea taste bitter?\n\nThe leaves")


def test_pod_renders_formatting_codes_and_drops_commands():
    docs, _ = parse_fixture(pod.SOURCES[0], "pod")
    text = docs["perlteapot.pod"].text
    for markup in ("B<", "C<", "I<", "L<", "E<", "S<", "X<", "=head", "=item", "=over", "=for", "not printed",
                   "Neither", "after the cut"):
        assert markup not in text
    assert "see Steeping in perltea.\nThe <leaf> goes in first." in text
    assert "brew LEAF\nbrew LEAF, SECONDS\n\nBrews LEAF for SECONDS seconds." in text  # one entry, two items
    assert "* A bullet about $pot->pour." in text and "the tea guide." in text
    assert pod.render_codes("C<<< a >> b >>>")[0] == "a >> b"


def test_asciidoc_drops_markup_and_keeps_delimited_blocks_whole():
    docs, _ = parse_fixture(asciidoc.SOURCES[0], "asciidoc")
    units = [u.text for u in docs["pour-tea.txt"].units]
    text = "".join(units)
    for markup in ("linkgit:", "// a comment", "[verse]", "=====", "Preparation\n---", "~~~~"):
        assert markup not in text
    assert "see git-pour(1)." in text
    assert units[4] == "------------\ntilt\npour\n\nstop\n------------\n\n"  # blank line inside stays in the block
    assert units[5] == "Finishing touches\n\n - Wipe the spout.\n\n   Keep a cloth nearby.\n\n"  # item + its body
    assert "the command-line guide" in docs["gitteapot.txt"].text and "<<" not in docs["gitteapot.txt"].text


def test_licenses_use_their_numbering():
    docs, _ = parse_fixture(licenses.SOURCES[0], "licenses")
    tea = docs["Tea-1.0.json"]
    assert tea.doc_id == "Tea-1.0"
    assert [u.text.strip() for u in tea.units if u.level == 0] == [
        "Tea License 1.0", "TERMS AND CONDITIONS", "1. Definitions.", "2. Permission.", "3. No Warranty."
    ]
    assert tea.text.startswith("Tea License 1.0\n\n") and '"licenseText"' not in tea.text
    assert licenses.units_from_license("Long line " * 30 + "\n" + "Another " * 30 + "\n")[1].level == 2  # unwrapped


def test_email_renders_headers_parts_and_placeholders():
    docs, _ = parse_fixture(email.SOURCES[0], "email")
    mixed = docs["msg_mixed.txt"].text
    assert "[image/png attachment: pot.png]" in mixed
    for hidden in ("iVBOR", "--SPLIT", "preamble"):
        assert hidden not in mixed
    nested = [u.text for u in docs["msg_mixed.txt"].units if u.level == 0][1]
    assert nested.startswith("From: Cy Steep <cy@example.org>\nSubject: Leaves arrived\n")
    tea = docs["msg_tea.txt"].units
    assert tea[0].text.startswith("Received: from kettle") and tea[1].text.startswith("From: Ada Leaf")
    assert tea[3].text == "Hello all,\n\n"


def test_unit_builder_keeps_a_headings_first_paragraph_and_the_coarsest_level():
    out = UnitBuilder()
    out.heading(0, "Title\n")
    out.add("\n")
    out.boundary(2)  # the paragraph under a heading stays in its unit
    out.add("Intro.\n\n")
    out.boundary(2)
    out.boundary(1)  # two boundaries at one place: the coarser wins
    out.add("Next.\n")
    units = out.finish()
    assert [(u.text, u.level) for u in units] == [("Title\n\nIntro.\n\n", 0), ("Next.\n", 1)]
    assert paragraphs("a\nb\n\n \nc\n") == ["a\nb\n\n \n", "c\n"]
