"""``AttentionSensitivityWeighting``: weight tokens by how much block attention changes the teacher.

For each position, the divergence ``KL(teacher_full || teacher_block)`` measures how sensitive its
prediction is to losing cross-block context. Weights are that divergence normalised to mean 1 over
the valid positions of the batch, sharpened or flattened by ``1 / temperature``, and clipped to
``[min_weight, max_weight]``; they are put in ``batch["token_weights"]`` for the module's loss.
Weights are cached per sample (keyed by its tokens and blocks) when the data repeats. The divergence
is computed ``chunk_size`` positions at a time, so long samples never hold ``[tokens, vocab]`` logits.
"""

from __future__ import annotations

import hashlib

import lightning as L
import torch

from lit_block.errors import check_number
from lit_block.losses import chunked_token_divergence, sensitivity_weights
from lit_block.model import compile_backend


class AttentionSensitivityWeighting(L.Callback):
    def __init__(self, temperature: float = 1.0, min_weight: float = 0.1, max_weight: float = 10.0, cache: bool = True,
                 chunk_size: int = 1024):
        check_number("temperature", temperature, low=0, low_open=True)
        check_number("min_weight", min_weight, low=0)
        check_number("max_weight", max_weight, low=min_weight)
        check_number("chunk_size", chunk_size, low=1, integer=True)
        self.temperature, self.min_weight, self.max_weight, self.cache = temperature, min_weight, max_weight, cache
        self.chunk_size = chunk_size  # positions per vocabulary projection: memory is one chunk's logits
        self._cache: dict[str, torch.Tensor] = {}

    @staticmethod
    def _key(ids: torch.Tensor, blocks: torch.Tensor) -> str:
        return hashlib.sha1(ids.cpu().numpy().tobytes() + blocks.cpu().numpy().tobytes()).hexdigest()

    @torch.no_grad()
    def sensitivity(self, pl_module, batch: dict) -> torch.Tensor:
        """``[B, S]`` per-position ``KL(teacher_full || teacher_block)`` of the next-token distribution."""
        head = pl_module.teacher.model.get_output_embeddings()
        full = pl_module.teacher_hidden(batch)
        batch["teacher_full_hidden"] = full  # the module's loss needs the same states: computed once per step
        block = pl_module.teacher_hidden(batch, block_attention=True)
        compile = compile_backend(getattr(pl_module.hparams, "compile_layers", False))  # as the module's own loss
        return torch.stack([chunked_token_divergence(block[b], full[b], head, chunk_size=self.chunk_size, compile=compile)
                            for b in range(full.shape[0])])

    def weights(self, kl: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Normalise ``[B, S]`` divergences to weights (mean 1 over ``valid``), temper and clip."""
        return sensitivity_weights(kl, valid, self.temperature, self.min_weight, self.max_weight)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        keys = [self._key(i, b) for i, b in zip(batch["input_ids"], batch["block_ids"])]
        hit = self.cache and all(k in self._cache for k in keys)
        if trainer is not None and trainer.world_size > 1:  # sharded teachers all-gather: every rank must agree
            hit = trainer.strategy.reduce_boolean_decision(hit, all=True)
        if hit:
            batch["token_weights"] = torch.stack([self._cache[k] for k in keys]).to(batch["input_ids"].device)
            return
        weights = self.weights(self.sensitivity(pl_module, batch), batch["attention_mask"].bool())
        if self.cache:
            self._cache.update({k: w.cpu() for k, w in zip(keys, weights)})
        batch["token_weights"] = weights
