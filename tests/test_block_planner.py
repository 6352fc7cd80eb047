"""The hard block-size guarantees, as properties on random inputs."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lit_block.segmentation.planner import BlockLimits, plan_blocks


@st.composite
def planning_inputs(draw):
    total = draw(st.integers(1, 3000))
    positions = draw(st.lists(st.integers(1, max(1, total - 1)), max_size=80, unique=True))
    scores = {p: draw(st.floats(0, 1)) for p in positions if 0 < p < total}
    lo = draw(st.integers(0, 200))
    hi = draw(st.one_of(st.none(), st.integers(max(1, 2 * lo), 2 * lo + 800)))
    return total, scores, BlockLimits(lo, hi, max_depth=draw(st.integers(0, 6)))


@settings(max_examples=300, deadline=None)
@given(inputs=planning_inputs(), threshold=st.floats(0, 1), use_target=st.booleans(), target=st.integers(1, 900))
def test_blocks_respect_hard_min_and_max(inputs, threshold, use_target, target):
    total, scores, limits = inputs
    cuts = plan_blocks(total, scores, limits, threshold=threshold, target_tokens=target if use_target else None)
    assert cuts == sorted(set(cuts)) and all(0 < c < total for c in cuts)
    sizes = [b - a for a, b in zip([0, *cuts], [*cuts, total])]
    if limits.max_block_tokens is not None:
        assert max(sizes) <= limits.max_block_tokens
    if total >= limits.min_block_tokens:
        assert min(sizes) >= limits.min_block_tokens
    else:
        assert cuts == []  # short input is never split


def test_cuts_follow_the_scores_when_no_limit_binds():
    assert plan_blocks(100, {20: 0.9, 50: 0.2, 70: 0.6}, threshold=0.5) == [20, 70]
    assert plan_blocks(100, {20: 0.9, 50: 0.2, 70: 0.6}, target_tokens=50) == [20]


def test_max_is_met_at_the_best_candidate_first():
    cuts = plan_blocks(100, {30: 0.1, 60: 0.4}, BlockLimits(10, 70), threshold=1.1)
    assert cuts == [60]


def test_limits_that_cannot_both_hold_are_refused():
    with pytest.raises(ValueError, match="must be >= 1 and >= 2 x min_block_tokens"):
        BlockLimits(min_block_tokens=100, max_block_tokens=150)


# ---------------------------------------------------------------- the plan before it was made near-linear
# A verbatim copy of the quadratic planner (it recomputed every block on each merge and scanned every
# candidate on each split), kept as the reference: the fast planner must choose exactly the same cuts.


def _old_split_point(a, b, scored, limits, depth):
    lo = limits.min_block_tokens
    inside = [(s, p) for p, s in scored.items() if a < p < b]
    balanced = [(s, p) for s, p in inside if p - a >= lo and b - p >= lo]
    if balanced and depth < limits.max_depth:
        return max(balanced, key=lambda sp: (sp[0], -abs(sp[1] - (a + b) / 2)))[1]
    if balanced:
        return min(balanced, key=lambda sp: abs(sp[1] - (a + b) / 2))[1]
    return (a + b) // 2


def _old_enforce_max(a, b, scored, limits, depth, out):
    hi = limits.max_block_tokens
    if hi is None or b - a <= hi:
        return
    p = _old_split_point(a, b, scored, limits, depth)
    out.add(p)
    _old_enforce_max(a, p, scored, limits, depth + 1, out)
    _old_enforce_max(p, b, scored, limits, depth + 1, out)


def _old_enforce_min(cuts, total, scored, limits):
    lo, hi = limits.min_block_tokens, limits.max_block_tokens
    cuts = sorted(cuts)
    while True:
        edges = [0, *cuts, total]
        sizes = [b - a for a, b in zip(edges, edges[1:])]
        small = [i for i, n in enumerate(sizes) if n < lo]
        if not small or not cuts:
            return cuts
        i = min(small, key=lambda j: sizes[j])
        left = cuts[i - 1] if i > 0 else None
        right = cuts[i] if i < len(cuts) else None
        options = [c for c in (left, right) if c is not None]
        drop = min(options, key=lambda c: scored.get(c, 0.0))
        cuts.remove(drop)
        if hi is not None:
            edges = [0, *cuts, total]
            a = max(e for e in edges if e < drop)
            b = min(e for e in edges if e > drop)
            if b - a > hi:
                extra = set()
                _old_enforce_max(a, b, scored, BlockLimits(lo, hi, max_depth=0), 0, extra)
                cuts = sorted(set(cuts) | extra)


def old_plan_blocks(total_tokens, scores, limits=BlockLimits(), threshold=0.5, target_tokens=None):
    scored = {p: s for p, s in scores.items() if 0 < p < total_tokens}
    if target_tokens is not None:
        k = max(0, round(total_tokens / target_tokens) - 1)
        cuts = set(sorted(scored, key=lambda p: -scored[p])[:k])
    else:
        cuts = {p for p, s in scored.items() if threshold is not None and s >= threshold}
    edges = [0, *sorted(cuts), total_tokens]
    for a, b in zip(edges, edges[1:]):
        _old_enforce_max(a, b, scored, limits, 0, cuts)
    return _old_enforce_min(sorted(cuts), total_tokens, scored, limits)


@st.composite
def tie_heavy_inputs(draw):
    """Inputs where the planner's tie-breaks decide: few score values, candidates in any insertion order
    (often symmetric about a block's middle), sizes near the limits."""
    total = draw(st.integers(1, 2500))
    lo = draw(st.integers(0, 120))
    least = max(1, 2 * lo)  # the smallest maximum the limits allow
    hi = draw(st.one_of(st.none(), st.integers(least, least + draw(st.sampled_from([0, 3, 40, 400])))))
    positions = draw(st.lists(st.integers(1, max(1, total - 1)), max_size=150, unique=True))
    mirrored = [total - p for p in positions if draw(st.booleans())]  # equal distances from the middle
    order = list(dict.fromkeys(positions + mirrored))
    values = draw(st.sampled_from([[0.5], [0.0, 1.0], [0.0, 0.25, 0.5, 0.75, 1.0], None]))
    score = st.sampled_from(values) if values else st.floats(0, 1)
    scores = {p: draw(score) for p in order if 0 < p < total}
    return total, scores, BlockLimits(lo, hi, max_depth=draw(st.integers(0, 10)))


@settings(max_examples=600, deadline=None)
@given(inputs=tie_heavy_inputs(), threshold=st.sampled_from([0.0, 0.3, 0.5, 1.0, 1.1, None]),
       target=st.one_of(st.none(), st.integers(1, 700)))
def test_plan_equals_the_quadratic_reference(inputs, threshold, target):
    total, scores, limits = inputs
    new = plan_blocks(total, scores, limits, threshold=threshold, target_tokens=target)
    assert new == old_plan_blocks(total, scores, limits, threshold=threshold, target_tokens=target)


@settings(max_examples=300, deadline=None)
@given(inputs=planning_inputs(), threshold=st.floats(0, 1), use_target=st.booleans(), target=st.integers(1, 900))
def test_plan_equals_the_quadratic_reference_on_continuous_scores(inputs, threshold, use_target, target):
    total, scores, limits = inputs
    target = target if use_target else None
    new = plan_blocks(total, scores, limits, threshold=threshold, target_tokens=target)
    assert new == old_plan_blocks(total, scores, limits, threshold=threshold, target_tokens=target)


def test_merging_takes_the_smallest_block_across_its_weaker_boundary():
    # blocks 0-50 (50), 50-60 (10), 60-100 (40): the 10-token block goes first, into its right neighbour,
    # whose boundary (60 -> 0.6) is weaker than the left one (50 -> 0.9)
    assert plan_blocks(100, {50: 0.9, 60: 0.6}, BlockLimits(30), threshold=0.5) == [50]
    assert plan_blocks(100, {50: 0.6, 60: 0.9}, BlockLimits(30), threshold=0.5) == [60]
    # equal scores: the left boundary is dropped
    assert plan_blocks(100, {50: 0.7, 60: 0.7}, BlockLimits(30), threshold=0.5) == [60]


def test_a_nan_score_is_the_weakest_not_an_error():
    assert plan_blocks(100, {50: float("nan"), 60: 0.9}, BlockLimits(30), threshold=0.0) == [60]
    assert plan_blocks(100, {30: float("nan"), 60: 0.2}, target_tokens=50) == [60]


def test_a_two_megabyte_plan_is_near_linear():
    """500k tokens with a candidate about every 20 tokens (what `segment` gives for ~2 MB of text): cutting
    at every candidate leaves ~25k blocks under the minimum to merge (the quadratic planner: 50 s; this
    one: a tenth of a second), and one 500k-token block must be split down to the maximum."""
    import random
    import time

    rng = random.Random(0)
    total, positions, p = 500_000, [], 0
    while p < total - 30:
        p += rng.randint(5, 35)
        positions.append(p)
    scores = {p: rng.random() for p in positions}
    limits = BlockLimits(64, 512)
    start = time.perf_counter()
    for kwargs in ({"threshold": 0.0}, {"threshold": 0.7}, {"target_tokens": 256}, {"threshold": 1.1}):
        cuts = plan_blocks(total, scores, limits, **kwargs)
        sizes = [b - a for a, b in zip([0, *cuts], [*cuts, total])]
        assert min(sizes) >= 64 and max(sizes) <= 512
    assert time.perf_counter() - start < 5.0


UNIT_TEXTS = st.sampled_from(["A fortune.\n", "%\n", "---\n", "***", "2 items\n", "  \n", "___\n", "Wörter.\n"])


@given(st.lists(st.tuples(UNIT_TEXTS, st.floats(0, 1)), min_size=1, max_size=40))
def test_a_separator_run_hands_its_largest_probability_to_the_next_unit(units):
    from lit_block.segmentation.planner import close_at_separators, is_separator

    texts, probs = [t for t, _ in units], [p for _, p in units]
    out = close_at_separators(texts, probs)
    assert len(out) == len(probs) and out[0] == probs[0]  # unit 0 starts the document: left alone
    i = 1
    while i < len(texts):
        if not is_separator(texts[i]):
            assert out[i] == probs[i]  # no separator right before it: untouched
            i += 1
            continue
        j = i
        while j < len(texts) and is_separator(texts[j]):
            assert out[j] is None  # not a candidate: a block never starts at a separator line
            j += 1
        if j < len(texts):  # the first unit after the run starts the block with the run's best score
            assert out[j] == max(probs[i : j + 1])
        i = j + 1


def test_what_counts_as_a_separator():
    from lit_block.segmentation.planner import is_separator

    assert all(map(is_separator, ["%\n", "---", " *** \n", "=====", "___"]))
    assert not any(map(is_separator, ["", "  \n", "1.", "Ok", "é", "-- Mark Twain"]))


@settings(max_examples=100, deadline=None)
@given(texts=st.lists(st.sampled_from(["A line.\n", "In line. ", "x", "end\r\n", "sep\u2028", "", "  indented "]),
                      min_size=1, max_size=12),
       weight=st.floats(0, 1))
def test_favouring_line_starts_scales_only_units_inside_a_line(texts, weight):
    from lit_block.segmentation.planner import favour_line_starts

    probs = [None if i % 5 == 4 else (i % 3 + 1) / 4 for i in range(len(texts))]
    out = favour_line_starts(texts, probs, weight)
    for i, (p, q) in enumerate(zip(probs, out)):
        last_line = texts[i - 1].splitlines(keepends=True)[-1:] if i else []
        at_line_start = i == 0 or (last_line != [] and last_line[0] != last_line[0].splitlines()[0])  # ends a line
        if p is None:
            assert q is None
        elif at_line_start:
            assert q == p
        else:
            assert q == p * weight
    assert favour_line_starts(texts, probs, 1.0) == probs


def test_what_starts_mid_sentence():
    from lit_block.segmentation.planner import starts_mid_sentence

    carries_on = [("the ship did not sail\n", "for several days."), ("beds, pots,\n", "  knives and forks"),
                  ("a whale\r\n", "and another")]
    new_start = [("the ship did not sail.\n", "for"), ("did not sail\n\n", "for"), ("did not sail\n", "For"),
                 ("did not sail\n", "  42 days"), ("did not sail ", "for"), ("x = 1\n", "y")]
    assert all(starts_mid_sentence(a, b) for a, b in carries_on)
    assert not any(starts_mid_sentence(a, b) for a, b in new_start)


@settings(max_examples=100, deadline=None)
@given(texts=st.lists(st.sampled_from(["the whale\n", "swam on.\n", "and on\n", "Then, \n", "\n", "at sea, ", "x"]),
                      min_size=1, max_size=12),
       weight=st.floats(0, 1))
def test_avoiding_mid_sentence_scales_exactly_the_units_that_carry_a_sentence_on(texts, weight):
    from lit_block.segmentation.planner import avoid_mid_sentence, starts_mid_sentence

    probs = [None if i % 5 == 4 else (i % 3 + 1) / 4 for i in range(len(texts))]
    out = avoid_mid_sentence(texts, probs, weight)
    for i, (p, q) in enumerate(zip(probs, out)):
        carried = i > 0 and texts[i - 1].endswith(("e\n", "n\n", ", \n")) and texts[i][:1].islower()
        assert carried == (i > 0 and starts_mid_sentence(texts[i - 1], texts[i]))
        assert q == (None if p is None else p * weight if carried else p)
    assert avoid_mid_sentence(texts, probs, 1.0) == probs


@settings(max_examples=100, deadline=None)
@given(texts=st.lists(st.sampled_from(["the whale\n", "swam on.\n", "and on\n", "Then, \n", "%\n", "at sea, ", "x"]),
                      min_size=1, max_size=12))
def test_the_wrapped_line_share_counts_line_starts_that_carry_a_sentence_on(texts):
    from lit_block.segmentation.planner import LINE_BREAKS, is_separator, starts_mid_sentence, wrapped_line_share

    line_starts = [i for i in range(1, len(texts)) if texts[i - 1][-1] in LINE_BREAKS and not is_separator(texts[i])]
    carried = [i for i in line_starts if starts_mid_sentence(texts[i - 1], texts[i])]
    share = wrapped_line_share(texts)
    assert share == (len(carried) / len(line_starts) if line_starts else 0.0)
    assert 0.0 <= share <= 1.0


def test_the_wrapped_line_share_tells_wrapped_prose_from_one_sentence_a_line():
    from lit_block.segmentation.planner import wrapped_line_share

    wrapped = ["The ship did not sail\n", "for several days, and the crew\n", "slept ashore. ", "Then it sailed.\n",
               "A new paragraph.\n"]
    verses = ["1 In the beginning.\n", "2 And the earth was void. ", "It was dark.\n", "3 And there was light.\n"]
    assert wrapped_line_share(wrapped) == 2 / 3
    assert wrapped_line_share(verses) == 0.0
    assert wrapped_line_share(["no line break at all. ", "None."]) == 0.0
