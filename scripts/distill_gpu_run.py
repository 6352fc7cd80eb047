"""Block distillation vs block fine-tuning on a GPU machine that has no registry access.

The lent GPU image lacks datasets, mlflow and jsonargparse and cannot fetch the teacher, so this
driver runs the same LightningModules and callbacks as ``experiments/distill/*.yaml`` without the
CLI: the SmolLM2 GGUF arrives in two parts (reassembled and converted here), and the samples are
the ``DistillDataModule`` samples prepared on a CPU machine (``torch.save``d token ids and block ids).

    python scripts/distill_gpu_run.py GGUF_PART [GGUF_PART ...] --samples samples.pt --steps 300

Prints one table (global-block NLL, KL to the teacher, gap recovered, tokens, wall time per
variant) and writes it as JSON to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader

from callbacks import AttentionSensitivityWeighting, BlockDropoutScheduler, SinkTokenInitializer
from lit_block.evaluation_lm import score
from lit_block.model import BlockAttentionLM
from lit_block.model_sources import _convert_gguf
from lit_block.modules import BlockDistillationModule, BlockFinetuneModule


def batches(samples: dict, batch_size: int, shuffle: bool) -> DataLoader:
    ids, blocks = samples["input_ids"].long(), samples["block_ids"].long()
    target = blocks < 0
    target &= torch.roll(target, 1, dims=1)  # global-block tokens after its first are scored
    rows = [{"input_ids": i, "block_ids": b, "attention_mask": torch.ones_like(i), "target_mask": t}
            for i, b, t in zip(ids, blocks, target)]
    return DataLoader(rows, batch_size=batch_size, shuffle=shuffle, generator=torch.Generator().manual_seed(0))


def variants(teacher: str) -> dict[str, tuple]:
    dropout = lambda: BlockDropoutScheduler(0.0, 0.3, "linear")  # noqa: E731
    weights = lambda: AttentionSensitivityWeighting(1.0, 0.1, 10.0)  # noqa: E731
    distill = dict(teacher=teacher, attn_backend="sdpa", isolated_weight=0.1, learning_rate=2e-5)
    return {
        "distill (full)": (BlockDistillationModule, dict(distill, num_sink_tokens=2),
                           lambda: [SinkTokenInitializer("bos"), dropout(), weights()]),
        "distill - no sinks": (BlockDistillationModule, dict(distill, num_sink_tokens=0), lambda: [dropout(), weights()]),
        "distill - no dropout": (BlockDistillationModule, dict(distill, num_sink_tokens=2),
                                 lambda: [SinkTokenInitializer("bos"), weights()]),
        "distill - no weighting": (BlockDistillationModule, dict(distill, num_sink_tokens=2),
                                   lambda: [SinkTokenInitializer("bos"), dropout()]),
        "block fine-tuning": (BlockFinetuneModule, dict(model_name_or_path=teacher, attn_backend="sdpa",
                                                        learning_rate=2e-5, eval_full_attention=False), list),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("parts", nargs="+")
    p.add_argument("--samples", required=True)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--only", nargs="*", help="variant names to run (default: all)")
    p.add_argument("--out", default="distill_gpu_run.json")
    p.add_argument("--accelerator", default="gpu")
    p.add_argument("--precision", default="bf16-mixed")
    p.add_argument("--max-val", type=int, default=None, help="validate on this many samples")
    args = p.parse_args()
    folder = Path("/tmp/smollm2-135m")
    if not (folder / "config.json").is_file():
        gguf = Path("/tmp/SmolLM2-135M-Instruct.Q4_1.gguf")
        gguf.write_bytes(b"".join(Path(part).read_bytes() for part in args.parts))
        _convert_gguf(gguf, folder)
    samples = torch.load(args.samples)
    if args.max_val:
        samples["val"] = {k: v[: args.max_val] for k, v in samples["val"].items()}
    val = batches(samples["val"], args.batch_size, shuffle=False)
    torch.set_float32_matmul_precision("high")
    results = {}
    device = "cuda" if args.accelerator == "gpu" else "cpu"
    ood = list(batches(samples["ood"], 1, shuffle=False)) if "ood" in samples else []
    ood = [{k: v.to(device) for k, v in b.items()} for b in ood]
    teacher = BlockAttentionLM.from_pretrained(str(folder), num_sink_tokens=0, dtype=torch.float32).to(device).eval()
    if ood:  # out-of-corpus references: 2k tokens, 256-token blocks, 256-token global block
        results["ood: teacher, full attention"] = score(teacher, teacher, ood, full_attention=True)
        results["ood: teacher, block attention (untrained)"] = score(teacher, teacher, ood)
    # references: the teacher with full and with block attention, from an untrained distillation module
    ref = BlockDistillationModule(teacher=str(folder), attn_backend="sdpa", num_sink_tokens=0)
    trainer = L.Trainer(accelerator=args.accelerator, devices=1, precision=args.precision, logger=False,
                        enable_progress_bar=False)
    ref_metrics = trainer.validate(ref, dataloaders=val, verbose=False)[0]
    nll_full, nll_block = ref_metrics["val/nll_teacher_full"], ref_metrics["val/nll_teacher_block"]
    results["teacher, full attention"] = {"nll": nll_full, "gap_recovered": 1.0}
    results["teacher, block attention (untrained)"] = {"nll": nll_block, "gap_recovered": 0.0}
    for name, (cls, kwargs, make_callbacks) in variants(str(folder)).items():
        if args.only and name not in args.only:
            continue
        torch.manual_seed(0)
        module = cls(**kwargs)
        curve = []

        class Curve(L.Callback):
            def on_validation_end(self, trainer, pl_module):  # after the module logged its epoch metrics
                m = trainer.callback_metrics
                nll = float(m.get("val/nll_student", m.get("val/nll_block", float("nan"))))
                curve.append({"step": trainer.global_step, "tokens": trainer.global_step * args.batch_size * 1024,
                              "seconds": time.perf_counter() - start, "nll": nll,
                              "gap_recovered": (nll_block - nll) / (nll_block - nll_full)})

        trainer = L.Trainer(accelerator=args.accelerator, devices=1, precision=args.precision, max_steps=args.steps,
                            val_check_interval=args.eval_every, check_val_every_n_epoch=None, logger=False,
                            enable_checkpointing=False, enable_progress_bar=False, num_sanity_val_steps=0,
                            callbacks=[*make_callbacks(), Curve()], gradient_clip_val=1.0)
        start = time.perf_counter()
        trainer.fit(module, train_dataloaders=batches(samples["train"], args.batch_size, True), val_dataloaders=val)
        final = curve[-1]
        kl = trainer.callback_metrics.get("val/kl_teacher")
        results[name] = {**final, "kl_teacher": float(kl) if kl is not None else None, "curve": curve}
        print(f"{name}: {final}", flush=True)
        if ood:
            student = (module.student if isinstance(module, BlockDistillationModule) else module.lm).to(device).float()
            results[f"ood: {name}"] = score(student.eval(), teacher, ood)
            print(f"ood {name}: {results[f'ood: {name}']}", flush=True)
    if ood:
        full = results["ood: teacher, full attention"]["nll"]
        block = results["ood: teacher, block attention (untrained)"]["nll"]
        for key, r in results.items():
            if key.startswith("ood: "):
                r["gap_recovered"] = (block - r["nll"]) / (block - full)
    Path(args.out).write_text(json.dumps(results, indent=1))
    print("\n| model | global-block NLL | gap recovered | KL to teacher | steps | tokens | seconds |\n|---|---|---|---|---|---|---|")
    for name, r in results.items():
        kl = f"{r['kl_teacher']:.4f}" if r.get("kl_teacher") is not None else "-"
        if name.startswith("ood: "):
            r = {**r, "step": "-", "tokens": r["tokens"], "seconds": 0}
        print(f"| {name} | {r['nll']:.4f} | {100 * r['gap_recovered']:.1f}% | {kl} | {r.get('step', '-')} | "
              f"{r.get('tokens', '-')} | {r.get('seconds', 0):.0f} |")


if __name__ == "__main__":
    main()
