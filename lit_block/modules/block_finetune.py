"""Block fine-tuning, the Block-Attention baseline: cross-entropy under block attention.

Validation and test report the global-block NLL under block attention and, by default, under
full attention with the same weights; their difference is the gap block distillation recovers.
Batches are dicts of ``[B, S]`` tensors: ``input_ids``, ``block_ids``, ``attention_mask`` and
``target_mask`` (tokens that are scored), as ``datamodules.TextBlocksDataModule`` makes them.
"""

from __future__ import annotations

from dataclasses import asdict

import lightning as L
import torch
from torch import nn
from torchmetrics import MeanMetric

from lit_block.errors import UsageError, check_number
from lit_block.losses import next_token_nll
from lit_block.model import BlockAttentionLM, compile_backend
from lit_block.optim import LRSchedule, optimizer_and_schedule
from lit_block.sharding import DTYPES, ShardingConfig, data_parallel_mesh, shard_block_lm

def check_lm_settings(dtype: str, attn_backend: str, num_sink_tokens: int, learning_rate: float,
                      weight_decay: float) -> None:
    """The settings both training modules declare, checked where they are declared (key and value named)."""
    from lit_block.attention import BACKEND_NAMES

    if dtype not in DTYPES:
        raise UsageError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if attn_backend not in BACKEND_NAMES:
        raise UsageError(f"attn_backend must be one of {', '.join(BACKEND_NAMES)}, got {attn_backend!r}")
    check_number("num_sink_tokens", num_sink_tokens, low=0, integer=True)
    check_number("learning_rate", learning_rate, low=0)  # a negative rate is gradient ascent
    check_number("weight_decay", weight_decay, low=0)


class BlockFinetuneModule(L.LightningModule):
    def __init__(
        self,
        model_name_or_path: str = "smollm2-135m",
        num_sink_tokens: int = 0,
        attn_backend: str = "auto",
        dtype: str = "float32",
        learning_rate: float = 1e-5,
        weight_decay: float = 0.0,
        eval_full_attention: bool = True,
        schedule: LRSchedule | None = None,
        sharding: ShardingConfig | None = None,
        compile_layers: bool | str = False,
    ):
        """``schedule``: warm-up and decay of the learning rate (``lit_block.optim``).
        ``sharding``: FSDP2 settings used when the strategy provides a device mesh (``ModelParallelStrategy``).
        ``compile_layers``: ``torch.compile`` every decoder layer (after sharding); ``True`` for inductor, or a
        backend's name (as in ``BlockDistillationModule``)."""
        super().__init__()
        check_lm_settings(dtype=dtype, attn_backend=attn_backend, num_sink_tokens=num_sink_tokens,
                          learning_rate=learning_rate, weight_decay=weight_decay)
        self.save_hyperparameters(ignore=["sharding", "schedule"])
        self.hparams["sharding"] = asdict(sharding) if sharding else None  # plain values: checkpoints load weights_only
        self.hparams["schedule"] = asdict(schedule) if schedule else None
        self.lm: BlockAttentionLM | None = None  # built in configure_model (FSDP-friendly)
        self.nll = nn.ModuleDict(
            {f"{stage}_{mode}": MeanMetric() for stage in ("val", "test") for mode in ("block", "full")}
        )

    def configure_model(self) -> None:
        if self.lm is not None:
            return
        h = self.hparams
        self.lm = BlockAttentionLM.from_pretrained(
            h.model_name_or_path, num_sink_tokens=h.num_sink_tokens, attn_backend=h.attn_backend, dtype=DTYPES[h.dtype]
        )
        self.lm.train()  # from_pretrained returns eval mode
        if self.device_mesh is not None:  # ModelParallelStrategy: FSDP2 per decoder layer
            shard_block_lm(self.lm, data_parallel_mesh(self.device_mesh), ShardingConfig(**(h.sharding or {})))
        if h.compile_layers:
            self.lm.compile_decoder_layers(compile_backend(h.compile_layers))

    def _nll(self, batch: dict, full_attention: bool) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.lm(
            batch["input_ids"], batch["block_ids"], batch["attention_mask"], full_attention=full_attention
        )
        return next_token_nll(out.logits, batch["input_ids"], batch["target_mask"])

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        nll_sum, count = self._nll(batch, full_attention=False)
        loss = nll_sum / count.clamp(min=1)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["input_ids"].shape[0])
        return loss

    def _evaluate(self, batch: dict, stage: str) -> None:
        modes = ("block", "full") if self.hparams.eval_full_attention else ("block",)
        for mode in modes:
            nll_sum, count = self._nll(batch, full_attention=mode == "full")
            if count > 0:
                self.nll[f"{stage}_{mode}"].update(nll_sum / count, count)

    def _log_epoch(self, stage: str) -> None:
        block = self.nll[f"{stage}_block"].compute()
        self.log(f"{stage}/nll_block", block)
        if self.hparams.eval_full_attention:
            full = self.nll[f"{stage}_full"].compute()
            self.log(f"{stage}/nll_full", full)
            self.log(f"{stage}/nll_gap", block - full)  # what block attention costs, in nats per token
        for metric in self.nll.values():
            metric.reset()

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    def export(self, folder: str) -> None:
        """Save the fine-tuned model for serving: ``BlockAttentionLM.from_pretrained(folder)`` loads it."""
        self.lm.save_pretrained(folder)

    def configure_optimizers(self):
        h = self.hparams
        groups = [{"params": [p for p in self.parameters() if p.requires_grad], "lr": h.learning_rate,
                   "weight_decay": h.weight_decay}]
        return optimizer_and_schedule(groups, LRSchedule(**(h.schedule or {})), self.trainer.estimated_stepping_batches)
