"""The King James Bible (1611; public domain), from Debian ``bible-kjv-text`` decoded by ``bible-kjv``.

The text ships only in the compressed ``bible.data`` format of the Bible Retrieval System, so the
package's own ``bible`` binary decodes it (:func:`decode`); :func:`parse_decoded` then reads its output,
which looks like::

    Genesis 1
    <blank>
      1 In the beginning God created the heaven and the earth.
      2 And the earth was without form, ...

* coarse: a book starts (one raw document per book, its doc_id the book name);
* middle: a chapter starts (the ``Book N`` heading line, attached to its first verse);
* fine: a verse starts (one line per verse; ``-l10000`` keeps the binary from wrapping lines).
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

from datamodules.corpus.schema import PackageSpec, RawDocument, Source, Unit, clean_units, skip

BINARY = Path("usr/bin/bible")  # in the bible-kjv root
DATA = Path("usr/lib/bible.data")  # in the bible-kjv-text root
WHOLE_BIBLE = "gen1:1-rev22:21"  # one verse range spanning all 66 books
HEADING = re.compile(r"^(\S.*) (\d+)$")  # "Song of Solomon 2": a chapter heading, flush left
VERSE = re.compile(r"^ +\d+ \S")  # "  12 And ...": an indented verse line


def decode(binary_root: Path, text_root: Path, timeout_s: float = 120.0) -> str | None:
    """The whole Bible as the ``bible`` binary prints it, or None (reported with ``skip``)."""
    binary, data = binary_root / BINARY, text_root / DATA
    if not binary.is_file():
        skip(binary, "bible binary missing")
        return None
    if not data.is_file():
        skip(data, "bible data file missing")
        return None
    # -d takes a bare file name looked up along the -p directories (an absolute -d path fails);
    # -l is the line width, wide enough that no verse wraps
    cmd = [str(binary), "-p", str(data.parent), "-d", data.name, "-l10000", WHOLE_BIBLE]
    try:
        result = subprocess.run(cmd, capture_output=True, timeout=timeout_s, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:  # not executable here (other arch, no libreadline ...)
        skip(binary, f"bible binary not runnable ({type(err).__name__})")
        return None
    if result.returncode != 0 or not result.stdout.strip():
        skip(binary, f"bible binary failed (exit {result.returncode})")
        return None
    try:
        return result.stdout.decode("utf-8")
    except UnicodeDecodeError as err:
        skip(binary, f"undecodable bytes (utf-8, at byte {err.start})")
        return None


def _finish(book: str, units: list[Unit]) -> RawDocument:
    last = units[-1]
    units[-1] = Unit(last.text.rstrip("\n") + "\n", last.level)  # drop the blank line that separated books
    return RawDocument(doc_id=book, file=str(DATA), units=clean_units(units))


def parse_decoded(text: str, where: str | Path = "bible output") -> Iterator[RawDocument]:
    """Split the decoded text into one raw document per book, one unit per verse."""
    book: str | None = None
    units: list[Unit] = []
    heading = ""  # a chapter heading (and the blank line after it) waiting for its first verse
    heading_level = 2
    for line in text.splitlines(keepends=True):
        if not line.strip():  # blank: belongs to a pending heading, else ends the previous verse
            if heading:
                heading += line
            elif units:
                units[-1] = Unit(units[-1].text + line, units[-1].level)
            continue
        if match := HEADING.match(line.rstrip("\n")):
            if match.group(1) != book:  # a new book: the previous one is complete
                if book is not None and units:
                    yield _finish(book, units)
                book, units, heading_level = match.group(1), [], 0
            else:
                heading_level = 1
            heading = line
        elif VERSE.match(line) and book is not None:
            units.append(Unit(heading + line, heading_level if heading else 2))
            heading = ""
        elif units:  # an unexpected continuation line: keep it with its verse, open no boundary
            units[-1] = Unit(units[-1].text + line, units[-1].level)
        else:
            skip(where, "text before the first book heading")
            return
    if book is None or not units:
        skip(where, "no book headings in decoded text")
        return
    yield _finish(book, units)


def parse(roots: list[Path]) -> Iterator[RawDocument]:
    text_root, binary_root = roots  # same order as SOURCES[0].packages
    text = decode(binary_root, text_root)
    if text is not None:
        yield from parse_decoded(text, binary_root / BINARY)


SOURCES = [
    Source(
        name="kjv",
        category="religious",
        license="public domain",
        level_names=("book", "chapter", "verse"),
        packages=(
            PackageSpec(
                "deb",
                "bible-kjv-text",
                "4.38",
                sha256="d61b6aad4c51ba9e2800b825325fa6a09e99a0d02a9bb6dc4724fcc4995a1b7a",
                filename="bible-kjv-text_4.38_all.deb",
            ),
            PackageSpec(  # only its decoder binary is used (GPL-2+ program, amd64; needs libreadline8)
                "deb",
                "bible-kjv",
                "4.38",
                sha256="75a49c032a6efa9faa2beb4a9acb70974380122906329d0e100de36cc88ff02d",
                filename="bible-kjv_4.38_amd64.deb",
            ),
        ),
        parse=parse,
        notes="Decoded by running the package's own `bible` binary (amd64); 66 books, 1189 chapters, 31102 verses. "
        "Text kept as the binary prints it: 'Book N' chapter headings and indented numbered verse lines.",
    )
]
