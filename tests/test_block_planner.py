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
