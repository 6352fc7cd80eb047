"""One block-distillation step: the loss that ``BlockDistillationModule.training_step``, ``lit-block bench distill``
and the GPU recipe all compute, in one place.

    released = sample_released(batch["block_ids"], probability=0.1)
    loss = distillation_step(teacher, student, batch, released, DistillSettings(isolated_weight=0.1),
                             SensitivityWeighting())
    loss.backward()

A step, top to bottom:

1. the frozen teacher reads the batch with full attention (no grad): the target distributions;
2. with sensitivity weighting, it reads the batch again under block attention, and each position's
   ``KL(teacher_full || teacher_block)`` becomes a token weight (mean 1, tempered, clipped): how much block
   attention changes that prediction. The full-attention states of 1. are reused, never recomputed;
3. the student reads the batch under block attention, with its sinks and the released blocks;
4. each position's weight: 1 on rows that attend globally (the global block, released blocks),
   ``isolated_weight`` on rows of isolated blocks, times the sensitivity weight; 0 for the last position
   and padding (they predict no real token);
5. the loss: the weighted divergence between student and teacher next-token distributions, in checkpointed
   chunks (never ``[tokens, vocab]`` logits), over the sum of weights; plus ``ce_weight`` x cross-entropy.

Callbacks change only numbers between steps (the release probability, the weighting's settings); nothing
travels through the batch dict.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from lit_block.errors import check_number
from lit_block.losses import chunked_distillation_loss, chunked_token_divergence, next_token_nll, sensitivity_weights


@dataclass(frozen=True)
class DistillSettings:
    """The loss's settings (``BlockDistillationModule``'s hyperparameters of the same names)."""

    divergence: str = "forward_kl"
    temperature: float = 1.0
    beta: float = 0.5  # the JSD mixture weight
    ce_weight: float = 0.0
    isolated_weight: float = 0.0
    chunk_size: int = 1024  # positions per vocabulary projection: memory is one chunk's logits
    compile: str | None = None  # a torch.compile backend for the per-chunk softmaxes


@dataclass(frozen=True)
class SensitivityWeighting:
    """Token weights from the teacher's own sensitivity to block attention (``lit_block.losses.sensitivity_weights``)."""

    temperature: float = 1.0
    min_weight: float = 0.1
    max_weight: float = 10.0

    def __post_init__(self):
        check_number("temperature", self.temperature, low=0, low_open=True)
        check_number("min_weight", self.min_weight, low=0)
        check_number("max_weight", self.max_weight, low=self.min_weight)

    def weights(self, kl: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """``[B, S]`` divergences to weights: mean 1 over ``valid``, tempered, clipped, 0 where not valid."""
        return sensitivity_weights(kl, valid, self.temperature, self.min_weight, self.max_weight)


def sample_released(block_ids: torch.Tensor, probability: float) -> torch.Tensor:
    """``[B, N]`` bool: each of a row's ``N`` context blocks released to full attention with ``probability``."""
    n_blocks = int(block_ids.max()) + 1 if block_ids.numel() else 0
    shape = (block_ids.shape[0], max(n_blocks, 0))
    if probability <= 0:
        return torch.zeros(shape, dtype=torch.bool, device=block_ids.device)
    return torch.rand(shape, device=block_ids.device) < probability


@torch.no_grad()
def teacher_sensitivity(teacher, batch: dict, full_hidden: torch.Tensor, chunk_size: int = 1024,
                        compile: str | None = None) -> torch.Tensor:
    """``[B, S]`` per-position ``KL(teacher_full || teacher_block)``; ``full_hidden`` ``[B, S, H]``: the teacher's
    full-attention states of the same batch (its block-attention pass is the only one run here)."""
    head = teacher.model.get_output_embeddings()
    block, _ = teacher.token_hidden_states(batch["input_ids"], batch["block_ids"], batch["attention_mask"])
    return torch.stack([chunked_token_divergence(block[b], full_hidden[b], head, chunk_size=chunk_size, compile=compile)
                        for b in range(full_hidden.shape[0])])


def position_weights(attention_mask: torch.Tensor, global_rows: torch.Tensor, isolated_weight: float) -> torch.Tensor:
    """``[B, S]`` weight of each position's next-token prediction: 1 on global rows, ``isolated_weight`` on isolated
    ones, 0 where the position or its next token is padding, and at the last position (it predicts nothing)."""
    mask = attention_mask.bool()
    w = torch.where(global_rows, 1.0, isolated_weight).to(torch.float32)
    w = w * (mask & torch.roll(mask, -1, dims=1))
    w[:, -1] = 0.0
    return w


def distillation_step(teacher, student, batch: dict, released: torch.Tensor, settings: DistillSettings,
                      sensitivity: SensitivityWeighting | None = None,
                      tick: Callable[[str], None] = lambda phase: None) -> torch.Tensor:
    """The loss of one step (see the module docstring); ``batch``: ``input_ids``, ``block_ids``, ``attention_mask``
    ``[B, S]``; ``released`` ``[B, N]`` (``sample_released``). ``tick(phase)`` is called after each phase (the
    benchmark times them). Returns the scalar loss; the caller calls ``backward`` and steps its optimizer."""
    ids, blocks, mask = batch["input_ids"], batch["block_ids"], batch["attention_mask"]
    with torch.no_grad():
        t_full = teacher.full_attention_hidden_states(ids, mask)
        tick("teacher forward, full attention")
        token_weights = None
        if sensitivity is not None:  # the teacher's block pass; its full-attention states are the ones above
            kl = teacher_sensitivity(teacher, batch, t_full, settings.chunk_size, settings.compile)
            token_weights = sensitivity.weights(kl, mask.bool())
            tick("teacher forward, block attention + sensitivity")
    s_hidden, layout = student.token_hidden_states(ids, blocks, mask, released)
    tick("student forward")
    global_rows = layout.query_is_global().gather(1, layout.token_index)  # [B, S] rows that attend globally
    w = position_weights(mask, global_rows, settings.isolated_weight)
    if token_weights is not None:
        w = w * token_weights.to(w)
    keep = w > 0
    div, wsum = chunked_distillation_loss(
        s_hidden[keep], t_full[keep], student.model.get_output_embeddings(), w[keep],
        teacher_lm_head=teacher.model.get_output_embeddings(), divergence=settings.divergence,
        temperature=settings.temperature, beta=settings.beta, chunk_size=settings.chunk_size, compile=settings.compile)
    loss = div / wsum.clamp(min=1e-6)
    if settings.ce_weight > 0:  # the data's own next tokens, on the same positions
        logits = student.model.get_output_embeddings()(s_hidden)
        nll, n = next_token_nll(logits, ids, torch.roll(keep, 1, dims=1))
        loss = loss + settings.ce_weight * nll / n.clamp(min=1)
    tick("divergence (chunked, forward)")
    return loss
