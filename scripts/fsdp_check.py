"""FSDP2 block distillation through Lightning's ModelParallelStrategy: train, save a sharded checkpoint, resume.

    torchrun --nproc_per_node 2 scripts/fsdp_check.py --teacher TEACHER --out result.json            # CPU (gloo)
    torchrun --nproc_per_node 2 scripts/fsdp_check.py --teacher TEACHER --accelerator gpu --out r.json   # GPUs

Three runs of the same seed and data: an uninterrupted run of ``--steps`` steps; a run stopped
half-way that saves a sharded (distributed) checkpoint; and a fresh run resumed from that checkpoint.
Rank 0 writes what a reviewer needs as JSON: the loss per step of each run (the resumed curve must
continue the uninterrupted one), the checkpoint's files and keys (shards per rank, no teacher), the
FSDP units, and which parameters train. The data is the bundled public-domain text in fixed blocks.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import lightning as L
import torch


class LossRecorder(L.Callback):
    def __init__(self):
        self.losses: dict[int, float] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses[trainer.global_step] = float(outputs["loss"])
        if os.environ.get("FSDP_CHECK_DEBUG"):
            print(f"rank {trainer.global_rank} step {trainer.global_step} epoch {trainer.current_epoch} batch {batch_idx} "
                  f"ids {int(batch['input_ids'].sum())} loss {float(outputs['loss']):.6f}", flush=True)


def run(args, steps: int, ckpt_in: str | None = None, save_every: int | None = None):
    """One training run. An epoch is ``steps // 2`` batches, so the half-way checkpoint (saved by ModelCheckpoint
    during training, as a real run saves them) ends an epoch and the resumed run sees the same batches as the
    uninterrupted one (the loaders are not resumable mid-epoch)."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    from lightning.pytorch.strategies import ModelParallelStrategy

    from callbacks import AttentionSensitivityWeighting, SinkTokenInitializer
    from datamodules import TextBlocksDataModule
    from lit_block.modules import BlockDistillationModule
    from lit_block.sharding import ShardingConfig

    L.seed_everything(0, verbose=False)
    sharding = ShardingConfig(param_dtype=args.param_dtype, activation_checkpointing=True)
    module = BlockDistillationModule(teacher=args.teacher, num_sink_tokens=2, attn_backend="sdpa", isolated_weight=0.1,
                                     learning_rate=1e-3, sharding=sharding)
    data = TextBlocksDataModule(tokenizer=args.teacher, sample_tokens=args.sample_tokens, block_tokens=32,
                                global_tokens=args.sample_tokens // 4, batch_size=1, max_samples=64)
    recorder = LossRecorder()
    strategy = ModelParallelStrategy(data_parallel_size=int(os.environ.get("WORLD_SIZE", 1)), tensor_parallel_size=1,
                                     save_distributed_checkpoint=True)
    trainer = L.Trainer(accelerator=args.accelerator, devices=int(os.environ.get("LOCAL_WORLD_SIZE", 1)),
                        strategy=strategy, max_steps=steps, limit_train_batches=args.steps // 2, precision="32-true", gradient_clip_val=1.0, logger=False,
                        enable_checkpointing=bool(save_every), enable_progress_bar=False, limit_val_batches=0,
                        callbacks=[SinkTokenInitializer("bos"), AttentionSensitivityWeighting(), recorder] + (
                            [ModelCheckpoint(dirpath=args.workdir, filename="half", every_n_train_steps=save_every,
                                             save_top_k=-1, enable_version_counter=False)] if save_every else []))
    trainer.fit(module, datamodule=data, ckpt_path=ckpt_in)
    return trainer, module, recorder.losses


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", required=True, help="a model folder or embedded name")
    p.add_argument("--accelerator", default="cpu")
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--sample-tokens", type=int, default=128)
    p.add_argument("--param-dtype", default="float32", help="FSDP2 compute dtype (bfloat16 on GPUs)")
    p.add_argument("--workdir", default="fsdp_check")
    p.add_argument("--out", default="fsdp_check.json")
    args = p.parse_args()
    half = args.steps // 2
    ckpt = str(Path(args.workdir) / "half.ckpt")
    _, module, uninterrupted = run(args, args.steps)
    run(args, half, save_every=half)
    trainer, resumed_module, resumed = run(args, args.steps, ckpt_in=ckpt)
    if trainer.global_rank != 0:
        return
    from torch.distributed.checkpoint import FileSystemReader

    from lit_block.sharding import decoder_layers

    keys = sorted(FileSystemReader(ckpt).read_metadata().state_dict_metadata)
    student_units = [type(m).__name__ for m in decoder_layers(resumed_module.student.model)]
    result = {
        "world_size": trainer.world_size,
        "uninterrupted": uninterrupted,
        "resumed": resumed,
        "max_abs_diff_after_resume": max(abs(uninterrupted[s] - resumed[s]) for s in resumed),
        "checkpoint_files": sorted(f.name for f in Path(ckpt).iterdir()),
        "checkpoint_keys": len(keys),
        "teacher_keys_in_checkpoint": [k for k in keys if "teacher" in k],
        "optimizer_keys_in_checkpoint": sum(k.startswith("optimizer_0") for k in keys),
        "student_fsdp_units": len(student_units) + 1,
        "student_unit_class": student_units[0],
        "teacher_is_sharded": type(resumed_module.teacher).__name__.startswith("FSDP"),
        "trainable": sorted({n.split(".")[0] for n, q in resumed_module.named_parameters() if q.requires_grad}),
        "parameter_types": sorted({type(q).__name__ for q in resumed_module.parameters()}),
    }
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
