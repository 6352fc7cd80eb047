"""HELD-OUT family "history-book": narrative non-fiction books of history, from two Debian packages.

Never part of the training corpus (see :func:`datamodules.corpus.sources.heldout_sources`); built only
by ``lit-block data build --heldout``. Levels: coarse = a chapter, middle = a section, fine = a paragraph.

* ``cfi-hacker-culture``: Linus Walleij's *Copyright Does Not Exist* (a history of hacker culture,
  English translation; public domain), Debian ``cfi-en``: one HTML file per chapter. One raw document
  per chapter (the preface and chapters 1-17; the closing bibliography of chapter 17 and the appendix,
  a debate transcript, are left out). A section starts at a heading line set wholly in bold (``<b>The
  Police</b><br>``); the book uses such headings only in some chapters, so many chapters are one
  section. HTML is reduced to text: ``<p>`` and ``<br><br>`` end a paragraph, one ``<br>`` a line;
  the navigation links and the design credit are dropped.
* ``debian-history``: *A Brief History of Debian* (GPL-2+), Debian ``debian-history``: its plain-text
  rendering ``project-history.en.txt.gz``, from ``Chapter 1.`` on (the title page and the table of
  contents are left out), the manifesto appendix included. ``Chapter N.`` / ``Appendix A.`` headings
  are chapters, numbered headings (``4.1.``, ``4.1.1.``) sections; the indented blocks are paragraphs.
"""

from __future__ import annotations

import gzip
import html
import re
from collections.abc import Iterator
from pathlib import Path

from datamodules.corpus.schema import PackageSpec, RawDocument, Source, Unit, skip
from datamodules.corpus.sources.text_blocks import UnitBuilder, document, paragraphs

# --- Copyright Does Not Exist (cfi-en) -------------------------------------------------------------

CFI_DIR = "usr/share/doc/cfi-en/html"
BOLD_ON, BOLD_OFF = "\x01", "\x02"  # bold markers while rendering; never in the output
BLOCK_TAGS = re.compile(r"(?i)</?(?:p|blockquote|div|table|tr|td|th|h\d|ul|ol|li|center|hr)\b[^>]*>")
NAVIGATION = re.compile(r"(?i)(?:index|design and formatting by .*|fastcounter.*)")
BIBLIOGRAPHY = "Literature:"  # opens the reading list closing chapter 17


def render_html(source: str) -> str:
    """Text of an HTML page: blank lines between blocks, one line per ``<br>``; bold kept as markers."""
    s = re.sub(r"(?is)<(script|style|head|title)\b.*?</\1\s*>", "", source)
    s = re.sub(r"(?s)<!--.*?-->", "", s)
    s = re.sub(r"\s+", " ", s)
    s = re.sub(r"(?i)<(?:b|strong)\b[^>]*>", BOLD_ON, s)
    s = re.sub(r"(?i)</(?:b|strong)\s*>", BOLD_OFF, s)
    s = re.sub(r"(?i)<br\s*/?>", "\n", s)
    s = BLOCK_TAGS.sub("\n\n", s)
    s = html.unescape(re.sub(r"<[^>]+>", "", s)).replace("\xa0", " ")
    s = "\n".join(" ".join(line.split()) for line in s.split("\n"))
    s = s.replace(BOLD_ON + BOLD_OFF, "").replace(BOLD_OFF + BOLD_ON, "").replace(BOLD_OFF + " " + BOLD_ON, " ")
    s = re.sub(r"(?m)^([\x01\x02]*) +", r"\1", s)  # no spaces at a line's ends, bold markers or not
    s = re.sub(r"(?m) +([\x01\x02]*)$", r"\1", s)
    return re.sub(r"\n{3,}", "\n\n", s).strip() + "\n"


def _plain(text: str) -> str:
    return text.replace(BOLD_ON, "").replace(BOLD_OFF, "")


def _bold_heading(line: str) -> bool:
    """A short line set wholly in bold (and not a run-in label such as ``Q:``)."""
    line = line.strip()
    inner = line[1:-1]
    return (line.startswith(BOLD_ON) and line.endswith(BOLD_OFF) and BOLD_ON not in inner and BOLD_OFF not in inner
            and 0 < len(inner.strip()) <= 70 and not inner.rstrip().endswith(":"))


def units_from_chapter(rendered: str) -> list[Unit]:
    """A chapter's units: its title block (coarse), bold-headed sections (middle), paragraphs (fine)."""
    out = UnitBuilder()
    titled = False
    for block in paragraphs(rendered):
        plain = _plain(block).strip()
        if not plain or NAVIGATION.fullmatch(plain):
            continue
        if plain.startswith(BIBLIOGRAPHY):
            break
        first, _, rest = block.partition("\n")
        if not titled:
            out.heading(0, _plain(block))  # the chapter title (maybe several lines) opens the chapter
            titled = True
        elif _bold_heading(first):
            out.heading(1, _plain(first) + "\n")
            out.add(_plain(rest))
        else:
            out.boundary(2)
            out.add(_plain(block))
        if not _plain(block).endswith("\n\n"):
            out.add("\n")  # keep a blank line between blocks (navigation blocks were dropped)
    return out.finish()


def _chapter_key(path: Path) -> int:
    return 0 if path.name == "preface.htm" else int(re.sub(r"\D", "", path.name))


def parse_cfi(roots: list[Path]) -> Iterator[RawDocument]:
    root = roots[0]
    base = root / CFI_DIR
    files = [base / "preface.htm", *base.glob("ch*web.htm")]
    for path in sorted((p for p in files if p.is_file()), key=_chapter_key):
        data = path.read_bytes()
        if not data.strip():
            skip(path, "empty file")
            continue
        text = render_html(data.decode("latin-1"))  # the pages are Windows-1252 / Latin-1, undeclared
        if doc := document(root, path, units_from_chapter(text)):
            yield doc


# --- A Brief History of Debian (debian-history) ------------------------------------------------------

HISTORY_TXT = "usr/share/doc/debian-history/docs/project-history.en.txt.gz"
# the headings separate their number with a no-break space ("1.1.\u00a0In the Beginning")
CHAPTER = re.compile(r"(?:Chapter|Appendix)\s(?:\d+|[A-Z])\.\s\S.*")
SECTION = re.compile(r"(?:\d+|[A-Z])(?:\.\d+)+\.\s\S.*")


def units_from_history(text: str) -> list[Unit] | None:
    """Units of the book from ``Chapter 1.`` on, or None when it has no chapter heading."""
    lines = text.replace("\r\n", "\n").splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if CHAPTER.fullmatch(line.rstrip())), None)
    if start is None:
        return None
    out = UnitBuilder()
    previous_blank, in_heading = True, False
    for line in lines[start:]:
        stripped = line.rstrip()
        if not stripped:
            out.add(line)
            previous_blank, in_heading = True, False
            continue
        if not line[0].isspace():  # a heading: flush left (a long one wraps onto more flush-left lines)
            if in_heading:
                out.heading(None, line)
            else:
                out.heading(0 if CHAPTER.fullmatch(stripped) else 1 if SECTION.fullmatch(stripped) else 2, line)
            in_heading = True
        else:
            if previous_blank:
                out.boundary(2)  # an indented block after a blank line: a paragraph
            out.add(line)
            in_heading = False
        previous_blank = False
    return out.finish()


def parse_history(roots: list[Path]) -> Iterator[RawDocument]:
    root = roots[0]
    path = root / HISTORY_TXT
    if not path.is_file():
        skip(path, "book text missing")
        return
    try:
        text = gzip.decompress(path.read_bytes()).decode("utf-8").replace("\xa0", " ")  # no-break spaces: plain
    except (OSError, UnicodeDecodeError) as err:
        skip(path, f"unreadable ({type(err).__name__})")
        return
    units = units_from_history(text)
    if units is None:
        skip(path, "no chapter heading")
    elif doc := document(root, path, units):
        yield doc


SOURCES = [
    Source(
        name="cfi-hacker-culture",
        category="history-book",
        license="public domain",
        level_names=("chapter", "section", "paragraph"),
        packages=(
            PackageSpec(
                "deb", "cfi-en", "3.0-10.2",
                sha256="a080fc8f3b1a36c645b22f769fec4acc2f0cded42bcc5d5865c846845c897da2",
                filename="cfi-en_3.0-10.2_all.deb",
            ),
        ),
        parse=parse_cfi,
        notes="HELD-OUT (evaluation only). Copyright Does Not Exist (Linus Walleij; English translation): "
        "preface and 17 chapters; sections only where the book has bold headings.",
    ),
    Source(
        name="debian-history",
        category="history-book",
        license="GPL-2.0-or-later",
        level_names=("chapter", "section", "paragraph"),
        packages=(
            PackageSpec(
                "deb", "debian-history", "2.28",
                sha256="ae364cdfd075bf6a08ca8f5105b44db7093e3b201c95d3b70a863b8849c6a082",
                filename="debian-history_2.28_all.deb",
            ),
        ),
        parse=parse_history,
        notes="HELD-OUT (evaluation only). A Brief History of Debian, English plain-text edition.",
    ),
]
