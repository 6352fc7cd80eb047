"""FSDP2 block distillation through Lightning's ModelParallelStrategy: train, save a sharded checkpoint, resume.

    torchrun --nproc_per_node 2 scripts/fsdp_check.py --teacher TEACHER --out result.json            # CPU (gloo)
    torchrun --nproc_per_node 2 scripts/fsdp_check.py --teacher TEACHER --accelerator gpu --out r.json \
        --config experiments/strategies/fsdp2.yaml                                                 # GPUs, the shipped config

Three runs of the same seed and data: an uninterrupted run of ``--steps`` steps; a run stopped
half-way that saves a sharded (distributed) checkpoint; and a fresh run resumed from that checkpoint.
Rank 0 writes what a reviewer needs as JSON: the loss per step of each run (the resumed curve must
continue the uninterrupted one), the checkpoint's files and keys (shards per rank, no teacher), the
FSDP units, and which parameters train; and the uninterrupted run's speed (median step time after
the first two steps, tokens/s per GPU) and each rank's peak GPU memory. ``--config`` takes the
trainer's precision, gradient clipping and strategy and the model's sharding settings from a
strategy YAML (the same keys ``lit-block fit`` reads), so the shipped overlay is what runs.
The data is the bundled public-domain text in fixed blocks.

Resuming is checked twice: the resumed run must start from exactly the state (student parameters and
optimizer state, by checksum) the checkpoint was saved from, and its loss curve must continue the
uninterrupted one. On CPUs the curves agree bitwise. On GPUs two fresh runs of the same seed already
differ slightly (atomics in attention and embedding backward passes; ``--deterministic`` removes
what it can), and a high ``--lr`` amplifies that: ``max_abs_diff_between_fresh_runs`` says how much
of a curve difference is that noise rather than the checkpoint.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import time
from pathlib import Path

import lightning as L
import torch


class LossRecorder(L.Callback):
    """Loss and wall time of every step (synchronized on GPUs), and checksums of the trained state where a run
    starts and ends (the resumed run must start from exactly the state its checkpoint was saved from)."""

    def __init__(self):
        self.losses: dict[int, float] = {}
        self.seconds: list[float] = []
        self.started = 0.0
        self.state_at_start: dict = {}
        self.state_at_end: dict = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.started = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses[trainer.global_step] = float(outputs["loss"])  # a host sync: the step has finished
        self.seconds.append(time.perf_counter() - self.started)
        if os.environ.get("FSDP_CHECK_DEBUG"):
            print(f"rank {trainer.global_rank} step {trainer.global_step} epoch {trainer.current_epoch} batch {batch_idx} "
                  f"ids {int(batch['input_ids'].sum())} "
                  f"loss {float(outputs['loss']):.6f} state {checksums(pl_module, trainer)}", flush=True)

    def on_train_start(self, trainer, pl_module) -> None:
        self.state_at_start = {"step": trainer.global_step, **checksums(pl_module, trainer)}

    def on_train_end(self, trainer, pl_module) -> None:
        self.state_at_end = {"step": trainer.global_step, **checksums(pl_module, trainer)}


def checksums(pl_module, trainer) -> dict:
    """Sums of the student's gathered parameters and of this rank's optimizer state (a collective: all ranks call it)."""
    def full(t):
        return t.full_tensor() if hasattr(t, "full_tensor") else t  # a collective for DTensors: every rank calls it

    sums = {"sinks": float(full(pl_module.student.sink_embeddings).float().sum()),
            "params": float(sum(full(q).float().abs().sum() for q in pl_module.student.parameters()))}
    state = trainer.optimizers[0].state if trainer.optimizers else {}
    local = [v.to_local() if hasattr(v, "to_local") else v for s in state.values() for v in s.values() if torch.is_tensor(v)]
    sums["optimizer_local"] = float(sum(v.float().abs().sum() for v in local)) if local else 0.0
    return sums


def run(args, steps: int, ckpt_in: str | None = None, save_every: int | None = None):
    """One training run. An epoch is ``steps // 2`` batches, so the half-way checkpoint (saved by ModelCheckpoint
    during training, as a real run saves them) ends an epoch and the resumed run sees the same batches as the
    uninterrupted one (the loaders are not resumable mid-epoch)."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    from callbacks import AttentionSensitivityWeighting, SinkTokenInitializer
    from datamodules import TextBlocksDataModule
    from lit_block.modules import BlockDistillationModule
    from lit_block.sharding import ShardingConfig

    L.seed_everything(0, verbose=False)
    settings = strategy_settings(args)
    sharding = ShardingConfig(**settings["sharding"])
    module = BlockDistillationModule(teacher=args.teacher, num_sink_tokens=2, attn_backend="sdpa", isolated_weight=0.1,
                                     learning_rate=args.lr, sharding=sharding,
                                     compile_layers=args.compile_layers or False)
    data = TextBlocksDataModule(tokenizer=args.teacher, sample_tokens=args.sample_tokens, block_tokens=32,
                                global_tokens=args.sample_tokens // 4, batch_size=1, max_samples=64)
    recorder = LossRecorder()
    trainer = L.Trainer(accelerator=args.accelerator, devices=int(os.environ.get("LOCAL_WORLD_SIZE", 1)),
                        strategy=settings["strategy"], max_steps=steps, limit_train_batches=args.steps // 2,
                        precision=settings["precision"], gradient_clip_val=settings["gradient_clip_val"], logger=False,
                        enable_checkpointing=bool(save_every), enable_progress_bar=False, limit_val_batches=0,
                        callbacks=[SinkTokenInitializer("bos"), AttentionSensitivityWeighting(), recorder] + (
                            [ModelCheckpoint(dirpath=args.workdir, filename="half", every_n_train_steps=save_every,
                                             save_top_k=-1, enable_version_counter=False)] if save_every else []))
    trainer.fit(module, datamodule=data, ckpt_path=ckpt_in)
    return trainer, module, recorder


def strategy_settings(args) -> dict:
    """Strategy, precision, clipping and sharding: from ``--config`` (a strategy YAML), else the defaults below."""
    import yaml
    from lightning.pytorch.strategies import ModelParallelStrategy

    settings = {"precision": "32-true", "gradient_clip_val": 1.0,
                "sharding": {"param_dtype": args.param_dtype, "activation_checkpointing": True},
                "strategy": ModelParallelStrategy(data_parallel_size=int(os.environ.get("WORLD_SIZE", 1)),
                                                  tensor_parallel_size=1, save_distributed_checkpoint=True)}
    if not args.config:
        return settings
    config = yaml.safe_load(Path(args.config).read_text())
    trainer = config.get("trainer", {})
    for key in ("precision", "gradient_clip_val"):
        settings[key] = trainer.get(key, settings[key])
    spec = trainer.get("strategy")
    if not isinstance(spec, dict) or "class_path" not in spec:
        raise ValueError(f"{args.config}: trainer.strategy must be a class_path with init_args, got {spec!r}")
    module_name, _, class_name = spec["class_path"].rpartition(".")
    settings["strategy"] = getattr(importlib.import_module(module_name), class_name)(**spec.get("init_args", {}))
    settings["sharding"] = config.get("model", {}).get("init_args", {}).get("sharding", settings["sharding"])
    return settings


def speed_and_memory(args, seconds: list[float]) -> dict:
    """The run's median step time (first two steps are warm-up) and every rank's peak GPU memory."""
    steady = seconds[2:] or seconds
    step_s = statistics.median(steady)
    peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else 0.0
    peaks = [peak]
    if torch.distributed.is_initialized():
        peaks = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(peaks, peak)
    return {"sample_tokens": args.sample_tokens, "step_s_median": step_s,
            "tokens_per_s_per_gpu": args.sample_tokens / step_s, "peak_gpu_memory_gib_per_rank": peaks}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", required=True, help="a model folder or embedded name")
    p.add_argument("--accelerator", default="cpu")
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--sample-tokens", type=int, default=128)
    p.add_argument("--param-dtype", default="float32", help="FSDP2 compute dtype (bfloat16 on GPUs) without --config")
    p.add_argument("--config", default=None, help="a strategy YAML, e.g. experiments/strategies/fsdp2.yaml")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--compile-layers", default=None, help="torch.compile backend for every decoder layer (inductor)")
    p.add_argument("--deterministic", action=argparse.BooleanOptionalAction, default=True,
                   help="torch.use_deterministic_algorithms (warn-only) so that GPU runs repeat bitwise where they can")
    p.add_argument("--workdir", default="fsdp_check")
    p.add_argument("--out", default="fsdp_check.json")
    args = p.parse_args()
    if args.deterministic:  # cuBLAS repeats its reductions only with a fixed workspace, set before its first use
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(args.deterministic, warn_only=True)  # GPU backward passes use atomics otherwise
    half = args.steps // 2
    ckpt = str(Path(args.workdir) / "half.ckpt")
    uninterrupted = run(args, args.steps)[2]
    speed = speed_and_memory(args, uninterrupted.seconds)
    halted = run(args, half, save_every=half)[2]
    trainer, resumed_module, resumed = run(args, args.steps, ckpt_in=ckpt)
    if trainer.global_rank != 0:
        return
    from torch.distributed.checkpoint import FileSystemReader

    from lit_block.sharding import decoder_layers

    keys = sorted(FileSystemReader(ckpt).read_metadata().state_dict_metadata)
    student_units = [type(m).__name__ for m in decoder_layers(resumed_module.student.model)]
    result = {
        "world_size": trainer.world_size,
        "uninterrupted": uninterrupted.losses,
        "halted": halted.losses,
        "resumed": resumed.losses,
        "max_abs_diff_after_resume": max(abs(uninterrupted.losses[s] - resumed.losses[s]) for s in resumed.losses),
        # the direct test of resuming: the state the resumed run starts from is the one the checkpoint was saved from
        "state_at_checkpoint": halted.state_at_end,
        "state_at_resume": resumed.state_at_start,
        "resume_state_exact": halted.state_at_end == resumed.state_at_start,
        # same seed, same data: differences here (GPU nondeterminism) are what a resumed curve can differ by
        "max_abs_diff_between_fresh_runs": max(abs(uninterrupted.losses[s] - halted.losses[s]) for s in halted.losses),
        "checkpoint_files": sorted(f.name for f in Path(ckpt).iterdir()),
        "checkpoint_keys": len(keys),
        "teacher_keys_in_checkpoint": [k for k in keys if "teacher" in k],
        "optimizer_keys_in_checkpoint": sum(k.startswith("optimizer_0") for k in keys),
        "student_fsdp_units": len(student_units) + 1,
        "student_unit_class": student_units[0],
        "teacher_is_sharded": type(resumed_module.teacher).__name__.startswith("FSDP"),
        "trainable": sorted({n.split(".")[0] for n, q in resumed_module.named_parameters() if q.requires_grad}),
        "parameter_types": sorted({type(q).__name__ for q in resumed_module.parameters()}),
        "config": args.config,
        "strategy": type(trainer.strategy).__name__,
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        **speed,
    }
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
