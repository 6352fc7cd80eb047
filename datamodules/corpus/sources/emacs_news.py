"""GNU Emacs release notes: the ``etc/NEWS*`` files of Debian ``emacs-common`` (news-like writing).

License: GPL-3.0-or-later (the files say so at their end). Each file announces the user-visible changes of
one or more Emacs releases, as an outline (Emacs' outline mode): ``* Changes in Emacs 28.1`` opens a
part, ``** New command 'foo'.`` an item, ``***`` (and deeper) a sub-item; the prose under them is
blank-line-separated paragraphs. Only the main files are read, newest first (``NEWS``, ``NEWS.27`` ...
``NEWS.18``, ``NEWS.1-17``); the component files (Org, ERC, MH-E, Calc) use other layouts. One raw
document per file:

* coarse: a ``*`` part starts (a release, or one kind of change in a release);
* middle: a ``**`` item starts;
* fine: a ``***`` (or deeper) sub-item or a paragraph starts.

A heading directly above a deeper one (``* Part`` then ``** Item``, with no text between) shares its
unit, at the coarser level: a title alone is no segment.

Left out: the preamble above the first ``*`` heading (title, copyright, pointers to other files), the
``---`` / ``+++`` lines (the maintainers' marks of whether the manuals cover an item), page breaks, and
the license and ``Local variables`` trailer that closes each file. These are release notes, not the
changelog files that Debian packages install (those stay out of the corpus).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from datamodules.corpus.schema import PackageSpec, RawDocument, Source, Unit, read_source_text, skip
from datamodules.corpus.sources.text_blocks import UnitBuilder, document

ETC = Path("usr/share/emacs/28.2/etc")
HEADING = re.compile(r"(\*+) \S")  # "* Part", "** Item", "*** Sub-item"
DOC_MARK = re.compile(r"[-+]{3}[ \t]*")  # "---" / "+++": whether the manuals document the item
RULE = re.compile(r"-{20,}[ \t]*")  # the rule above the license trailer (also inside some tables)
TRAILER = "This file is part of"


def _news_key(path: Path) -> tuple[int, int]:
    """Newest first: NEWS, NEWS.27, ..., NEWS.18, NEWS.1-17."""
    if path.name == "NEWS":
        return (0, 0)
    version = path.name.split(".", 1)[1]
    return (1, -int(version.split("-")[-1]))


def units_from_news(text: str) -> list[Unit]:
    """Units of one NEWS file: ``*`` parts (0), ``**`` items (1), deeper items and paragraphs (2)."""
    lines = text.replace("\f", "").splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if HEADING.match(line)), len(lines))
    out = UnitBuilder()
    previous_blank = True
    bare_depth = 0  # depth of a heading with no text under it yet (0: none): a deeper heading right below joins it
    for i in range(start, len(lines)):
        line = lines[i]
        if RULE.fullmatch(line.rstrip("\n")) and any(TRAILER in later for later in lines[i + 1 : i + 3]):
            break  # the license trailer
        if line.startswith("Local variables:"):
            break
        if DOC_MARK.fullmatch(line.rstrip("\n")):
            continue
        if not line.strip():
            out.add(line)
            previous_blank = True
            continue
        if heading := HEADING.match(line):
            depth = len(heading[1])
            joins = 0 < bare_depth < depth
            out.heading(None if joins else 0 if depth == 1 else 1 if depth == 2 else 2, line)
            bare_depth = depth
        else:
            if previous_blank and not bare_depth:
                out.boundary(2)
            out.add(line)
            bare_depth = 0
        previous_blank = False
    units = out.finish()
    if units:
        units[-1] = Unit(units[-1].text.rstrip() + "\n", units[-1].level)  # no blank lines after the last item
    return units


def parse(roots: list[Path]) -> Iterator[RawDocument]:
    root = roots[0]
    folder = root / ETC
    paths = [p for p in folder.glob("NEWS*") if re.fullmatch(r"NEWS(\.\d+|\.1-17)?", p.name)]
    if not paths:
        skip(folder, "no NEWS files")
        return
    for path in sorted(paths, key=_news_key):
        text = read_source_text(path)
        if text is None:
            continue
        if doc := document(root, path, units_from_news(text), doc_id=path.name):
            yield doc


SOURCES = [
    Source(
        name="emacs-news",
        category="release-notes",
        license="GPL-3.0-or-later",
        level_names=("part (release / kind of change)", "item", "sub-item / paragraph"),
        packages=(
            PackageSpec(
                "deb", "emacs-common", "1:28.2+1-15+deb12u4",
                sha256="35a9075085d83962841c50289d7ae25e2075cffeadf5c2df78f9c76ad51ee9cf",
                filename="emacs-common_1%3a28.2+1-15+deb12u4_all.deb",
            ),
        ),
        parse=parse,
        notes="RawDocument = one NEWS file (Emacs 28 down to Emacs 1-17), newest first; news-like release notes. "
        "Not the Debian changelog files, which are reserved.",
    )
]
