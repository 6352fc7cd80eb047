"""From boundary scores to blocks, with the same granularity knobs for every method.

Every segmentation method (the trained segmenter and each baseline) proposes cuts as scores on
candidate cut points; :func:`plan_blocks` turns them into blocks:

1. cut where the score passes ``threshold`` -- or, given ``target_tokens``, at the best
   ``round(total / target) - 1`` candidates;
2. recursively split any block over ``max_block_tokens`` at its best-scoring candidate that leaves
   both sides at least ``min_block_tokens`` (up to ``max_depth`` levels), then at any candidate,
   then, as a last resort, at a token boundary: **no block is ever longer than the maximum**;
3. merge blocks under ``min_block_tokens`` into the neighbour across the weaker boundary (a merge
   that would pass the maximum is re-split in the middle): **no block is shorter than the minimum**
   unless the whole input is.

Positions are token indices into the document's tokenization; ``cuts`` are where blocks start.
"""

from __future__ import annotations

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


def _split_point(a: int, b: int, scored: dict[int, float], limits: BlockLimits, depth: int) -> int:
    """Where to split the block [a, b): best candidate keeping both sides >= min, else the middle."""
    lo = limits.min_block_tokens
    inside = [(s, p) for p, s in scored.items() if a < p < b]
    balanced = [(s, p) for s, p in inside if p - a >= lo and b - p >= lo]
    if balanced and depth < limits.max_depth:
        return max(balanced, key=lambda sp: (sp[0], -abs(sp[1] - (a + b) / 2)))[1]
    if balanced:  # past the recursion depth: the candidate nearest the middle
        return min(balanced, key=lambda sp: abs(sp[1] - (a + b) / 2))[1]
    return (a + b) // 2  # no usable candidate: a token boundary (the hard maximum wins)


def _enforce_max(a: int, b: int, scored: dict[int, float], limits: BlockLimits, depth: int, out: set[int]) -> None:
    hi = limits.max_block_tokens
    if hi is None or b - a <= hi:
        return
    p = _split_point(a, b, scored, limits, depth)
    out.add(p)
    _enforce_max(a, p, scored, limits, depth + 1, out)
    _enforce_max(p, b, scored, limits, depth + 1, out)


def _enforce_min(cuts: list[int], total: int, scored: dict[int, float], limits: BlockLimits) -> list[int]:
    lo, hi = limits.min_block_tokens, limits.max_block_tokens
    cuts = sorted(cuts)
    while True:
        edges = [0, *cuts, total]
        sizes = [b - a for a, b in zip(edges, edges[1:])]
        small = [i for i, n in enumerate(sizes) if n < lo]
        if not small or not cuts:
            return cuts
        i = min(small, key=lambda j: sizes[j])  # the smallest block first
        # drop the weaker of its two boundaries (a missing one is never chosen)
        left = cuts[i - 1] if i > 0 else None
        right = cuts[i] if i < len(cuts) else None
        options = [c for c in (left, right) if c is not None]
        drop = min(options, key=lambda c: scored.get(c, 0.0))
        cuts.remove(drop)
        if hi is not None:  # the merged block may pass the maximum: split it again, in the middle
            edges = [0, *cuts, total]
            a = max(e for e in edges if e < drop)
            b = min(e for e in edges if e > drop)
            if b - a > hi:
                extra: set[int] = set()
                _enforce_max(a, b, scored, BlockLimits(lo, hi, max_depth=0), 0, extra)
                cuts = sorted(set(cuts) | extra)


def plan_blocks(
    total_tokens: int,
    scores: dict[int, float],
    limits: BlockLimits = BlockLimits(),
    threshold: float | None = 0.5,
    target_tokens: float | None = None,
) -> list[int]:
    """Block start positions (token indices, 0 excluded) for a document of ``total_tokens`` tokens.

    ``scores`` maps candidate token positions (0 < p < total) to boundary scores (higher: cut).
    """
    scored = {p: s for p, s in scores.items() if 0 < p < total_tokens}
    if target_tokens is not None:
        if target_tokens <= 0:
            raise ValueError(f"target_tokens must be > 0, got {target_tokens}")
        k = max(0, round(total_tokens / target_tokens) - 1)
        cuts = set(sorted(scored, key=lambda p: -scored[p])[:k])
    else:
        cuts = {p for p, s in scored.items() if threshold is not None and s >= threshold}
    edges = [0, *sorted(cuts), total_tokens]
    for a, b in zip(edges, edges[1:]):
        _enforce_max(a, b, scored, limits, 0, cuts)
    return _enforce_min(sorted(cuts), total_tokens, scored, limits)
