"""What a source adapter produces: documents as runs of finest units, each marked with its level.

A source adapter turns a package's files into :class:`RawDocument` s. A raw document is a list of
*finest* units (a verse, a paragraph, a statement, a dialog turn ...); each unit says the coarsest
level whose boundary falls at its start:

    level 0 (coarse): chapter / file / article / entry starts here
    level 1 (middle): section / function / dialog starts here
    level 2 (fine):   only a paragraph / verse / turn starts here

Units keep their own trailing separators, so ``"".join(u.text for u in units)`` is the document's
text, and boundaries are hierarchical by construction (every coarse boundary is a middle and a
fine boundary too).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

LEVELS = ("coarse", "middle", "fine")


@dataclass(frozen=True)
class Unit:
    text: str  # the unit's text, including its trailing separator (newlines)
    level: int  # 0, 1 or 2: the coarsest level whose boundary starts at this unit


@dataclass(frozen=True)
class RawDocument:
    doc_id: str  # stable id within the source (e.g. a path relative to the package root)
    file: str  # the file it came from, relative to the package root
    units: list[Unit]

    @property
    def text(self) -> str:
        return "".join(u.text for u in self.units)


@dataclass(frozen=True)
class PackageSpec:
    """One pinned registry package: fetched once, checked by sha256 on every use."""

    manager: str  # "deb", "npm", "pypi" or "local" (files already on the machine, e.g. the stdlib)
    name: str
    version: str
    sha256: str = ""  # of the downloaded archive (.deb, .tgz, wheel); "" for local sources
    filename: str = ""  # archive file name as the registry serves it


@dataclass(frozen=True)
class Source:
    """A source adapter: where its text comes from and how to parse it."""

    name: str  # short id, e.g. "kjv"
    category: str  # e.g. "religious", "code", "legal"
    license: str  # license of the text, e.g. "public domain", "GPL-2.0+"
    level_names: tuple[str, str, str]  # what coarse / middle / fine mean here, e.g. ("book", "chapter", "verse")
    packages: tuple[PackageSpec, ...]
    parse: Callable[[list[Path]], Iterator[RawDocument]]  # extracted package roots (same order) -> documents
    notes: str = field(default="")


def clean_units(units: list[Unit]) -> list[Unit]:
    """Fold whitespace-only units into their neighbour (no text is lost) and open the first unit at level 0."""
    merged: list[Unit] = []
    pending = ""  # leading whitespace before the first real unit
    for u in units:
        if not u.text.strip():
            if merged:
                merged[-1] = Unit(merged[-1].text + u.text, merged[-1].level)
            else:
                pending += u.text
        else:
            merged.append(Unit(pending + u.text, u.level))
            pending = ""
    if merged and merged[0].level != 0:
        merged[0] = Unit(merged[0].text, 0)
    return merged


class SkippedInput(UserWarning):
    """An input an adapter could not use (empty, undecodable, no boundaries). The build counts these by reason."""


def skip(where: str | Path, reason: str) -> None:
    """Report a skipped input; the build's summary counts it. ``reason`` is a short stable phrase."""
    import warnings

    warnings.warn(SkippedInput(f"{where}: {reason}"), stacklevel=2)


def read_source_text(path: Path, encoding: str = "utf-8") -> str | None:
    """A file's text, or None (reported with :func:`skip`) when it is empty or cannot be decoded."""
    data = path.read_bytes()
    if not data.strip():
        skip(path, "empty file")
        return None
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as err:
        skip(path, f"undecodable bytes ({encoding}, at byte {err.start})")
        return None
