"""Fortune cookie files from Debian ``fortunes-min`` and ``fortunes`` (BSD fortune-mod, 1.99.1).

License: the Debian copyright file puts the package under the BSD license of fortune (Regents of the
University of California, advertising clause deleted: BSD-3-Clause); the files are collected quotations,
jokes and verse. Only the plain-text files in ``usr/share/games/fortunes`` are read: the ``.dat``
indexes, the ``.u8`` symlinks and any offensive ``off/`` folder are left out.

A fortune file is a list of entries separated by lines holding only ``%``. One raw document per file:

* coarse: a fortune (entry) starts; the ``%`` line stays at the end of the entry before it;
* middle: a paragraph or stanza starts inside a fortune (a line after a blank line);
* fine: a line starts (fortunes are short, and their line breaks are the author's: verse, dialogue,
  ``-- attribution`` lines).

Terminal overstrikes (``_\\bx`` underline, ``x\\bx`` bold) are resolved to the printed character.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from datamodules.corpus.schema import PackageSpec, RawDocument, Source, Unit, clean_units, read_source_text, skip

FORTUNES = Path("usr/share/games/fortunes")
OVERSTRIKE = re.compile(r"[^\x08\n]\x08")  # a character struck over by the next one
INDEX_SUFFIXES = {".dat", ".u8"}  # strfile indexes and the UTF-8 alias symlinks


def strip_overstrikes(text: str) -> str:
    """Keep what a terminal shows: "____\\b\\b\\b\\bword" -> "word" (repeat: backspaces may be stacked)."""
    count = 1
    while count:
        text, count = OVERSTRIKE.subn("", text)
    return text


def split_entries(text: str) -> list[list[str]]:
    """The file's entries as lists of lines (with newlines), blank lines around them and empty entries dropped."""
    entries: list[list[str]] = [[]]
    for line in text.splitlines(keepends=True):
        if line.rstrip() == "%":
            entries.append([])
        else:
            entries[-1].append(line)
    trimmed = []
    for lines in entries:
        filled = [i for i, line in enumerate(lines) if line.strip()]
        if filled:
            trimmed.append(lines[filled[0] : filled[-1] + 1])
    return trimmed


def fortune_units(text: str) -> list[Unit]:
    """One unit per line: 0 at a fortune's first line, 1 after a blank line, else 2."""
    units: list[Unit] = []
    for lines in split_entries(strip_overstrikes(text)):
        after_blank = False
        for i, line in enumerate(lines):
            if not line.strip():  # a blank line inside a fortune: clean_units folds it into the line above
                after_blank = True
                units.append(Unit(line, 2))
                continue
            units.append(Unit(line, 0 if i == 0 else 1 if after_blank else 2))
            after_blank = False
        last = units[-1]  # a non-blank line: the entry is trimmed
        units[-1] = Unit(last.text.rstrip("\n") + "\n%\n", last.level)  # the separator closes the entry
    if units:  # no separator after the file's last fortune
        units[-1] = Unit(units[-1].text[: -len("%\n")], units[-1].level)
    return clean_units(units)


def fortune_files(root: Path) -> Iterator[Path]:
    folder = root / FORTUNES
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if path.is_symlink() or not path.is_file() or path.suffix in INDEX_SUFFIXES or rel.parts[0] == "off":
            continue
        yield path


def parse(roots: list[Path]) -> Iterator[RawDocument]:
    for root in roots:  # fortunes-min (fortunes, literature, riddles), then fortunes (the rest)
        for path in fortune_files(root):
            text = read_source_text(path)
            if text is None:
                continue
            units = fortune_units(text)
            if sum(u.level == 0 for u in units) < 2:
                skip(path, "no %-separated entries")
                continue
            rel = path.relative_to(root)
            yield RawDocument(doc_id=str(path.relative_to(root / FORTUNES)), file=str(rel), units=units)


def deb(name: str) -> PackageSpec:
    sha = {
        "fortunes-min": "9eed5b45064e41133dae0967cf3a17588ad77c014fcc7bf1527fa3ea48e44d07",
        "fortunes": "41d0551dc0ff52f875a2ecef7c39da2f672ab468c37e170119f7e0245a9d63c5",
    }[name]
    return PackageSpec("deb", name, "1:1.99.1-7.3", sha256=sha, filename=f"{name}_1%3a1.99.1-7.3_all.deb")


SOURCES = [
    Source(
        name="fortunes",
        category="quotes",
        license="BSD-3-Clause",
        level_names=("fortune", "paragraph / stanza", "line"),
        packages=(deb("fortunes-min"), deb("fortunes")),
        parse=parse,
        notes="RawDocument = fortune file. The files keep no grouping above single fortunes (most are "
        "sorted alphabetically), so coarse = fortune. Files with fewer than 2 fortunes are skipped.",
    )
]
