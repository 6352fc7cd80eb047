"""Loss functions: pure, shapes in the docstrings, empty selections handled."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def next_token_nll(
    logits: torch.Tensor, input_ids: torch.Tensor, target_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed negative log-likelihood of the target tokens, and how many there are.

    Args:
        logits: ``[B, S, V]``; position ``t`` predicts token ``t + 1``.
        input_ids: ``[B, S]``.
        target_mask: ``[B, S]`` bool, True where token ``t`` is a target (``t = 0`` never is).

    Returns:
        ``(nll_sum, count)``, both scalars (``nll_sum = 0`` when there is no target).
    """
    if logits.shape[:2] != input_ids.shape or target_mask.shape != input_ids.shape:
        raise ValueError(
            f"shapes disagree: logits {tuple(logits.shape)}, input_ids {tuple(input_ids.shape)}, "
            f"target_mask {tuple(target_mask.shape)}"
        )
    mask = target_mask[:, 1:].bool()
    count = mask.sum()
    if count == 0:
        return logits.sum() * 0.0, count  # keeps the graph (and its device) for an empty batch
    predicted = logits[:, :-1][mask].float()  # select first: never a full [B, S, V] in fp32
    return F.cross_entropy(predicted, input_ids[:, 1:][mask], reduction="sum"), count
