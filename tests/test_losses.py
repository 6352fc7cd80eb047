"""Loss functions against hand-written equivalents and edge cases."""

from __future__ import annotations

import math

import pytest
import torch

from lit_block.losses import next_token_nll


def test_next_token_nll_equals_a_hand_computed_sum():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7)
    ids = torch.randint(0, 7, (2, 5))
    mask = torch.tensor([[0, 0, 1, 1, 0], [0, 1, 0, 0, 1]], dtype=torch.bool)
    total, count = next_token_nll(logits, ids, mask)
    want = 0.0
    for b, t in [(0, 2), (0, 3), (1, 1), (1, 4)]:  # token t is predicted by position t - 1
        want -= torch.log_softmax(logits[b, t - 1], dim=-1)[ids[b, t]].item()
    assert count == 4
    assert math.isclose(total.item(), want, rel_tol=1e-6)


def test_next_token_nll_with_no_target_is_zero_and_differentiable():
    logits = torch.randn(1, 3, 4, requires_grad=True)
    total, count = next_token_nll(logits, torch.zeros(1, 3, dtype=torch.long), torch.zeros(1, 3, dtype=torch.bool))
    assert count == 0 and total.item() == 0.0
    total.backward()
    assert logits.grad is not None


def test_next_token_nll_shape_mismatch_is_named():
    with pytest.raises(ValueError, match="shapes disagree"):
        next_token_nll(torch.randn(1, 3, 4), torch.zeros(1, 2, dtype=torch.long), torch.zeros(1, 3, dtype=torch.bool))
