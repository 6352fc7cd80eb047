"""``BlockDistillationModule``: a frozen full-attention teacher guides a block-attention student.

Per batch (dicts of ``[B, S]`` tensors from ``datamodules.TextBlocksDataModule``):

1. the teacher (frozen, eval mode, no grad) reads the sequence with full attention;
2. the student reads it under block attention, with ``num_sink_tokens`` learned sinks per block
   and each context block released to full attention with probability ``release_probability``
   (set each step by ``callbacks.BlockDropoutScheduler``);
3. the loss is ``lit_block.distillation_step.distillation_step``, the one step the benchmarks and the GPU recipe
   share: the token-weighted divergence between their next-token distributions in checkpointed chunks. Positions
   that count: rows that attend globally (the global block and released blocks) with weight 1, isolated-block
   rows with ``isolated_weight``; multiplied by attention-sensitivity weights when ``sensitivity`` is set (by
   ``callbacks.AttentionSensitivityWeighting``). ``ce_weight`` mixes in cross-entropy.

Validation and test lead with ``kl_gap_closed`` (``lit_block.quality``: the share of KL(teacher_full ||
teacher_block) the student closes on the scored tokens), then the student's own block-vs-full NLL gap
closed, and last the domain-sensitive ``nll_gap_closed_vs_teacher``.

The teacher is not a registered submodule: it stays out of ``state_dict`` (so out of every checkpoint,
sharded ones included), out of the optimizer and out of ``.train()``; it is reloaded from its name or
path by ``configure_model`` and placed on the student's device and dtype before each stage (under
FSDP2, ``fully_shard`` places it).
"""

from __future__ import annotations

from dataclasses import asdict

import lightning as L
import torch
from torchmetrics import SumMetric

from lit_block.distillation_step import DistillSettings, SensitivityWeighting, distillation_step, sample_released
from lit_block.errors import UsageError, check_number
from lit_block.layout import attended_pairs
from lit_block.losses import DIVERGENCES
from lit_block.model import BlockAttentionLM, compile_backend
from lit_block.quality import kl_gap_closed, nll_gap_closed, window_sums
from lit_block.modules.block_finetune import check_lm_settings
from lit_block.optim import LRSchedule, optimizer_and_schedule
from lit_block.sharding import DTYPES, ShardingConfig, data_parallel_mesh, shard_block_lm


LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]
SUM_ROWS = ("student", "student_full", "teacher_block", "teacher_full")  # validation rows, summed over scored tokens
SUM_COLUMNS = ("nll", "kl", "count")


def add_lora(student: BlockAttentionLM, rank: int, alpha: float, targets: list[str] | None) -> None:
    """LoRA adapters injected in place (peft): only they and the sinks train."""
    from peft import LoraConfig, inject_adapter_in_model

    inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets or LORA_TARGETS), student.model)
    for name, param in student.model.named_parameters():
        param.requires_grad_("lora_" in name)


def merged_lora_copy(student: BlockAttentionLM) -> BlockAttentionLM:
    """A copy whose LoRA adapters are merged into plain linear layers (loadable without peft)."""
    import copy

    from peft.tuners.lora import LoraLayer

    merged = copy.deepcopy(student)
    for name, module in list(merged.model.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge()
            parent, _, child = name.rpartition(".")
            setattr(merged.model.get_submodule(parent), child, module.get_base_layer())
    return merged


class BlockDistillationModule(L.LightningModule):

    def __init__(
        self,
        teacher: str = "smollm2-135m",
        student: str | None = None,
        num_sink_tokens: int = 2,
        attn_backend: str = "auto",
        dtype: str = "float32",
        divergence: str = "forward_kl",
        temperature: float = 1.0,
        beta: float = 0.5,
        ce_weight: float = 0.0,
        isolated_weight: float = 0.0,
        chunk_size: int = 1024,
        learning_rate: float = 1e-5,
        sink_learning_rate: float = 1e-3,
        weight_decay: float = 0.0,
        lora_rank: int = 0,
        lora_alpha: float = 16.0,
        lora_target_modules: list[str] | None = None,
        schedule: LRSchedule | None = None,
        sharding: ShardingConfig | None = None,
        compile_layers: bool | str = False,
    ):
        """``schedule``: warm-up and decay of the learning rates (``lit_block.optim``; the sinks keep their own rate).
        ``sharding``: FSDP2 settings used when the strategy provides a device mesh (``ModelParallelStrategy``).
        ``compile_layers``: ``torch.compile`` every decoder layer of teacher and student (after sharding) and the
        training loss's per-chunk softmaxes; ``True`` for the default backend (inductor), or a backend's name."""
        super().__init__()
        check_lm_settings(dtype=dtype, attn_backend=attn_backend, num_sink_tokens=num_sink_tokens,
                          learning_rate=learning_rate, weight_decay=weight_decay)
        if divergence not in DIVERGENCES:
            raise UsageError(f"divergence must be one of {', '.join(DIVERGENCES)}, got {divergence!r}")
        check_number("temperature", temperature, low=0, low_open=True)  # 0 divides logits by zero: NaN loss
        check_number("beta", beta, low=0, high=1, low_open=True, high_open=True)  # the JSD mixture weight
        check_number("ce_weight", ce_weight, low=0)
        check_number("isolated_weight", isolated_weight, low=0)
        check_number("chunk_size", chunk_size, low=1, integer=True)
        check_number("sink_learning_rate", sink_learning_rate, low=0)  # per-group rates skip AdamW's own check
        check_number("lora_rank", lora_rank, low=0, integer=True)
        check_number("lora_alpha", lora_alpha, low=0, low_open=True)
        self.save_hyperparameters(ignore=["sharding", "schedule"])
        self.hparams["sharding"] = asdict(sharding) if sharding else None  # plain values: checkpoints load weights_only
        self.hparams["schedule"] = asdict(schedule) if schedule else None
        self._frozen: dict[str, BlockAttentionLM] = {}  # the teacher, kept out of the module tree
        self.student: BlockAttentionLM | None = None
        self.release_probability = 0.0  # set by BlockDropoutScheduler
        self.sensitivity: SensitivityWeighting | None = None  # set by AttentionSensitivityWeighting
        self.sums = torch.nn.ModuleDict({f"{row}_{column}": SumMetric() for row in SUM_ROWS for column in SUM_COLUMNS})
        self.attention = torch.nn.ModuleDict({name: SumMetric() for name in ("block_pairs", "full_pairs")})

    @property
    def teacher(self) -> BlockAttentionLM | None:
        """The frozen teacher, on the student's device and dtype (moved on first use after the student moved;
        under FSDP2, ``fully_shard`` places it)."""
        lm = self._frozen.get("teacher")
        if lm is not None and self.student is not None and self.device_mesh is None:
            like, own = next(self.student.parameters()), next(lm.parameters())
            if (own.device, own.dtype) != (like.device, like.dtype):
                lm.to(device=like.device, dtype=like.dtype)
        return lm

    def configure_model(self) -> None:
        if self.student is not None:
            return
        h = self.hparams
        dtype = DTYPES[h.dtype]
        # a plain dict entry, not `self.teacher = ...`: nn.Module would register the teacher as a submodule
        self._frozen["teacher"] = BlockAttentionLM.from_pretrained(h.teacher, num_sink_tokens=0,
                                                                   attn_backend=h.attn_backend, dtype=dtype)
        self.teacher.eval().requires_grad_(False)
        self.student = BlockAttentionLM.from_pretrained(h.student or h.teacher, num_sink_tokens=h.num_sink_tokens,
                                                        attn_backend=h.attn_backend, dtype=dtype)
        self.student.train()  # from_pretrained returns eval mode
        if h.lora_rank > 0:
            add_lora(self.student, h.lora_rank, h.lora_alpha, h.lora_target_modules)
        t_vocab, s_vocab = self.teacher.config.vocab_size, self.student.config.vocab_size
        if t_vocab != s_vocab:
            raise ValueError(f"teacher vocabulary ({t_vocab}) differs from the student's ({s_vocab})")
        if self.device_mesh is not None:  # ModelParallelStrategy: FSDP2, teacher and student in units of their own
            sharding = ShardingConfig(**(h.sharding or {}))
            shard_block_lm(self.student, data_parallel_mesh(self.device_mesh), sharding)
            shard_block_lm(self.teacher, data_parallel_mesh(self.device_mesh), sharding, frozen=True)
        if h.compile_layers:  # in place, after fully_shard
            for lm in (self.student, self.teacher):
                lm.compile_decoder_layers(compile_backend(h.compile_layers))

    # ---------------------------------------------------------------- pieces

    def sample_released(self, block_ids: torch.Tensor) -> torch.Tensor:
        """``[B, N]`` bool: each context block released with probability ``release_probability`` (training only)."""
        return sample_released(block_ids, self.release_probability if self.training else 0.0)

    @torch.no_grad()
    def teacher_hidden(self, batch: dict, block_attention: bool = False) -> torch.Tensor:
        """Teacher final hidden states ``[B, S, H]`` with full (default) or block attention."""
        if block_attention:
            return self.teacher.token_hidden_states(batch["input_ids"], batch["block_ids"], batch["attention_mask"])[0]
        return self.teacher.full_attention_hidden_states(batch["input_ids"], batch["attention_mask"])

    @property
    def step_settings(self) -> DistillSettings:
        h = self.hparams
        return DistillSettings(divergence=h.divergence, temperature=h.temperature, beta=h.beta, ce_weight=h.ce_weight,
                               isolated_weight=h.isolated_weight, chunk_size=h.chunk_size,
                               compile=compile_backend(h.compile_layers))

    # ---------------------------------------------------------------- steps

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = distillation_step(self.teacher, self.student, batch, self.sample_released(batch["block_ids"]),
                                 self.step_settings, self.sensitivity)
        size = batch["input_ids"].shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        self.log("train/release_probability", float(self.release_probability), batch_size=size)
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate(batch)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate(batch)

    @torch.no_grad()
    def _evaluate(self, batch: dict) -> None:
        """Sums over the scored (global-block) tokens of NLL and KL(teacher_full || .) for the student under block
        and full attention and the teacher under block attention, and the attention work of the layout."""
        ids, mask = batch["input_ids"], batch["attention_mask"]
        head_s, head_t = self.student.model.get_output_embeddings(), self.teacher.model.get_output_embeddings()
        t_full = self.teacher_hidden(batch)
        rows = {"student": self.student.token_hidden_states(ids, batch["block_ids"], mask)[0],  # nothing released
                "student_full": self.student.full_attention_hidden_states(ids, mask),
                "teacher_block": self.teacher_hidden(batch, block_attention=True), "teacher_full": t_full}
        for row, hidden in rows.items():
            head = head_t if row.startswith("teacher") else head_s
            for column, value in zip(SUM_COLUMNS, window_sums(hidden, head, t_full, head_t, batch).sum(0)):
                self.sums[f"{row}_{column}"].update(value.float())
        block_pairs, full_pairs = attended_pairs(batch["block_ids"], batch["attention_mask"])
        self.attention["block_pairs"].update(block_pairs.float())
        self.attention["full_pairs"].update(full_pairs.float())

    def _student_trained(self) -> bool:
        """Whether the student differs from its initialisation: fitting, or evaluating a loaded checkpoint."""
        trainer = self._trainer
        return trainer is None or trainer.state.fn == "fit" or trainer.ckpt_path is not None

    def _log_epoch(self, stage: str) -> None:
        """Per scored token: NLL and KL of each row, and the gap-closed metrics of ``lit_block.quality``."""
        sums = {key: float(m.compute()) for key, m in self.sums.items()}
        mean = {f"{c}_{row}": sums[f"{row}_{c}"] / max(sums[f"{row}_count"], 1.0) for row in SUM_ROWS for c in ("nll", "kl")}
        tf, tb, s_block, s_full = (mean[f"nll_{r}"] for r in ("teacher_full", "teacher_block", "student", "student_full"))
        values = {
            "kl_gap_closed": kl_gap_closed(mean["kl_student"], mean["kl_teacher_block"]),  # the primary metric
            "kl_teacher": mean["kl_student"], "kl_teacher_block": mean["kl_teacher_block"],
            "nll_student": s_block, "nll_student_full": s_full, "nll_teacher_full": tf, "nll_teacher_block": tb,
            "own_gap_closed": nll_gap_closed(s_block, s_full, tb, tf),
            "nll_gap_closed_vs_teacher": nll_gap_closed(s_block, tf, tb, tf),  # domain-sensitive: secondary
            "block_gap": tb - tf,  # what block attention costs the untrained teacher, nats per token
            "student_gap": s_block - tf,
        }
        if not self._student_trained():  # the teacher itself plus fresh sinks: nothing was trained to close a gap
            values = {k: v for k, v in values.items() if not k.endswith("gap_closed") and k != "student_gap"}
        for name, v in values.items():
            if v == v:  # a metric without a gap to close is nan: not logged
                self.log(f"{stage}/{name}", v)
        cost = self.attention["block_pairs"].compute() / self.attention["full_pairs"].compute().clamp(min=1)
        self.log(f"{stage}/attention_cost", cost)  # block attention's share of full attention's (query, key) pairs
        for m in (*self.sums.values(), *self.attention.values()):
            m.reset()

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    def configure_optimizers(self):
        h = self.hparams
        sinks = [self.student.sink_embeddings] if self.student.sink_embeddings.requires_grad else []
        rest = [p for n, p in self.student.named_parameters() if p.requires_grad and n != "sink_embeddings"]
        groups = [{"params": rest, "lr": h.learning_rate, "weight_decay": h.weight_decay}]
        if sinks and sinks[0].numel():
            groups.append({"params": sinks, "lr": h.sink_learning_rate, "weight_decay": 0.0})
        return optimizer_and_schedule(groups, LRSchedule(**(h.schedule or {})), self.trainer.estimated_stepping_batches)

    def export(self, folder: str) -> None:
        """Save the student for serving: ``BlockAttentionLM.from_pretrained(folder)`` loads it, sinks included
        (LoRA adapters are merged into a copy of the weights first)."""
        self.plain_student().save_pretrained(folder)

    def plain_student(self) -> BlockAttentionLM:
        """The student as a plain ``BlockAttentionLM`` (what ``export`` saves): with LoRA, a copy whose adapters are
        merged into the weights, so its state dict loads into a model built without peft."""
        return merged_lora_copy(self.student) if self.hparams.lora_rank > 0 else self.student
