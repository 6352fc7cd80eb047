"""Heuristic and statistical segmentation baselines, behind one interface.

Each method maps a :class:`SegmentableText` and a target block size (tokens) to boundary scores
on token positions; :func:`lit_block.segmentation.planner.plan_blocks` then applies the same
granularity knobs (threshold or target size, hard min / max) to every method.

* ``fixed``: a cut every ``target`` tokens.
* ``regex``: Block-Attention's delimiters in priority order (``\\n\\n``, ``---``, ``===``, ``\\n\\t``,
  ``\\n``): pieces split by the first delimiter, longer pieces by the next, then merged greedily
  under the block size.
* ``sentence``: sentences packed greedily up to the target size.
* ``texttiling``: a simplified TextTiling (after Hearst, 1997), not nltk's ``TextTilingTokenizer``:
  word-count cosine between windows of ``window`` sentences on each side of a sentence start, depth
  scored against the highest similarity to each side (Hearst climbs to the nearest peak), no
  stemming, stop words or smoothing.
* ``semantic``: cosine distance between consecutive sentence embeddings (an encoder of your
  choice; the default is all-MiniLM-L6-v2); breakpoints where the distance is high.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING

from lit_block.segmentation.document import SegmentableText

if TYPE_CHECKING:
    import torch

DELIMITERS = ("\n\n", "---", "===", "\n\t", "\n")
WORD = re.compile(r"[A-Za-z0-9_]+")


def fixed_scores(doc: SegmentableText, target: float) -> dict[int, float]:
    step = max(1, round(target))
    return {p: 1.0 for p in range(step, doc.n_tokens, step)}


def _greedy_pack(pieces: list[tuple[int, int]], limit: float) -> list[int]:
    """Token starts of packed blocks: consecutive ``(start, end)`` pieces merged while under ``limit``."""
    cuts, block_start = [], pieces[0][0] if pieces else 0
    for start, end in pieces:
        if end - block_start > limit and start > block_start:
            cuts.append(start)
            block_start = start
    return cuts


def regex_scores(doc: SegmentableText, target: float) -> dict[int, float]:
    def split(a: int, b: int, level: int) -> list[tuple[int, int]]:
        """Character pieces of text[a:b], split by delimiter `level` and finer while over the limit."""
        ta, tb = doc.token_index(a), doc.token_index(b)
        if tb - ta <= target or level == len(DELIMITERS):
            return [(a, b)]
        delim = DELIMITERS[level]
        found = (a + m.end() for m in re.finditer(re.escape(delim), doc.text[a:b]))
        starts = sorted({a, *(s for s in found if s < b)})  # a piece starts right after each delimiter
        pieces = []
        for s, e in zip(starts, starts[1:] + [b]):
            pieces.extend(split(s, e, level + 1))
        return pieces

    chars = split(0, len(doc.text), 0)
    pieces = [(doc.token_index(a), doc.token_index(b)) for a, b in chars]
    return {p: 1.0 for p in _greedy_pack(pieces, target) if 0 < p < doc.n_tokens}


def _sentences(doc: SegmentableText) -> list[tuple[int, int]]:
    """Sentence-like units as (start token, end token)."""
    edges = [0, *doc.candidate_tokens, doc.n_tokens]
    return [(a, b) for a, b in zip(edges, edges[1:]) if b > a]


def sentence_scores(doc: SegmentableText, target: float) -> dict[int, float]:
    return {p: 1.0 for p in _greedy_pack(_sentences(doc), target) if 0 < p < doc.n_tokens}


def texttiling_scores(doc: SegmentableText, target: float, window: int = 3) -> dict[int, float]:
    """Depth scores of the lexical-similarity valley at each sentence start."""
    units = _sentences(doc)
    words = [Counter(w.lower() for w in WORD.findall(doc.text[doc.char_of(a) : doc.char_of(b)])) for a, b in units]

    def cosine(a: Counter, b: Counter) -> float:
        dot = sum(a[w] * b[w] for w in a.keys() & b.keys())
        na, nb = math.sqrt(sum(v * v for v in a.values())), math.sqrt(sum(v * v for v in b.values()))
        return dot / (na * nb) if na and nb else 0.0

    gaps = []  # similarity across the gap before unit i (i >= 1)
    for i in range(1, len(units)):
        left = sum(words[max(0, i - window) : i], Counter())
        right = sum(words[i : i + window], Counter())
        gaps.append(cosine(left, right))
    scores = {}
    for j, sim in enumerate(gaps):  # depth: how far the valley sits below the peaks on both sides
        left_peak = max(gaps[: j + 1])
        right_peak = max(gaps[j:])
        scores[units[j + 1][0]] = (left_peak - sim) + (right_peak - sim)
    return scores


def semantic_scores(doc: SegmentableText, target: float, embed: Callable[[list[str]], "torch.Tensor"]) -> dict[int, float]:
    """Cosine distance between consecutive sentence embeddings (``embed``: texts -> [n, d])."""
    units = _sentences(doc)
    if len(units) < 2:
        return {}
    spans = [(doc.char_of(a), doc.char_of(b)) for a, b in units]
    encode_spans = getattr(embed, "encode_spans", None)  # a UnitEncoder: one tokenization of the whole text
    vectors = encode_spans(doc.text, spans) if encode_spans else embed([doc.text[a:b] for a, b in spans])
    vectors = vectors / vectors.norm(dim=-1, keepdim=True).clamp(min=1e-8)
    distance = 1 - (vectors[1:] * vectors[:-1]).sum(-1)
    return {units[i + 1][0]: float(d) for i, d in enumerate(distance)}


def percentile_threshold(scores: dict[int, float], percentile: float) -> float:
    """The score at ``percentile`` (0-100) of the given scores: the semantic chunker's breakpoint rule."""
    values = sorted(scores.values())
    if not values:
        return math.inf
    return values[min(len(values) - 1, int(len(values) * percentile / 100))]
