"""How much of what block attention costs a model gets back: the metrics every lit-block table leads with.

Block attention costs the teacher something: under it, the teacher's next-token distributions move
away from its own full-attention ones. A student trained to recover that cost should move back.

* **KL gap closed** (primary) ``= 1 - KL(teacher_full || model_block) / KL(teacher_full || teacher_block)``,
  per token over the scored positions (both KLs summed over the same tokens). 0: no better than the
  untrained model under block attention; 1: the teacher's full-attention predictions exactly. Learning
  the training text's domain moves a model *away* from the teacher, so it cannot raise this figure.
* **Own gap closed** ``= 1 - (NLL(model_block) - NLL(model_full)) / (NLL(teacher_block) - NLL(teacher_full))``:
  what block attention still costs the model itself, against what it cost the teacher. The same
  weights on both sides, so domain learned cancels.
* **Gap closed against a control** ``= 1 - (NLL(model_block) - NLL(control_full)) / (NLL(teacher_block) -
  NLL(teacher_full))``, where the control is the same initialisation trained on the same data and
  budget with full attention: what remains of block attention's cost once domain is accounted for.
* **NLL gap closed against the teacher** (secondary, domain-sensitive; formerly "gap recovered")
  ``= 1 - (NLL(model_block) - NLL(teacher_full)) / (NLL(teacher_block) - NLL(teacher_full))``. Any
  training on prose lowers an instruct teacher's NLL on prose, so this rewards domain as much as
  block attention recovered: it can pass 100% while the KL to the teacher gets worse.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from lit_block.losses import chunked_token_divergence, chunked_token_nll


def gap_closed(remaining: float, untrained: float) -> float:
    """``1 - remaining / untrained``: the share of the untrained model's gap that is gone (``nan`` without a gap)."""
    return 1.0 - remaining / untrained if abs(untrained) > 1e-12 else math.nan


def kl_gap_closed(kl_model_block: float, kl_teacher_block: float) -> float:
    """The primary metric; both arguments are KL(teacher_full || .) averaged (or summed) over the same tokens."""
    return gap_closed(kl_model_block, kl_teacher_block)


def nll_gap_closed(nll_model_block: float, nll_reference_full: float, nll_teacher_block: float,
                   nll_teacher_full: float) -> float:
    """The NLL gap left between the model under block attention and a full-attention reference (the model itself,
    a full-attention control, or the teacher), as a share of the teacher's own block-attention gap."""
    return gap_closed(nll_model_block - nll_reference_full, nll_teacher_block - nll_teacher_full)


@torch.no_grad()
def window_sums(hidden: torch.Tensor, head, teacher_hidden: torch.Tensor, teacher_head, batch: dict) -> torch.Tensor:
    """``[B, 3]`` per sample: summed NLL of the scored tokens, summed KL(teacher_full || model), scored count.

    ``hidden`` and ``teacher_hidden`` are ``[B, S, H]``; position ``t`` predicts token ``t + 1``, scored where
    ``batch["target_mask"]`` marks it.
    """
    ids, target = batch["input_ids"], batch["target_mask"]
    positions = torch.roll(target, -1, dims=1)  # position t predicts scored token t + 1
    positions[:, -1] = False
    rows = positions.nonzero()[:, 0]
    nll = chunked_token_nll(hidden[positions], head, torch.roll(ids, -1, dims=1)[positions])
    kl = chunked_token_divergence(hidden[positions], teacher_hidden[positions], head, reference_lm_head=teacher_head)
    out = torch.zeros(ids.shape[0], 3, dtype=torch.float64)
    for column, values in enumerate((nll, kl, torch.ones_like(nll))):
        out[:, column].index_add_(0, rows.cpu(), values.double().cpu())
    return out


def bootstrap_ratio_interval(numerator: Sequence[float], denominator: Sequence[float], transform=lambda r: r,
                             level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """A bootstrap interval of ``transform(sum(numerator) / sum(denominator))`` over resampled units (scipy's BCa).

    ``numerator[i]`` and ``denominator[i]`` are one unit's (one document window's) sums, so the ratio is
    resampled the way it is computed: per token over the scored positions of the drawn units.
    """
    from scipy.stats import bootstrap

    num, den = np.asarray(numerator, dtype=np.float64), np.asarray(denominator, dtype=np.float64)
    if num.size < 3 or np.ptp(num / np.where(den == 0, 1, den)) == 0:  # too few units, or nothing varies
        return math.nan, math.nan
    result = bootstrap((num, den), lambda n, d, axis=-1: transform(n.sum(axis) / d.sum(axis)), paired=True,
                       vectorized=True, confidence_level=level, n_resamples=2000, rng=np.random.default_rng(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def mean_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """Mean and a two-sided Student-t interval over independent runs (seeds): ``(mean, low, high)``."""
    from scipy.stats import t

    x = np.asarray(values, dtype=np.float64)
    mean = float(x.mean())
    if x.size < 2:
        return mean, math.nan, math.nan
    half = float(t.ppf((1 + level) / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return mean, mean - half, mean + half


def seeded_ratio_difference(numerator_a, numerator_b, denominator, draws: int = 2000, level: float = 0.95,
                            seed: int = 0) -> tuple[float, float, float]:
    """Mean over seeds of recipe b's pooled ratio minus recipe a's, with a two-level bootstrap interval.

    ``numerator_a``: (seeds_a, documents), ``numerator_b``: (seeds_b, documents), one row per training seed of a
    recipe, each document's sum (Pk errors); ``denominator``: (documents,), each document's windows, shared by every
    row. Each draw resamples the documents (the same draw for both recipes: documents stay paired) and, apart for
    each recipe, its seeds with replacement, so the interval holds the spread between trainings as well as between
    documents. Returns ``(difference, low, high)``, a percentile interval.
    """
    a, b = np.asarray(numerator_a, dtype=np.float64), np.asarray(numerator_b, dtype=np.float64)
    den = np.asarray(denominator, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != den.size or b.shape[1] != den.size:
        raise ValueError(f"numerators must be (seeds, {den.size}) for {den.size} documents, got {a.shape}, {b.shape}")
    point = float(b.sum(1).mean() / den.sum() - a.sum(1).mean() / den.sum())
    rng = np.random.default_rng(seed)
    docs = rng.integers(den.size, size=(draws, den.size))  # (draws, documents)
    total = den[docs].sum(1)  # (draws,)

    def seed_mean(x: np.ndarray) -> np.ndarray:  # (seeds, documents) -> (draws,), seeds resampled per draw
        ratio = x[:, docs].sum(2) / total  # (seeds, draws): every seed on every document draw
        picked = rng.integers(x.shape[0], size=(draws, x.shape[0]))  # (draws, seeds)
        return np.take_along_axis(ratio.T, picked, axis=1).mean(1)

    diff = seed_mean(b) - seed_mean(a)
    low, high = np.quantile(diff, [(1 - level) / 2, (1 + level) / 2])
    return point, float(low), float(high)
