"""Candidate cut points: where a segmenter may place a block boundary.

A candidate is a character offset where a new unit of text may start. Gold boundaries and
predicted blocks both live on these offsets, so a segmenter scores units, never characters.

    lines       every line start
    paragraphs  every line start after a blank line
    sentences   line starts and sentence starts inside lines (the default)
"""

from __future__ import annotations

import re

SENTENCE_START = re.compile(r"(?<=[.!?])[\"')\]]?\s+(?=[\"'(\[]?[A-Z0-9])")  # end punctuation, space, capital
SPLITTERS = ("lines", "paragraphs", "sentences")


def candidate_starts(text: str, splitter: str = "sentences") -> list[int]:
    """Sorted character offsets where a unit may start; always begins with 0 (empty text: ``[]``)."""
    if splitter not in SPLITTERS:
        raise ValueError(f"unknown splitter {splitter!r}; choose one of {', '.join(SPLITTERS)}")
    if not text:
        return []
    starts = {0}
    lines = text.splitlines(keepends=True)
    offset, previous_blank = 0, False
    for line in lines:
        blank = not line.strip()
        if offset and not blank and (splitter != "paragraphs" or previous_blank):
            starts.add(offset)
        if splitter == "sentences" and not blank:
            starts.update(offset + m.end() for m in SENTENCE_START.finditer(line.rstrip("\n")))
        previous_blank = blank
        offset += len(line)
    return sorted(s for s in starts if s < len(text))
