"""Candidate cut points: where a segmenter may place a block boundary.

A candidate is a character offset where a new unit of text may start. Gold boundaries and
predicted blocks both live on these offsets, so a segmenter scores units, never characters.

    lines       every line start
    paragraphs  every line start after a blank line
    sentences   line starts and sentence starts inside lines (the default)
    regex       right after each match of a marker pattern (default: Block-Attention's delimiters
                ``\n\n``, ``---``, ``===``, ``\n\t``, ``\n``; the paper inserts ``<cut i>`` markers there)
    code        line starts that open a statement (not inside brackets, not after a backslash)
"""

from __future__ import annotations

import re

SENTENCE_START = re.compile(r"(?<=[.!?])[\"')\]]?\s+(?=[\"'(\[]?[A-Z0-9])")  # end punctuation, space, capital
SPLITTERS = ("lines", "paragraphs", "sentences", "regex", "code")
DEFAULT_MARKERS = r"\n\n|---|===|\n\t|\n"


def _code_statement_starts(text: str) -> set[int]:
    """Line starts outside open brackets and not continued by a trailing backslash."""
    starts, depth, offset, continued = set(), 0, 0, False
    for line in text.splitlines(keepends=True):
        if offset and depth == 0 and not continued and line.strip():
            starts.add(offset)
        code = line.split("#", 1)[0]  # a rough comment strip: brackets in comments do not count
        depth = max(0, depth + sum(code.count(c) for c in "([{") - sum(code.count(c) for c in ")]}"))
        continued = code.rstrip().endswith("\\")
        offset += len(line)
    return starts


def candidate_starts(text: str, splitter: str = "sentences", markers: str = DEFAULT_MARKERS) -> list[int]:
    """Sorted character offsets where a unit may start; always begins with 0 (empty text: ``[]``)."""
    if splitter not in SPLITTERS:
        raise ValueError(f"unknown splitter {splitter!r}; choose one of {', '.join(SPLITTERS)}")
    if not text:
        return []
    starts = {0}
    if splitter == "regex":
        starts.update(m.end() for m in re.finditer(markers, text) if m.end() > m.start())
        return sorted(s for s in starts if s < len(text))
    if splitter == "code":
        return sorted(starts | _code_statement_starts(text))
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
