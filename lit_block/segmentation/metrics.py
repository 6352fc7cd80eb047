"""Segmentation metrics: Pk, WindowDiff, boundary precision / recall / F1, block-length error.

A segmentation of a sequence of ``n`` atoms (tokens, here) is the sorted list of atom indices where
a segment starts, 0 excluded. Pk and WindowDiff slide a window of ``k`` atoms (default: half the
mean reference segment length) and count windows whose ends the two segmentations disagree on
(Pk: same segment or not; WindowDiff: how many boundaries lie between). Lower is better.
The torchmetrics classes sum errors and windows over documents (a micro average).
"""

from __future__ import annotations

import torch
from torchmetrics import Metric


def _indicator(bounds: list[int], n: int) -> torch.Tensor:
    """``[n]`` 0/1, 1 at each boundary atom index."""
    ind = torch.zeros(n, dtype=torch.long)
    idx = torch.tensor([b for b in bounds if 0 < b < n], dtype=torch.long)
    ind[idx] = 1
    return ind


def default_window(ref: list[int], n: int) -> int:
    """Half the mean reference segment length, at least 1 (the usual choice for Pk and WindowDiff)."""
    return max(1, round(n / (len(ref) + 1) / 2))


def window_errors(ref: list[int], hyp: list[int], n: int, k: int | None = None) -> tuple[int, int, int]:
    """(Pk errors, WindowDiff errors, windows) of ``hyp`` against ``ref`` over ``n`` atoms."""
    k = k or default_window(ref, n)
    if n <= k:
        return 0, 0, 0
    # boundaries strictly inside the window (i, i + k]: prefix sums of the indicators
    r = torch.cumsum(_indicator(ref, n), 0)
    h = torch.cumsum(_indicator(hyp, n), 0)
    r_between = r[k:] - r[:-k]  # window i covers atom indices i+1 .. i+k
    h_between = h[k:] - h[:-k]
    pk = int(((r_between > 0) != (h_between > 0)).sum())
    wd = int((r_between != h_between).sum())
    return pk, wd, n - k


def boundary_matches(ref: list[int], hyp: list[int], tolerance: int = 0) -> int:
    """Hypothesis boundaries matched one-to-one to a reference boundary within ``tolerance`` atoms."""
    unmatched = sorted(ref)
    hits = 0
    for b in sorted(hyp):
        best = min((r for r in unmatched if abs(r - b) <= tolerance), key=lambda r: abs(r - b), default=None)
        if best is not None:
            unmatched.remove(best)
            hits += 1
    return hits


class SegmentationMetrics(Metric):
    """Pk, WindowDiff, boundary P/R/F1 (exact and within ``tolerance``) and block-length error.

    ``update(ref, hyp, n, target_block=None)`` per document; ``compute()`` returns a dict.
    ``target_block`` (atoms) is the requested block size: the length error is
    ``|mean hypothesis block - target| / target``.
    """

    full_state_update = False

    def __init__(self, tolerance: int = 5, **kwargs):
        super().__init__(**kwargs)
        self.tolerance = tolerance
        for name in ("pk_err", "wd_err", "windows", "hits", "hits_tol", "n_hyp", "n_ref", "len_err", "len_docs"):
            self.add_state(name, default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, ref: list[int], hyp: list[int], n: int, target_block: float | None = None) -> None:
        pk, wd, windows = window_errors(ref, hyp, n)
        self.pk_err += pk
        self.wd_err += wd
        self.windows += windows
        self.hits += boundary_matches(ref, hyp, 0)
        self.hits_tol += boundary_matches(ref, hyp, self.tolerance)
        self.n_hyp += len(hyp)
        self.n_ref += len(ref)
        if target_block:
            self.len_err += abs(n / (len(hyp) + 1) - target_block) / target_block
            self.len_docs += 1

    def compute(self) -> dict[str, torch.Tensor]:
        def ratio(a, b):
            return a / b if b > 0 else torch.tensor(float("nan"), dtype=torch.float64)

        out = {"pk": ratio(self.pk_err, self.windows), "windowdiff": ratio(self.wd_err, self.windows)}
        for suffix, hits in (("", self.hits), ("_tol", self.hits_tol)):
            p, r = ratio(hits, self.n_hyp), ratio(hits, self.n_ref)
            out[f"precision{suffix}"], out[f"recall{suffix}"] = p, r
            out[f"f1{suffix}"] = ratio(2 * p * r, p + r) if (p + r) > 0 else torch.tensor(0.0, dtype=torch.float64)
        out["length_error"] = ratio(self.len_err, self.len_docs)
        out["reference_boundaries"] = self.n_ref.clone()
        return out
