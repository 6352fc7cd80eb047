"""From boundary scores to blocks, with the same granularity knobs for every method.

Every segmentation method (the trained segmenter and each baseline) proposes cuts as scores on
candidate cut points; :func:`plan_blocks` turns them into blocks:

1. cut where the score passes ``threshold`` -- or, given ``target_tokens``, at the best
   ``round(total / target) - 1`` candidates;
2. recursively split any block over ``max_block_tokens`` at its best-scoring candidate that leaves
   both sides at least ``min_block_tokens`` (up to ``max_depth`` levels), then at any candidate,
   then, as a last resort, at a token boundary: **no block is ever longer than the maximum**;
3. merge blocks under ``min_block_tokens``, the smallest first, into the neighbour across the weaker
   boundary (a merge that would pass the maximum is re-split in the middle): **no block is shorter
   than the minimum** unless the whole input is.

Positions are token indices into the document's tokenization; ``cuts`` are where blocks start.
Each split and each merge costs O(log n), so a 2 MB document plans in a fraction of a second.
"""

from __future__ import annotations

import heapq
import math
import re
from bisect import bisect_left, bisect_right
from dataclasses import dataclass


@dataclass(frozen=True)
class BlockLimits:
    min_block_tokens: int = 0
    max_block_tokens: int | None = None
    max_depth: int = 8

    def __post_init__(self):
        lo, hi = self.min_block_tokens, self.max_block_tokens
        if lo < 0:
            raise ValueError(f"min_block_tokens must be >= 0, got {lo}")
        if hi is not None and hi < max(1, 2 * lo):
            raise ValueError(f"max_block_tokens ({hi}) must be >= 1 and >= 2 x min_block_tokens ({lo}) to be guaranteed")


class _Candidates:
    """The scored candidate positions, indexed so that each split query costs O(log n): positions sorted for
    bisection, a range-maximum tree over their scores, and the sorted positions of each score value."""

    def __init__(self, scored: dict[int, float]):
        self.scored = scored
        self.rank = {p: r for r, p in enumerate(scored)}  # insertion order: how a plain scan breaks ties
        self.positions = sorted(scored)
        self.by_score: dict[float, list[int]] = {}
        for p in self.positions:
            self.by_score.setdefault(scored[p], []).append(p)  # each list sorted, as positions are
        n = len(self.positions)
        self.tree = [-math.inf] * n + [scored[p] for p in self.positions]  # leaves n..2n-1, node i = max of 2i, 2i+1
        for i in range(n - 1, 0, -1):
            self.tree[i] = max(self.tree[2 * i], self.tree[2 * i + 1])

    def max_score(self, first: int, last: int) -> float | None:
        """The best score of the candidates at ``first <= p <= last`` (None if there are none)."""
        n = len(self.positions)
        i, j = bisect_left(self.positions, first) + n, bisect_right(self.positions, last) + n
        if i >= j:
            return None
        best = -math.inf
        while i < j:  # climb from the leaves, taking the nodes that cover [i, j) exactly
            if i & 1:
                best, i = max(best, self.tree[i]), i + 1
            if j & 1:
                j -= 1
                best = max(best, self.tree[j])
            i, j = i // 2, j // 2
        return best

    def nearest(self, positions: list[int], first: int, last: int, mid: float) -> int | None:
        """Of the sorted ``positions`` at ``first <= p <= last``, the one nearest ``mid`` (at equal distance:
        the one given first in the scores); None if there are none."""
        i, j = bisect_left(positions, first), bisect_right(positions, last)
        k = bisect_left(positions, mid, i, j)  # the first at or after the middle; the one before it is the other side
        near = positions[max(i, k - 1) : min(j, k + 1)]
        return min(near, key=lambda p: (abs(p - mid), self.rank[p])) if near else None


def _split_point(a: int, b: int, candidates: _Candidates, limits: BlockLimits, depth: int) -> int:
    """Where to split the block [a, b): best candidate keeping both sides >= min, else the middle."""
    step = max(limits.min_block_tokens, 1)  # strictly inside the block, and both sides >= min
    first, last, mid = a + step, b - step, (a + b) / 2
    if depth < limits.max_depth:  # the best-scoring balanced candidate, the nearest the middle among equals
        best = candidates.max_score(first, last)
        if best is not None:
            return candidates.nearest(candidates.by_score[best], first, last, mid)
    # past the recursion depth: the balanced candidate nearest the middle
    p = candidates.nearest(candidates.positions, first, last, mid)
    return (a + b) // 2 if p is None else p  # no usable candidate: a token boundary (the hard maximum wins)


def _enforce_max(a: int, b: int, candidates: _Candidates, limits: BlockLimits) -> set[int]:
    """The cuts that split [a, b) until no block is over the maximum."""
    hi, out = limits.max_block_tokens, set()
    todo = [(a, b, 0)]  # blocks still to check, with their recursion depth (a stack: no recursion limit)
    while todo:
        a, b, depth = todo.pop()
        if hi is None or b - a <= hi:
            continue
        p = _split_point(a, b, candidates, limits, depth)
        out.add(p)
        todo += [(a, p, depth + 1), (p, b, depth + 1)]
    return out


def _enforce_min(cuts: list[int], total: int, candidates: _Candidates, limits: BlockLimits) -> list[int]:
    """Merge the smallest block under the minimum across its weaker boundary, again and again: blocks are a
    linked list of cuts, and the small ones wait in a heap by (size, start), so each merge costs O(log n)."""
    lo, hi = limits.min_block_tokens, limits.max_block_tokens
    end = dict(zip([0, *cuts], [*cuts, total]))  # block start -> block end
    start = {e: s for s, e in end.items()}  # block end -> block start
    small = [(e - s, s) for s, e in end.items() if e - s < lo]
    heapq.heapify(small)  # the smallest first; at equal size, the leftmost
    while small and len(end) > 1:  # one block left: the whole input is under the minimum
        size, s = heapq.heappop(small)
        if s not in end or end[s] - s != size:
            continue  # an outdated entry: this block has been merged since
        # drop the weaker of its two boundaries (a missing one is never chosen; at equal scores, the left one)
        options = [c for c in (s, end[s]) if 0 < c < total]
        drop = min(options, key=lambda c: candidates.scored.get(c, 0.0))
        a, b = start.pop(drop), end.pop(drop)  # the blocks on both sides of the dropped cut become [a, b)
        new_cuts = []
        if hi is not None and b - a > hi:  # the merged block may pass the maximum: split it again, in the middle
            new_cuts = sorted(_enforce_max(a, b, candidates, BlockLimits(lo, hi, max_depth=0)))
        edges = [a, *new_cuts, b]
        for x, y in zip(edges, edges[1:]):
            end[x], start[y] = y, x
            if y - x < lo:
                heapq.heappush(small, (y - x, x))
    return sorted(end)[1:]  # block starts, 0 left out


_LETTER_OR_DIGIT = re.compile(r"[^\W_]")


def is_separator(unit_text: str) -> bool:
    """A unit with text but no letter or digit: a separator line (%, ---, ***, ===)."""
    return bool(unit_text.strip()) and not _LETTER_OR_DIGIT.search(unit_text)


def close_at_separators(unit_texts: list[str], probabilities: list[float]) -> list[float | None]:
    """Unit boundary probabilities with each run of separator units' largest moved to the next unit (the maximum of
    both), and theirs None: no longer candidates, so a separator closes the block before it instead of opening the
    next (a 0 could still be picked, on ties, when a target size asks for more cuts than scores above 0).

    The corpus's convention, counted on its 14 categories other than quotes and religious texts (where a gold
    boundary touches a separator unit, the block starts after it / before it): 139 / 17 coarse, 524 / 47 middle,
    1840 / 948 fine. A segmenter trained on them still cut before the `%` lines of fortune files, which no
    training category has (docs/segmenter_generalisation.md)."""
    out = list(probabilities)
    carried = None  # the largest probability of the separator run being walked; None outside one
    for i, text in enumerate(unit_texts):
        if i and is_separator(text):  # unit 0 starts the document: never a cut
            carried, out[i] = max(carried or 0.0, out[i]), None
        elif carried is not None:
            out[i], carried = max(out[i], carried), None
    return out


LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"  # what str.splitlines breaks at


def favour_line_starts(unit_texts: list[str], probabilities: list[float | None], weight: float) -> list[float | None]:
    """Unit boundary probabilities with those of units inside a line (the previous unit ends without a line break)
    multiplied by ``weight``: a prior for levels whose boundaries sit at line starts (None stays None)."""
    return [p if p is None or i == 0 or (unit_texts[i - 1] and unit_texts[i - 1][-1] in LINE_BREAKS) else p * weight
            for i, p in enumerate(probabilities)]


_ENDS_MID_SENTENCE = re.compile(r"[a-z,][ \t]*\r?\n\Z")  # a line ending in a lowercase letter or a comma, then one break
_OPENS_LOWERCASE = re.compile(r"[ \t]*[a-z]")


def starts_mid_sentence(previous: str, text: str) -> bool:
    """Whether a unit starts a line that carries on the previous line's sentence: the previous line ends in a
    lowercase letter or a comma (no blank line between) and this one opens with a lowercase letter, as hard-wrapped
    prose does. A block starting there would cut a sentence in two."""
    return bool(_ENDS_MID_SENTENCE.search(previous)) and bool(_OPENS_LOWERCASE.match(text))


def wrapped_line_share(unit_texts: list[str]) -> float:
    """The share of line-starting units (the first unit and separator lines aside) that carry on the previous
    line's sentence (``starts_mid_sentence``): about 0.2-0.8 in hard-wrapped prose, near 0 where every line holds
    whole sentences (verses, dialogue turns, one paragraph per line). 0 for a text without line starts."""
    lines = wrapped = 0
    for previous, text in zip(unit_texts, unit_texts[1:]):
        if previous and previous[-1] in LINE_BREAKS and not is_separator(text):
            lines += 1
            wrapped += starts_mid_sentence(previous, text)
    return wrapped / lines if lines else 0.0


HEADING_WORDS = 6  # a heading-like line has at most this many words
_END_PUNCTUATION = ".!?;:,\"')]}>"


def heading_like(unit_text: str) -> bool:
    """One line of at most ``HEADING_WORDS`` words, with a letter, without a full stop or end punctuation:
    ``Genesis 2``, ``CHAPTER IV`` (also a short unpunctuated dialogue turn or list item, which look the same)."""
    line = unit_text.strip()
    return (bool(line) and "\n" not in line and len(line.split()) <= HEADING_WORDS and line[-1] not in _END_PUNCTUATION
            and "." not in line and any(ch.isalpha() for ch in line))


def follows_heading(unit_texts: list[str], i: int) -> bool:
    """Whether unit ``i`` starts a line right after a heading-like line (``heading_like``)."""
    previous = unit_texts[i - 1] if i else ""
    return bool(previous) and previous[-1] in LINE_BREAKS and heading_like(previous)


def demote_after_headings(unit_texts: list[str], probabilities: list[float | None],
                          weight: float) -> list[float | None]:
    """Unit boundary probabilities with those of units right after a heading-like line (``follows_heading``)
    multiplied by ``weight``: a prior that a heading opens the block of the text under it (None stays None)."""
    return [p if p is None or not follows_heading(unit_texts, i) else p * weight for i, p in enumerate(probabilities)]


def avoid_mid_sentence(unit_texts: list[str], probabilities: list[float | None], weight: float) -> list[float | None]:
    """Unit boundary probabilities with those of units that start mid-sentence (``starts_mid_sentence``) multiplied
    by ``weight``: a prior that a block holds whole sentences (None stays None)."""
    return [p if p is None or i == 0 or not starts_mid_sentence(unit_texts[i - 1], unit_texts[i]) else p * weight
            for i, p in enumerate(probabilities)]


def plan_blocks(
    total_tokens: int,
    scores: dict[int, float],
    limits: BlockLimits = BlockLimits(),
    threshold: float | None = 0.5,
    target_tokens: float | None = None,
) -> list[int]:
    """Block start positions (token indices, 0 excluded) for a document of ``total_tokens`` tokens.

    ``scores`` maps candidate token positions (0 < p < total) to boundary scores (higher: cut); a NaN score
    counts as the lowest. About O(n log n) in the number of candidates and blocks.
    """
    # NaN compares as neither better nor worse than anything: as -inf it is simply the weakest
    scored = {p: -math.inf if s != s else s for p, s in scores.items() if 0 < p < total_tokens}
    if target_tokens is not None:
        if target_tokens <= 0:
            raise ValueError(f"target_tokens must be > 0, got {target_tokens}")
        k = max(0, round(total_tokens / target_tokens) - 1)
        cuts = set(sorted(scored, key=lambda p: -scored[p])[:k])
    else:
        cuts = {p for p, s in scored.items() if threshold is not None and s >= threshold}
    candidates = _Candidates(scored)
    edges = [0, *sorted(cuts), total_tokens]
    for a, b in zip(edges, edges[1:]):
        cuts |= _enforce_max(a, b, candidates, limits)
    return _enforce_min(sorted(cuts), total_tokens, candidates, limits)
