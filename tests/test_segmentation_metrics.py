"""Segmentation metrics against hand-computed cases and the reference implementation (segeval)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lit_block.segmentation.metrics import SegmentationMetrics, boundary_matches, default_window, window_errors


def test_identical_segmentations_have_no_error():
    assert window_errors([3, 7], [3, 7], 12, k=2) == (0, 0, 10)


def test_missing_boundary_hand_computed():
    # n=10, k=2: windows i=0..7 cover atoms i+1..i+2; the boundary at 5 sits in windows 3 and 4
    assert window_errors([5], [], 10, k=2) == (2, 2, 8)


def test_pk_ignores_extra_boundaries_in_the_same_window_but_windowdiff_counts_them():
    # ref boundary at 5; hyp at 5 and 6: windows 4 (atoms 5,6) has 1 vs 2 boundaries; window 5 (6,7) has 0 vs 1
    pk, wd, windows = window_errors([5], [5, 6], 10, k=2)
    assert (pk, wd, windows) == (1, 2, 8)


def test_default_window_is_half_the_mean_reference_segment():
    assert default_window([10, 20, 30], 40) == 5
    assert default_window([], 3) == 2


def test_boundary_matching_is_one_to_one_within_tolerance():
    assert boundary_matches([10, 20], [10, 21], tolerance=0) == 1
    assert boundary_matches([10, 20], [10, 21], tolerance=1) == 2
    assert boundary_matches([10], [9, 11], tolerance=1) == 1  # one reference boundary matches once


def test_metric_accumulates_over_documents():
    m = SegmentationMetrics(tolerance=1)
    m.update([5], [5], 10, target_block=5)
    m.update([5], [], 10, target_block=5)
    out = m.compute()
    assert out["pk"].item() == pytest.approx(2 / 16)  # 0 + 2 errors over 8 + 8 windows (k = 2 in both)
    assert out["precision"].item() == 1.0 and out["recall"].item() == 0.5
    assert out["f1"].item() == pytest.approx(2 / 3)
    assert out["length_error"].item() == pytest.approx((0 + 1.0) / 2)  # blocks of 5 vs 10 against 5


def test_no_hypothesis_boundary_gives_nan_precision_and_zero_f1():
    m = SegmentationMetrics()
    m.update([5], [], 10)
    out = m.compute()
    assert math.isnan(out["precision"].item()) and out["f1"].item() == 0.0


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_pk_and_windowdiff_equal_segeval(data):
    """The reference implementation (segeval, on segment masses) gives the same Pk and WindowDiff for any window."""
    segeval = pytest.importorskip("segeval")
    n = data.draw(st.integers(3, 80))
    k = data.draw(st.integers(1, n - 1))
    cuts = st.lists(st.integers(1, n - 1), unique=True, max_size=8).map(sorted)
    ref, hyp = data.draw(cuts), data.draw(cuts)

    def masses(bounds):
        edges = [0, *bounds, n]
        return tuple(b - a for a, b in zip(edges, edges[1:]))

    pk, wd, windows = window_errors(ref, hyp, n, k)
    assert pk / windows == pytest.approx(float(segeval.pk(masses(hyp), masses(ref), window_size=k)))
    assert wd / windows == pytest.approx(float(segeval.window_diff(masses(hyp), masses(ref), window_size=k)))
