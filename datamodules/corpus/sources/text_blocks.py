"""Helpers shared by the markup adapters: a builder of leveled units, paragraph splitting, the final check.

A parser walks its source in order, calls :meth:`UnitBuilder.boundary` where a coarse / middle /
fine unit starts, :meth:`UnitBuilder.heading` for a heading line (which keeps its first paragraph
in the same unit) and :meth:`UnitBuilder.add` for text. No text is dropped between the calls, so
the units concatenate to exactly the rendered document.
"""

from __future__ import annotations

import re
from pathlib import Path

from datamodules.corpus.schema import RawDocument, Unit, clean_units, skip

_BLANK_RUN = re.compile(r"\n[ \t]*\n(?:[ \t]*\n)*")  # a blank line and any blank lines after it


class UnitBuilder:
    """Collects rendered text into units; the level of a unit is the coarsest boundary asked for at its start."""

    def __init__(self) -> None:
        self.units: list[Unit] = []
        self._parts: list[str] = []  # text of the unit being built
        self._level = 0
        self._pending: int | None = 0  # boundary waiting for the next text (the document start is coarse)
        self._hold = False  # a heading was just written: its first paragraph stays in its unit

    def boundary(self, level: int) -> None:
        if self._hold and level == 2:  # the paragraph right under a heading belongs to the heading's unit
            self._hold = False
            return
        self._hold = False
        self._pending = level if self._pending is None else min(level, self._pending)

    def heading(self, level: int | None, text: str) -> None:
        """A heading line opening a unit of ``level`` (None: one more line of the heading just written)."""
        if level is not None:
            self.boundary(level)
        self.add(text)
        self._hold = True

    def add(self, text: str) -> None:
        if not text:
            return
        if self._pending is not None and text.strip():  # whitespace never opens a unit
            self._flush()
            self._level, self._pending = self._pending, None
        elif text.strip():
            self._hold = False  # body text came without a paragraph break: the next break is a real one
        self._parts.append(text)

    def separate(self) -> None:
        """End the current text with a blank line (for rendered formats that drop the source's blank lines)."""
        text = "".join(self._parts[-2:])
        if self._parts and not text.endswith("\n\n"):
            self._parts.append("\n" if text.endswith("\n") else "\n\n")

    def _flush(self) -> None:
        if self._parts:
            self.units.append(Unit("".join(self._parts), self._level))
            self._parts = []

    def finish(self) -> list[Unit]:
        self._flush()
        return clean_units(self.units)


def paragraphs(text: str) -> list[str]:
    """Blank-line-separated blocks, each keeping the blank lines after it (they concatenate back to ``text``)."""
    pieces: list[str] = []
    start = 0
    for match in _BLANK_RUN.finditer(text):
        pieces.append(text[start : match.end()])
        start = match.end()
    if start < len(text):
        pieces.append(text[start:])
    return pieces


def document(root: Path, path: Path, units: list[Unit], doc_id: str | None = None) -> RawDocument | None:
    """A raw document of ``units``, or None (reported) when it has fewer than two units."""
    if len(units) < 2:
        skip(path, "no boundaries")
        return None
    rel = str(path.relative_to(root))
    return RawDocument(doc_id=doc_id or rel, file=rel, units=units)
