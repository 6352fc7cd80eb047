"""Block distillation variants vs block fine-tuning, several seeds, on a GPU machine without registry access.

The lent GPU image lacks datasets, mlflow and jsonargparse and cannot fetch the teacher, so this
driver runs the same LightningModules and callbacks as ``experiments/distill/*.yaml`` without the
CLI: the SmolLM2 GGUF arrives in parts (reassembled and converted once), and the samples come from
``scripts/prepare_distill_samples.py`` (``DistillDataModule`` samples made on a CPU machine).

    python scripts/distill_gpu_run.py GGUF_PART [GGUF_PART ...] --samples .gpu/samples.pt \\
        --steps 250 --seeds 0 1 --parallel 6 --out results.json

Each (variant, seed) trains in its own process (``--parallel`` at once: a 135M model leaves the GPU
mostly idle, so processes overlap), then every trained model is scored with ``lit-block eval-lm``'s
``score`` on the held-out validation samples and on the out-of-corpus samples: global-block NLL,
KL to the full-attention teacher and the metrics of ``lit_block.quality`` (KL gap closed first); and,
when the samples file holds RAG samples, with ``lit-block eval-rag``'s ``run_rag`` (every passage a
cached block). Prints the tables (mean over seeds, and each seed) and writes all as JSON to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

LR_MARK = " @ lr="  # a variant's name, this mark and a learning rate: the variant trained at that rate
TEACHER_DIR = Path(os.environ.get("LIT_BLOCK_TEACHER_DIR", "/tmp/smollm2-135m"))  # the converted teacher


def batches(split: dict, batch_size: int, shuffle: bool, seed: int = 0):
    """A DataLoader of packed-sample dicts; the global block's tokens after its first are scored."""
    from torch.utils.data import DataLoader

    ids, blocks = split["input_ids"].long(), split["block_ids"].long()
    target = blocks < 0
    target &= torch.roll(target, 1, dims=1)
    rows = [{"input_ids": i, "block_ids": b, "attention_mask": torch.ones_like(i), "target_mask": t}
            for i, b, t in zip(ids, blocks, target)]
    return DataLoader(rows, batch_size=batch_size, shuffle=shuffle, generator=torch.Generator().manual_seed(seed))


def variants(teacher: str) -> dict[str, tuple]:
    """name -> (module class, its kwargs, a function making its callbacks): the YAML experiments' settings."""
    from callbacks import AttentionSensitivityWeighting, BlockDropoutScheduler, SinkTokenInitializer
    from lit_block.modules import BlockDistillationModule, BlockFinetuneModule

    def dropout():
        return BlockDropoutScheduler(0.0, 0.3, "linear")

    def weights():
        return AttentionSensitivityWeighting(1.0, 0.1, 10.0)

    def sinks():
        return SinkTokenInitializer("bos")

    distill = dict(teacher=teacher, attn_backend="sdpa", isolated_weight=0.1, learning_rate=2e-5)
    return {
        "distill (full)": (BlockDistillationModule, dict(distill, num_sink_tokens=2),
                           lambda: [sinks(), dropout(), weights()]),
        "distill - no sinks": (BlockDistillationModule, dict(distill, num_sink_tokens=0), lambda: [dropout(), weights()]),
        "distill - no dropout": (BlockDistillationModule, dict(distill, num_sink_tokens=2), lambda: [sinks(), weights()]),
        "distill - no weighting": (BlockDistillationModule, dict(distill, num_sink_tokens=2), lambda: [sinks(), dropout()]),
        "distill (full) + CE 0.5": (BlockDistillationModule, dict(distill, num_sink_tokens=2, ce_weight=0.5),
                                    lambda: [sinks(), dropout(), weights()]),
        "block fine-tuning": (BlockFinetuneModule, dict(model_name_or_path=teacher, attn_backend="sdpa",
                                                        learning_rate=2e-5, eval_full_attention=False), list),
    }


def prepare_teacher(parts: list[str]) -> None:
    """Reassemble the GGUF from its parts and convert it once to a plain HF folder."""
    from lit_block.model_sources import _convert_gguf

    if (TEACHER_DIR / "config.json").is_file():
        return
    gguf = Path("/tmp/SmolLM2-135M-Instruct.Q4_1.gguf")
    gguf.write_bytes(b"".join(Path(part).read_bytes() for part in parts))
    _convert_gguf(gguf, TEACHER_DIR)


def load_teacher(device: str):
    from lit_block.model import BlockAttentionLM

    return BlockAttentionLM.from_pretrained(str(TEACHER_DIR), num_sink_tokens=0, dtype=torch.float32).to(device).eval()


def to_device(loader, device: str) -> list[dict]:
    return [{k: v.to(device) for k, v in b.items()} for b in loader]


def run_worker(args, variant: str, seed: int) -> dict:
    """Train one variant with one seed, then score it on the validation and out-of-corpus samples."""
    import lightning as L

    from lit_block.evaluation_lm import compare_to_teacher
    from lit_block.modules import BlockDistillationModule

    samples = torch.load(args.samples, weights_only=True)  # no code runs (torch < 2.6 defaulted to False)
    base, _, rate = variant.partition(LR_MARK)  # "distill (full) @ lr=1e-4": the variant at another learning rate
    cls, kwargs, make_callbacks = variants(str(TEACHER_DIR))[base]
    if rate:
        kwargs = {**kwargs, "learning_rate": float(rate)}
    L.seed_everything(seed, verbose=False)
    module = cls(**kwargs)
    trainer = L.Trainer(accelerator=args.device, devices=1, precision=args.precision, max_steps=args.steps, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, limit_val_batches=0,
                        callbacks=make_callbacks(), gradient_clip_val=1.0)
    start = time.perf_counter()
    trainer.fit(module, train_dataloaders=batches(samples["train"], args.batch_size, True, seed))
    seconds = time.perf_counter() - start
    student = module.student if isinstance(module, BlockDistillationModule) else module.lm
    student = student.to(args.device).float().eval()  # Lightning moves the module back to the CPU after fit
    teacher = load_teacher(args.device)
    out = {"variant": variant, "seed": seed, "steps": trainer.global_step, "seconds": seconds,
           "tokens": trainer.global_step * args.batch_size * samples["train"]["input_ids"].shape[1],
           "val": compare_to_teacher(teacher, {"student": student}, to_device(batches(samples["val"], args.batch_size,
                                                                                       False), args.device))["student"]}
    if "ood" in samples:
        out["ood"] = compare_to_teacher(teacher, {"student": student},
                                        to_device(batches(samples["ood"], 1, False), args.device))["student"]
    if samples.get("rag") and seed == args.rag_seed:
        student.tokenizer = teacher.tokenizer
        out["rag"] = rag_scores(student, samples["rag"], full_attention=False)
    return out


def rag_scores(model, rows: list[dict], full_attention: bool) -> dict:
    """``lit-block eval-rag``'s scores of one model on RAG samples given as dicts."""
    from lit_block.rag import RagSample
    from lit_block.rag.evaluation import run_rag
    from lit_block.rag.prompt import TEMPLATES, RagPrompt, default_template

    prompt = RagPrompt(*TEMPLATES[default_template(model.tokenizer)])
    result = run_rag(model, [RagSample(**r) for r in rows], prompt, max_new_tokens=24, full_attention=full_attention)
    return {k: v for k, v in result.items() if k != "answers"} | {"answers": result["answers"][:20]}


def references(args) -> dict:
    """The teacher with full attention and under block attention (untrained), on each evaluation split."""
    from lit_block.evaluation_lm import TEACHER_BLOCK, TEACHER_FULL, compare_to_teacher

    samples = torch.load(args.samples, weights_only=True)  # no code runs (torch < 2.6 defaulted to False)
    teacher = load_teacher(args.device)
    refs = {}
    for split, bs in (("val", args.batch_size), ("ood", 1)):
        if split in samples:
            data = to_device(batches(samples[split], bs, False), args.device)
            rows = compare_to_teacher(teacher, {}, data)
            refs[split] = {"full": rows[TEACHER_FULL], "block": rows[TEACHER_BLOCK]}
    if samples.get("rag"):
        refs["rag"] = {"full": rag_scores(teacher, samples["rag"], True), "block": rag_scores(teacher, samples["rag"], False)}
    return refs


def launch(args, jobs: list[tuple[str, int]], folder: Path) -> None:
    """Run the jobs as worker processes, ``--parallel`` at a time, until done or ``--deadline-s``."""
    env = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONUNBUFFERED": "1"}
    pending, running, t0 = list(jobs), [], time.monotonic()
    while pending or running:
        while pending and len(running) < args.parallel:
            variant, seed = pending.pop(0)
            out = folder / f"{len(jobs) - len(pending)}.json"
            cmd = [sys.executable, __file__, "--worker", variant, str(seed), "--worker-out", str(out),
                   "--samples", args.samples, "--steps", str(args.steps), "--batch-size", str(args.batch_size),
                   "--precision", args.precision, "--device", args.device, "--rag-seed", str(args.rag_seed)]
            log = open(folder / f"{out.stem}.log", "w")
            running.append((subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT), variant, seed))
        time.sleep(2)
        for proc, variant, seed in list(running):
            if proc.poll() is not None:
                running.remove((proc, variant, seed))
                print(f"[{time.monotonic() - t0:5.0f}s] {variant}, seed {seed}: exit {proc.returncode}", flush=True)
                if proc.returncode:  # show why a worker failed
                    print(Path(proc.args[proc.args.index("--worker-out") + 1]).with_suffix(".log").read_text()[-3000:])
        if time.monotonic() - t0 > args.deadline_s:
            for proc, variant, seed in running:
                proc.kill()
                print(f"deadline: killed {variant}, seed {seed}", flush=True)
            print(f"deadline: {len(pending)} jobs never started", flush=True)
            return


def summarize(refs: dict, results: list[dict]) -> str:
    """Markdown table: per variant, mean over seeds with a 95% t interval (and each seed's value), KL gap closed first."""
    from lit_block.quality import mean_interval

    def cell(values: list[float], fmt: str, scale: float = 1.0, unit: str = "") -> str:
        mean, low, high = mean_interval([scale * v for v in values])
        each = "/".join(format(scale * v, fmt) for v in values)
        ci = f" [{format(low, fmt)}, {format(high, fmt)}]" if len(values) > 1 else ""
        return f"{format(mean, fmt)}{unit}{ci} ({each})" if len(values) > 1 else f"{format(mean, fmt)}{unit}"

    figures = (("kl_gap_closed", ".1f", 100, "%"), ("kl_teacher", ".4f", 1, ""), ("own_gap_closed", ".1f", 100, "%"),
               ("nll", ".4f", 1, ""), ("nll_gap_closed_vs_teacher", ".1f", 100, "%"))
    header = [f"{split} {name}" for split in ("val", "ood") for name in
              ("KL gap closed", "KL to teacher", "own gap closed", "NLL", "NLL gap closed vs teacher (domain)")]
    lines = ["| model | seeds | " + " | ".join(header) + " | train s |", "|---" * (len(header) + 3) + "|"]
    for name, key in (("teacher, full attention", "full"), ("teacher, block attention (untrained)", "block")):
        row = [name, "-"]
        for split in ("val", "ood"):
            r = refs.get(split, {}).get(key)
            row += ["-"] * len(figures) if r is None else [
                "-" if r.get(k) is None else format(scale * r[k], fmt) + unit for k, fmt, scale, unit in figures]
        lines.append("| " + " | ".join(row + ["-"]) + " |")
    by_variant: dict[str, list[dict]] = {}
    for r in sorted(results, key=lambda r: r["seed"]):
        by_variant.setdefault(r["variant"], []).append(r)
    for variant, runs in by_variant.items():
        row = [variant, ",".join(str(r["seed"]) for r in runs)]
        for split in ("val", "ood"):
            rs = [r[split] for r in runs if split in r]
            row += [cell([r[k] for r in rs], fmt, scale, unit) for k, fmt, scale, unit in figures] if rs \
                else ["-"] * len(figures)
        row.append(f"{statistics.fmean(r['seconds'] for r in runs):.0f}")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("parts", nargs="*", help="the GGUF's parts, in order (not needed once converted)")
    p.add_argument("--samples", required=True)
    p.add_argument("--steps", type=int, default=250)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--only", nargs="*", help="variant names to run (default: all)")
    p.add_argument("--learning-rates", type=float, nargs="*", default=[],
                   help="train each chosen variant at each of these learning rates (default: the variant's own)")
    p.add_argument("--parallel", type=int, default=6)
    p.add_argument("--deadline-s", type=float, default=480, help="kill workers still running after this")
    p.add_argument("--precision", default="bf16-mixed")
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    p.add_argument("--rag-seed", type=int, default=None, help="score RAG for the runs of this seed (default: first)")
    p.add_argument("--out", default="distill_gpu_run.json")
    p.add_argument("--work-dir", default="/tmp/distill_runs", help="per-run results and logs")
    p.add_argument("--worker", nargs=2, metavar=("VARIANT", "SEED"), help=argparse.SUPPRESS)
    p.add_argument("--worker-out", help=argparse.SUPPRESS)
    args = p.parse_args()
    torch.set_float32_matmul_precision("high")
    if args.worker:
        result = run_worker(args, args.worker[0], int(args.worker[1]))
        Path(args.worker_out).write_text(json.dumps(result))
        return
    prepare_teacher(args.parts)
    args.rag_seed = args.seeds[0] if args.rag_seed is None else args.rag_seed
    names = list(variants(str(TEACHER_DIR)))
    unknown = set(args.only or []) - set(names)
    if unknown:
        raise SystemExit(f"unknown variants {sorted(unknown)}; choose from {names}")
    chosen = [v for v in names if not args.only or v in args.only]
    if args.learning_rates:
        chosen = [f"{v}{LR_MARK}{rate:g}" for v in chosen for rate in args.learning_rates]
    jobs = [(v, s) for s in args.seeds for v in chosen]
    folder = Path(args.work_dir)
    folder.mkdir(parents=True, exist_ok=True)
    refs = references(args)
    launch(args, jobs, folder)
    results = [json.loads(f.read_text()) for f in sorted(folder.glob("*.json"))]
    Path(args.out).write_text(json.dumps({"references": refs, "runs": results, "settings": vars(args)}, indent=1))
    print(f"\n{len(results)} of {len(jobs)} runs finished; {args.steps} steps x {args.batch_size} samples each\n")
    print(summarize(refs, results))
    if "rag" in refs:
        print(f"\nRAG (constructed from the corpus, validation split; runs of seed {args.rag_seed})\n")
        print(rag_table(refs["rag"], [r for r in results if "rag" in r]))


def rag_table(refs: dict, runs: list[dict]) -> str:
    rows = {"teacher, full attention": refs["full"], "teacher, block attention (untrained)": refs["block"]}
    rows.update({r["variant"]: r["rag"] for r in runs})
    tasks = sorted({t for r in rows.values() for t in r["scores"]}, key=lambda t: (t == "all", t))
    lines = ["| model | " + " | ".join(f"{t} EM / F1 / substring" for t in tasks) + " |", "|---" * (len(tasks) + 1) + "|"]
    for name, r in rows.items():
        cells = [f"{100 * r['scores'][t]['exact_match']:.1f} / {100 * r['scores'][t]['f1']:.1f} / "
                 f"{100 * r['scores'][t]['substring']:.1f}" for t in tasks]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
