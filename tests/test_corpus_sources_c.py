"""Source adapters of the wider corpus families (academic papers, release notes, a novel) on tiny fixtures.

Every fixture is written here: invented text about tea, or short public-domain lines (Moby-Dick, 1851).
No network, no packages.
"""

from __future__ import annotations

import struct
import zlib
from collections import Counter
from pathlib import Path

import pytest

from datamodules.corpus.packing import PackedDocument, PackedUnit
from datamodules.corpus.schema import RawDocument, SkippedInput, Unit
from datamodules.corpus import latex_text
from datamodules.corpus.sources import all_sources, emacs_news, heldout_sources, moby_dick, r_vignettes


def check(doc: RawDocument) -> list[int]:
    """The invariants every document keeps (hierarchical levels, no text lost); returns its unit levels."""
    levels = [u.level for u in doc.units]
    assert levels and levels[0] == 0 and set(levels) <= {0, 1, 2}
    assert all(u.text.strip() for u in doc.units)
    assert "".join(u.text for u in doc.units) == doc.text
    bounds = PackedDocument([PackedUnit(u, 1, doc.file) for u in doc.units]).boundaries()
    assert set(bounds["coarse"]) <= set(bounds["middle"]) <= set(bounds["fine"])
    return levels


def first_lines(units: list[Unit], level: int) -> list[str]:
    """First line of each unit opening a segment of ``level`` or coarser."""
    return [u.text.splitlines()[0] for u in units if u.level <= level]


def parse(source, roots: list[Path]) -> tuple[list[RawDocument], list[str]]:
    """Documents, and the reasons of the inputs the adapter skipped."""
    with pytest.warns() as caught:
        docs = list(source.parse(roots))
    reasons = sorted(str(w.message).rsplit(": ", 1)[1] for w in caught if issubclass(w.category, SkippedInput))
    return docs, reasons


# --- academic: R vignettes ---------------------------------------------------------------------------------

VIGNETTE = r"""\documentclass[nojss]{jss}
\newcommand{\R}{\proglang{R}}
\newcommand{\brew}[1]{\code{brew(#1)}}
\title{Steeping Tea with \pkg{teapot}}
\Abstract{
The \pkg{teapot} package brews tea in \R{}.
We show how---and why.
}
\begin{document}
%\VignetteIndexEntry{Steeping tea}

<<setup, echo=FALSE, results=hide>>=
options(prompt = "R> ")
@

\section{Introduction} \label{sec:intro}

Tea is steeped \citep[see][p.~2]{Leaf:2001} at a temperature $T$ % a comment
chosen by the user; see Section~\ref{sec:model} and Equation~\eqref{eq:time}.

Second paragraph, with \emph{emphasis}, a footnote\footnote{Short.}, ``quotes''
and \code{pot$leaf} in a sentence. It holds \Sexpr{nrow(cups)} cups.

\section{Model} \label{sec:model}

\subsection{Time}

The steeping time is
\begin{equation} \label{eq:time}
  t = \frac{c}{T}.
\end{equation}
As \cite{Leaf:2001} notes:
\begin{itemize}
  \item green tea is steeped briefly,
  \item black tea longer.
\end{itemize}

\begin{figure}
\caption{A pot.} \label{fig:pot}
\end{figure}

\subsection{Leaves}

Whole leaves steep slower.

<<brew-it>>=
brew("sencha", temp = 70)
@

\subsubsection{A detail}

Use \brew{"sencha"} for Japanese tea.

\appendix
\section{Proofs}

Trivial.

\bibliography{tea}
\end{document}
"""


def vignette_root(tmp_path: Path, files: dict[str, str | bytes]) -> Path:
    folder = tmp_path / r_vignettes.SITE_LIBRARY / "teapot" / "doc"
    folder.mkdir(parents=True)
    for name, content in files.items():
        (folder / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    return tmp_path


def test_r_vignette_sections_subsections_paragraphs(tmp_path: Path):
    root = vignette_root(tmp_path, {"brew.Rnw": VIGNETTE, "empty.Rnw": "", "fragment.Rnw": "\\section{A}\nText.\n",
                                    "latin1.Rnw": b"\\begin{document}caf\xe9\\end{document}"})
    docs, reasons = parse(r_vignettes.SOURCES[0], [root])
    assert reasons == ["empty file", "no document body", "undecodable bytes (utf-8, at byte 19)"]
    assert [d.doc_id for d in docs] == ["teapot/brew"]
    doc = docs[0]
    assert check(doc) == [0, 0, 2, 0, 1, 2, 2, 0]
    units = doc.units
    assert first_lines(units, 0) == ["Steeping Tea with teapot", "1. Introduction", "2. Model", "A. Proofs"]
    assert first_lines(units, 1) == first_lines(units, 0)[:3] + ["2.2. Leaves", "A. Proofs"]
    assert units[3].text.startswith("2. Model\n\n2.1. Time\n\nThe steeping time")  # a bare heading joins the next
    text = doc.text
    assert units[0].text == "Steeping Tea with teapot\n\nAbstract\nThe teapot package brews tea in R.\n" \
                            "We show how\u2014and why.\n\n"
    assert "Tea is steeped (see Leaf:2001, p. 2) at a temperature $T$\nchosen by the user; see Section 2 and " \
           "Equation (1)." in text  # comment gone, references numbered, mathematics kept
    assert "with emphasis, a footnote (Short.), \u201cquotes\u201d\nand pot$leaf in a sentence. It holds cups." in text
    assert "\\begin{equation}\n  t = \\frac{c}{T}.\n\\end{equation}" in text and "\\label" not in text
    assert "As Leaf:2001 notes:\n- green tea is steeped briefly,\n- black tea longer." in text
    assert 'brew("sencha", temp = 70)\n' in text and "options(prompt" not in text  # shown chunk kept, hidden gone
    assert "A pot." not in text and "tea}" not in text  # figure and bibliography gone
    assert units[-2].text == 'A detail\n\nUse brew("sencha") for Japanese tea.\n\n'  # \subsubsection: fine
    assert text.endswith("A. Proofs\n\nTrivial.\n")


def test_r_vignette_labels_number_sections_equations_and_floats():
    body = (r"\section{A}\label{a}\subsection{B}\label{b}\begin{eqnarray}x\\y\nonumber\\z\label{z}\end{eqnarray}"
            r"\begin{figure}\caption{F}\label{f}\end{figure}\appendix\section{C}\label{c}")
    assert latex_text.number_labels(body) == {"a": "1", "b": "1.1", "z": "2", "f": "1", "c": "A"}


def test_r_vignette_inline_code_and_macros():
    assert latex_text.plain_code(r"x\$y \_a \textbf{b} y ~ x \dots") == "x$y _a b y ~ x ..."
    macros, rest = latex_text.collect_macros(r"\newcommand{\pot}[2]{#1 in #2}\let\mysection=\subsection Body")
    assert macros == {"pot": (2, "#1 in #2"), "mysection": (-1, "subsection")} and rest.strip() == "Body"
    assert latex_text.expand_macros(r"\pot{tea}{cup} \mysection{X}", macros) == r"tea in cup \subsection{X}"


# --- release notes: Emacs NEWS ----------------------------------------------------------------------------

NEWS = """\
GNU Teapot NEWS -- history of user-visible changes.

Copyright (C) 2024 Nobody.


* Installation Changes in Teapot 2.0

** The kettle is now optional.
Teapot boils water itself when no kettle is found.

---
** New option 'steep-time'.

It sets the steeping time in seconds.

*** Its default is 180.
Three minutes suit most black teas.


* Changes in Teapot 2.0

+++
** Cups are counted.
\f
----------------------------------------------------------------------
This file is part of GNU Teapot.

Local variables:
mode: outline
end:
"""


def test_emacs_news_parts_items_paragraphs(tmp_path: Path):
    folder = tmp_path / emacs_news.ETC
    folder.mkdir(parents=True)
    (folder / "NEWS").write_text(NEWS)
    (folder / "NEWS.1-17").write_text("Old news.\n\n* Changes in Teapot 1\n\n** It pours.\n\n** It drips.\n")
    (folder / "NEWS.9").write_text("")
    (folder / "NEWS.10").write_text("No outline at all.\n")
    (folder / "ORG-NEWS").write_text("* Version 1\n\n** Not read.\n")
    docs, reasons = parse(emacs_news.SOURCES[0], [tmp_path])
    assert reasons == ["empty file", "no boundaries"]
    assert [d.doc_id for d in docs] == ["NEWS", "NEWS.1-17"]  # newest first; component files not read
    news = docs[0]
    assert check(news) == [0, 1, 2, 0]
    assert first_lines(news.units, 1) == [
        "* Installation Changes in Teapot 2.0", "** New option 'steep-time'.", "* Changes in Teapot 2.0"]
    assert news.units[0].text.startswith("* Installation Changes in Teapot 2.0\n\n** The kettle is now optional.\n")
    assert news.text.endswith("* Changes in Teapot 2.0\n\n** Cups are counted.\n")  # trailer and marks gone
    for gone in ("Copyright", "---\n", "+++", "\f", "This file is part", "Local variables"):
        assert gone not in news.text
    assert check(docs[1]) == [0, 1]  # "* Changes" and "** It pours." share a unit; "** It drips." opens one


def test_emacs_news_missing_folder_is_reported(tmp_path: Path):
    docs, reasons = parse(emacs_news.SOURCES[0], [tmp_path])
    assert docs == [] and reasons == ["no NEWS files"]


# --- novel: Moby-Dick ------------------------------------------------------------------------------------

BOOK = """\ufeffThe Project Gutenberg EBook of Moby Dick\r
\r
*** START OF THIS PROJECT GUTENBERG EBOOK ***\r
\r
ETYMOLOGY.\r
\r
(Supplied by a Late Consumptive Usher to a Grammar School)\r
\r
CHAPTER 1. Loomings.\r
\r
\r
Call me Ishmael. Some years ago--never mind how long\r
precisely--having little or no money in my purse, I thought I would\r
sail about a little. It is a way I have.\r
\r
There now is your insular city of the Manhattoes. Mr. Bulkington and\r
Capt. Peleg were not there. "Who is?" asked he.\r
\r
CHAPTER 2. The Carpet-Bag.\r
\r
I stuffed a shirt or two into my old carpet-bag.\r
\r
End of Project Gutenberg's Moby Dick\r
"""


def rdb(strings: list[str | None]) -> bytes:
    """A lazy-load database entry as R writes one: a serialized character vector, zlib-compressed."""
    out = b"X\n" + struct.pack(">iii", 3, 0x40202, 0x30500) + struct.pack(">i", 5) + b"UTF-8"
    out += struct.pack(">ii", 0x10, len(strings))
    for s in strings:
        data = s.encode() if s is not None else b""
        out += struct.pack(">ii", 0x8009, len(data) if s is not None else -1) + data
    return struct.pack(">i", len(out)) + zlib.compress(out)


def test_read_rdb_string_decodes_a_character_vector():
    assert moby_dick.read_rdb_string(rdb(["a", None, "b\u00e9"])) == ["a", "b\u00e9"]
    with pytest.raises(moby_dick.RDataError):
        moby_dick.read_rdb_string(b"\x00\x00\x00\x05not zlib")


def test_moby_dick_chapters_paragraphs_sentences(tmp_path: Path):
    path = tmp_path / moby_dick.RDB
    path.parent.mkdir(parents=True)
    path.write_bytes(rdb([BOOK]))
    with pytest.warns(SkippedInput, match="no boundaries"):  # the one-paragraph chapter 2 has no boundary
        docs = list(moby_dick.SOURCES[0].parse([tmp_path]))
    assert [d.doc_id for d in docs] == ["chapter-001"]  # ETYMOLOGY has only its heading and one paragraph
    chapter = docs[0]
    assert check(chapter) == [0, 2, 2, 1, 2, 2]
    texts = [u.text for u in chapter.units]
    assert texts[0] == "CHAPTER 1. Loomings.\n\n\nCall me Ishmael. "
    assert texts[1] == "Some years ago--never mind how long\nprecisely--having little or no money in my purse, " \
                       "I thought I would\nsail about a little. "
    assert texts[3] == "There now is your insular city of the Manhattoes. "
    assert texts[4] == "Mr. Bulkington and\nCapt. Peleg were not there. "  # titles do not end a sentence
    assert texts[5] == '"Who is?" asked he.\n'  # "?" before a small letter does not either
    assert "Gutenberg" not in chapter.text and "\r" not in chapter.text


def test_moby_dick_sentences_concatenate_back():
    paragraph = 'He said, "Go." Then Mr. Starbuck went. J. Ross wrote it! Did he?\n\n'
    pieces = moby_dick.sentences(paragraph)
    assert "".join(pieces) == paragraph
    assert pieces == ['He said, "Go." ', "Then Mr. Starbuck went. ", "J. Ross wrote it! ", "Did he?\n\n"]


def test_moby_dick_unreadable_data_is_skipped(tmp_path: Path):
    docs, reasons = parse(moby_dick.SOURCES[0], [tmp_path])
    assert docs == [] and reasons == ["data file missing"]
    path = tmp_path / moby_dick.RDB
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\x00\x00\x00\x09garbage!!")
    docs, reasons = parse(moby_dick.SOURCES[0], [tmp_path])
    assert docs == [] and len(reasons) == 1 and reasons[0].startswith("unreadable R data")


# --- all three --------------------------------------------------------------------------------------------

NEW = [s for m in (r_vignettes, emacs_news, moby_dick) for s in m.SOURCES]


@pytest.mark.parametrize("source", NEW, ids=lambda s: s.name)
def test_new_sources_are_pinned_registered_and_not_held_out(source):
    assert source.category in {"academic", "release-notes", "novel"}
    assert len(source.level_names) == 3 and source.license
    for spec in source.packages:
        assert spec.manager == "deb" and spec.version and len(spec.sha256) == 64 and spec.filename.endswith(".deb")
        assert spec.name not in {"r-cran-janeaustenr", "r-cran-tm"}  # reserved for independent checks
    assert source.name in {s.name for s in all_sources()}
    held = heldout_sources()
    assert source.category not in {s.category for s in held}
    assert not {p.name for p in source.packages} & {p.name for s in held for p in s.packages}


def test_new_categories_are_new_to_the_corpus():
    counts = Counter(s.category for s in all_sources())
    assert all(counts[c] == 1 for c in ("academic", "release-notes", "novel"))
