"""Loss functions: pure, shapes in the docstrings, empty selections handled."""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint


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


DIVERGENCES = ("forward_kl", "reverse_kl", "jsd")


def _token_divergence(student_logp: torch.Tensor, teacher_logp: torch.Tensor, kind: str, beta: float) -> torch.Tensor:
    """Per-token divergence ``[N]`` between two ``[N, V]`` log-distributions."""
    if kind == "forward_kl":  # KL(teacher || student): mode-covering, the classic distillation loss
        return (teacher_logp.exp() * (teacher_logp - student_logp)).sum(-1)
    if kind == "reverse_kl":  # KL(student || teacher): mode-seeking
        return (student_logp.exp() * (student_logp - teacher_logp)).sum(-1)
    # generalized JSD with mixture m = beta * teacher + (1 - beta) * student
    mix = torch.logsumexp(torch.stack([teacher_logp + math.log(beta), student_logp + math.log(1 - beta)]), dim=0)
    kl_t = (teacher_logp.exp() * (teacher_logp - mix)).sum(-1)
    kl_s = (student_logp.exp() * (student_logp - mix)).sum(-1)
    return beta * kl_t + (1 - beta) * kl_s


def _logits_token_divergence(logits: torch.Tensor, ref_logits: torch.Tensor, divergence: str, beta: float,
                             temperature: float = 1.0) -> torch.Tensor:
    """Per-position divergence ``[n]`` of one chunk's ``[n, V]`` logits from its ``[n, V]`` reference logits."""
    logp = (logits.float() / temperature).log_softmax(-1)
    return _token_divergence(logp, (ref_logits.float() / temperature).log_softmax(-1), divergence, beta)


def _logits_divergence(s_logits: torch.Tensor, t_logits: torch.Tensor, w: torch.Tensor, temperature: float,
                       divergence: str, beta: float) -> torch.Tensor:
    """Weighted divergence sum of one chunk: ``[n, V]`` student and teacher logits, ``[n]`` weights -> scalar."""
    return (_logits_token_divergence(s_logits, t_logits, divergence, beta, temperature) * w.float()).sum()


@functools.cache
def _compiled(fn, backend: str):
    # the vocabulary-sized softmaxes and the divergence fused into a few kernels; chunk lengths vary (dynamic)
    return torch.compile(fn, backend=backend)


def chunked_distillation_loss(
    student_hidden: torch.Tensor,
    teacher_hidden: torch.Tensor,
    lm_head: torch.nn.Module,
    weights: torch.Tensor,
    teacher_lm_head: torch.nn.Module | None = None,
    divergence: str = "forward_kl",
    temperature: float = 1.0,
    beta: float = 0.5,
    chunk_size: int = 1024,
    compile: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token-weighted divergence between teacher and student next-token distributions, in chunks.

    Logits are computed ``chunk_size`` positions at a time from the final hidden states, and each
    chunk is recomputed in the backward pass (activation checkpointing), so neither the full
    ``[tokens, vocab]`` logits nor their graph are ever held: memory is one chunk's logits.

    Args:
        student_hidden: ``[N, H]`` student final hidden states at the scored positions.
        teacher_hidden: ``[N, H_t]`` teacher final hidden states at the same positions.
        lm_head: the student's output projection (``H -> V``).
        weights: ``[N]`` per-position weights (0 drops a position).
        teacher_lm_head: the teacher's projection (default: ``lm_head``).
        divergence: ``forward_kl``, ``reverse_kl`` or ``jsd``.
        temperature: softens both distributions; the loss is scaled by ``temperature ** 2``.
        beta: the JSD mixture weight of the teacher (ignored otherwise).
        compile: a ``torch.compile`` backend (``inductor``) for the per-chunk softmaxes and divergence.

    Returns:
        ``(weighted divergence sum, weight sum)``; both 0 (with a graph) when ``N == 0``.
    """
    if divergence not in DIVERGENCES:
        raise ValueError(f"divergence must be one of {DIVERGENCES}, got {divergence!r}")
    if not 0 < beta < 1:
        raise ValueError(f"beta must be in (0, 1), got {beta}")
    if student_hidden.shape[0] != teacher_hidden.shape[0] or weights.shape[0] != student_hidden.shape[0]:
        raise ValueError(
            f"positions disagree: student {tuple(student_hidden.shape)}, teacher {tuple(teacher_hidden.shape)}, "
            f"weights {tuple(weights.shape)}"
        )
    teacher_lm_head = teacher_lm_head or lm_head
    s_vocab, t_vocab = lm_head.weight.shape[0], teacher_lm_head.weight.shape[0]
    if s_vocab != t_vocab:
        raise ValueError(f"teacher vocabulary ({t_vocab}) differs from the student's ({s_vocab}): distillation needs one")

    logits_divergence = _compiled(_logits_divergence, compile) if compile else _logits_divergence

    def chunk_loss(s_hidden: torch.Tensor, t_hidden: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            t_logits = teacher_lm_head(t_hidden)  # no graph: the teacher is a constant target
        return logits_divergence(lm_head(s_hidden), t_logits, w, temperature, divergence, beta)

    total = student_hidden.sum() * 0.0
    for start in range(0, student_hidden.shape[0], chunk_size):
        sl = slice(start, start + chunk_size)
        total = total + checkpoint(chunk_loss, student_hidden[sl], teacher_hidden[sl], weights[sl], use_reentrant=False)
    return total * temperature**2, weights.float().sum()


@torch.no_grad()
def chunked_token_divergence(
    hidden: torch.Tensor,
    reference_hidden: torch.Tensor,
    lm_head: torch.nn.Module,
    divergence: str = "forward_kl",
    beta: float = 0.5,
    chunk_size: int = 1024,
    compile: str | None = None,
    reference_lm_head: torch.nn.Module | None = None,
) -> torch.Tensor:
    """Per-position divergence between the next-token distributions of two sets of hidden states, in chunks.

    Both go through ``lm_head`` (the reference through ``reference_lm_head`` when given, e.g. a teacher's own);
    ``forward_kl`` is ``KL(reference || hidden)``. Memory is one chunk's logits (the whole ``[N, V]`` fp32 logits
    of a 32k-token sample would take 20 GB each).

    Args:
        hidden: ``[N, H]`` hidden states (e.g. the teacher under block attention).
        reference_hidden: ``[N, H]`` reference hidden states (e.g. the teacher under full attention).
        lm_head: the output projection (``H -> V``).
        compile: a ``torch.compile`` backend (``inductor``) for the per-chunk softmaxes and divergence.

    Returns:
        ``[N]`` float32 divergences (``[0]`` when ``N == 0``).
    """
    if divergence not in DIVERGENCES:
        raise ValueError(f"divergence must be one of {DIVERGENCES}, got {divergence!r}")
    if hidden.shape != reference_hidden.shape:
        raise ValueError(f"hidden states disagree: {tuple(hidden.shape)} vs reference {tuple(reference_hidden.shape)}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    token_divergence = _compiled(_logits_token_divergence, compile) if compile else _logits_token_divergence
    out = torch.empty(hidden.shape[0], device=hidden.device, dtype=torch.float32)
    for start in range(0, hidden.shape[0], chunk_size):
        sl = slice(start, start + chunk_size)
        out[sl] = token_divergence(lm_head(hidden[sl]), (reference_lm_head or lm_head)(reference_hidden[sl]), divergence,
                                   beta)
    return out


@torch.no_grad()
def chunked_token_nll(hidden: torch.Tensor, lm_head: torch.nn.Module, targets: torch.Tensor,
                      chunk_size: int = 1024) -> torch.Tensor:
    """Per-position negative log-likelihood ``[N]`` (float32) of ``targets [N]`` under ``lm_head(hidden [N, H])``,
    one chunk's logits in memory at a time."""
    out = torch.empty(hidden.shape[0], device=hidden.device, dtype=torch.float32)
    for start in range(0, hidden.shape[0], chunk_size):
        sl = slice(start, start + chunk_size)
        out[sl] = F.cross_entropy(lm_head(hidden[sl]).float(), targets[sl], reduction="none")
    return out


def sensitivity_weights(kl: torch.Tensor, valid: torch.Tensor, temperature: float = 1.0, min_weight: float = 0.1,
                        max_weight: float = 10.0) -> torch.Tensor:
    """Per-position divergences to token weights: mean 1 over ``valid``, sharpened by ``1 / temperature``, clipped to
    ``[min_weight, max_weight]``, 0 where not valid. ``kl`` and ``valid``: any shape, the same; returns that shape."""
    mean = kl[valid].mean().clamp(min=1e-8) if valid.any() else kl.new_tensor(1.0)
    w = (kl / mean).clamp(min=0) ** (1.0 / temperature)
    return w.clamp(min_weight, max_weight) * valid
