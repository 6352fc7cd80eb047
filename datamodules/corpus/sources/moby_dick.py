"""Narrative prose: Herman Melville's *Moby-Dick* (1851; public domain), from Debian ``r-cran-tokenizers``.

The R package ships the Project Gutenberg text (EBook #2701) as its example data set ``mobydick``: one
string in the package's lazy-load database ``data/Rdata.rdb``. :func:`read_rdb_string` reads it without R
(a 4-byte length, a zlib stream, then R's XDR serialization of a character vector); the text's Gutenberg
header and license are left out (the book runs from ``ETYMOLOGY.`` to the end of the ``Epilogue``).

One raw document per chapter (``ETYMOLOGY.``, the two ``EXTRACTS`` parts, ``CHAPTER 1.`` ... ``CHAPTER
135.``, ``Epilogue``), so that chapters spread over the splits. Levels:

* coarse: a chapter starts (its heading line opens the chapter's first unit);
* middle: a paragraph starts (blank-line separated, as the book prints them);
* fine: a sentence starts: after ``.``, ``!`` or ``?`` (and any closing quotes or brackets), at
  whitespace followed by a capital letter or an opening quote, unless the word before the stop is a
  title or an initial (``Mr.``, ``Capt.``, ``J.``). The text keeps its line breaks as the file has them.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterator
from pathlib import Path

from datamodules.corpus.schema import PackageSpec, RawDocument, Source, Unit, clean_units, skip
from datamodules.corpus.sources.text_blocks import paragraphs

RDB = Path("usr/lib/R/site-library/tokenizers/data/Rdata.rdb")
CHAPTER = re.compile(r"(?:CHAPTER \d+\. .*|ETYMOLOGY\.|EXTRACTS\b.*|Epilogue)")
END = "End of Project Gutenberg"
SENTENCE_END = re.compile(r"[.!?][\"')\]]*(?=\s+[\"'(\[]*[A-Z])")
NOT_AN_END = re.compile(r"(?:\b(?:Mr|Mrs|Messrs|Dr|St|Capt|Mt|Jr|Sr|Esq|Rev|Gen|Col|No|Vol|viz)|\b[A-Z])\.$")


class RDataError(ValueError):
    """The lazy-load database does not hold a serialized character vector where expected."""


def read_rdb_string(data: bytes) -> list[str]:
    """The strings of the first object in an R lazy-load database (``.rdb``), zlib-compressed, XDR-serialized."""
    if len(data) < 5:
        raise RDataError("too short for a lazy-load database")
    try:
        raw = zlib.decompress(data[4:])  # 4 bytes: the uncompressed length; then a zlib stream
    except zlib.error as err:
        raise RDataError("not zlib data") from err
    if raw[:2] != b"X\n":
        raise RDataError("not XDR serialization")
    pos = 2

    def integer() -> int:
        nonlocal pos
        if pos + 4 > len(raw):
            raise RDataError("truncated")
        value = int.from_bytes(raw[pos : pos + 4], "big", signed=True)
        pos += 4
        return value

    version = integer()
    integer(), integer()  # the writer's R version, the oldest R that reads it
    if version == 3:
        skip_bytes = integer()  # the length of the native encoding's name, which follows
        pos += skip_bytes
    if integer() & 0xFF != 16:  # STRSXP: a character vector
        raise RDataError("the object is not a character vector")
    strings = []
    for _ in range(integer()):
        if integer() & 0xFF != 9:  # CHARSXP
            raise RDataError("a vector element is not a string")
        length = integer()
        if length < 0:  # NA_character_
            continue
        strings.append(raw[pos : pos + length].decode("utf-8"))
        pos += length
    return strings


def sentences(paragraph: str) -> list[str]:
    """A paragraph cut at its sentence starts; the pieces keep their whitespace and concatenate back to it."""
    pieces, start = [], 0
    for match in SENTENCE_END.finditer(paragraph):
        if NOT_AN_END.search(paragraph[start : match.start() + 1]):
            continue
        end = match.end() + len(paragraph[match.end() :]) - len(paragraph[match.end() :].lstrip())
        pieces.append(paragraph[start:end])
        start = end
    if start < len(paragraph):
        pieces.append(paragraph[start:])
    return pieces


def chapter_units(text: str) -> list[Unit]:
    """A chapter's units: its heading with the first sentence (0), paragraphs (1), sentences (2)."""
    units: list[Unit] = []
    heading = ""
    for block in paragraphs(text):
        if not units and not heading:  # the heading line (and the blank lines after it) open the chapter
            heading = block
            continue
        for i, sentence in enumerate(sentences(block)):
            units.append(Unit(heading + sentence, 0 if heading else 1 if i == 0 else 2))
            heading = ""
    if heading:  # a heading with nothing under it
        units.append(Unit(heading, 0))
    return clean_units(units)


def split_chapters(book: str) -> list[tuple[str, str]]:
    """(title, text) of each chapter from ``ETYMOLOGY.`` to the end of the Epilogue."""
    book = book.replace("\r\n", "\n").lstrip("\ufeff")
    end = book.find(END)
    if end >= 0:
        book = book[:end]
    chapters: list[tuple[str, str]] = []
    lines = book.splitlines(keepends=True)
    for line in lines:
        if CHAPTER.fullmatch(line.rstrip()):
            chapters.append((line.strip(), line))
        elif chapters:
            chapters[-1] = (chapters[-1][0], chapters[-1][1] + line)
    return [(title, text.rstrip() + "\n") for title, text in chapters]


def chapter_id(index: int, title: str) -> str:
    number = re.match(r"CHAPTER (\d+)", title)
    return f"chapter-{int(number[1]):03d}" if number else f"{index:03d}-{title.split('.')[0].split(' ')[0].lower()}"


def parse(roots: list[Path]) -> Iterator[RawDocument]:
    root = roots[0]
    path = root / RDB
    if not path.is_file():
        skip(path, "data file missing")
        return
    try:
        strings = read_rdb_string(path.read_bytes())
    except (RDataError, UnicodeDecodeError) as err:
        skip(path, f"unreadable R data ({err})")
        return
    book = "".join(strings)
    chapters = split_chapters(book)
    if not chapters:
        skip(path, "no chapter headings")
        return
    for i, (title, text) in enumerate(chapters):
        units = chapter_units(text)
        if len(units) < 2:
            skip(path, f"no boundaries ({title})")
            continue
        yield RawDocument(doc_id=chapter_id(i, title), file=str(RDB), units=units)


SOURCES = [
    Source(
        name="moby-dick",
        category="novel",
        license="public domain",
        level_names=("chapter", "paragraph", "sentence"),
        packages=(
            PackageSpec(
                "deb", "r-cran-tokenizers", "0.3.0-1",
                sha256="6312f013ebfde5650235bfd7ba5c44d9e4cf9f2da9855337c9483fe778f0d8c7",
                filename="r-cran-tokenizers_0.3.0-1_amd64.deb",
            ),
        ),
        parse=parse,
        notes="Moby-Dick (Project Gutenberg #2701) as the R package tokenizers ships it; one raw document per "
        "chapter (138: etymology, two extracts parts, 135 chapters, epilogue). Fine = sentences by a stop rule.",
    )
]
