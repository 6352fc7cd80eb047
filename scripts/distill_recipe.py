"""The GPU recipe: block distillation at hardware speed, scored on text families it never saw.

    python scripts/distill_recipe.py --teacher /root/smollm2-135m --data .gpu/docs.pt --tokens 20e6 \\
        --eval-at 1e6 5e6 --seeds 0 --export-dir /root/students --out recipe.json

``--data`` comes from ``scripts/prepare_distill_samples.py --train-documents --heldout-dataset ...``: the
corpus's training documents with their sentence-packed block starts, 64 validation windows (held-out
corpus documents) and windows of held-out text families (their own source packages, not in the corpus).
Training windows of ``--sample-tokens`` (2048: the held-out windows' length; the last ``--global-tokens``
form the global block) tile the documents at four offsets (0, 256, 512, 768 tokens), so one pass sees
every document four ways. The defaults (lr 1e-4 with 10 warm-up steps and a linear decay to zero, isolated
rows unweighted) are the best measured (docs/distillation_notes.md), and the default run is distillation
alone: none of the paper's three components (sinks, block dropout, sensitivity weights) helped on the held-out
families. Each run trains the same LightningModule and callbacks as ``experiments/distill/*.yaml``
(no CLI: the GPU image lacks jsonargparse and mlflow) with bf16 autocast, compiled decoder layers and the
``auto`` attention backend on fixed-length packed batches; at each ``--eval-at`` mark (and the end) the
student is scored in fp32 with ``lit-block eval-lm``'s ``compare_to_teacher`` (KL gap closed first) on the
validation windows and on each held-out family; the final student is written with ``export`` and the
final scores are taken from the exported folder, loaded with ``BlockAttentionLM.from_pretrained``.
Throughput is training tokens per second with evaluation time left out, over the whole run and after the
first ``--warmup-steps`` steps (compilation).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import time
from pathlib import Path

import lightning as L
import torch

from lit_block.output_dir import write_text_atomic


def _sibling(name: str):
    """A script beside this one, imported by path (this file also runs imported by path, as in the tests)."""
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


separating_task = _sibling("separating_task")
OFFSETS = (0, 256, 512, 768)  # window starts within a document's first window: four tilings of the same text


DEFAULT_RUN = "distill - no weighting, no sinks, no dropout"  # distillation alone: the best measured


def variants(teacher: str, lr: float, isolated_weight: float, compile_layers: str | bool = True,
             release_end: float = 0.3, distill_options: dict | None = None) -> dict[str, tuple]:
    """name -> (module class, kwargs, callbacks factory, trains on full attention): the YAML experiments' settings;
    ``release_end``: block dropout's release probability at the end of its schedule (from 0);
    ``distill_options``: more of ``BlockDistillationModule``'s arguments for every distillation variant."""
    from callbacks import AttentionSensitivityWeighting, BlockDropoutScheduler, SinkTokenInitializer
    from lit_block.modules import BlockDistillationModule, BlockFinetuneModule

    def dropout():
        return BlockDropoutScheduler(0.0, release_end, "linear")

    def weights():
        return AttentionSensitivityWeighting(1.0, 0.1, 10.0)

    def sinks():
        return SinkTokenInitializer("bos")

    fast = dict(attn_backend="auto", compile_layers=compile_layers, learning_rate=lr)
    distill = dict(fast, teacher=teacher, isolated_weight=isolated_weight, num_sink_tokens=2, **(distill_options or {}))
    finetune = dict(fast, model_name_or_path=teacher, eval_full_attention=False)
    D, F = BlockDistillationModule, BlockFinetuneModule
    return {
        "distill (full)": (D, distill, lambda: [sinks(), dropout(), weights()], False),
        "distill - no weighting": (D, distill, lambda: [sinks(), dropout()], False),
        "distill - no sinks": (D, dict(distill, num_sink_tokens=0), lambda: [dropout(), weights()], False),
        "distill - no dropout": (D, distill, lambda: [sinks(), weights()], False),
        # the default's own ablations (the weighting is off by default): each drops one component kept on
        "distill - no weighting, no sinks": (D, dict(distill, num_sink_tokens=0), lambda: [dropout()], False),
        "distill - no weighting, no dropout": (D, distill, lambda: [sinks()], False),
        DEFAULT_RUN: (D, dict(distill, num_sink_tokens=0), list, False),
        "block fine-tuning": (F, finetune, list, False),
        "full-attention fine-tuning (control)": (F, finetune, list, True),
    }


def training_windows(docs: dict, sample_tokens: int, global_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``[N, S]`` ids and block ids of every window of every document at every offset in ``OFFSETS``."""
    from datamodules.distill import window_samples

    ids, cuts = docs["ids"].to(torch.int32).tolist(), docs["cuts"].tolist()
    rows, blocks, start, cut_start = [], [], 0, 0
    for length, n_cuts in zip(docs["lengths"].tolist(), docs["cut_counts"].tolist()):
        doc, doc_cuts = ids[start:start + length], cuts[cut_start:cut_start + n_cuts]
        start, cut_start = start + length, cut_start + n_cuts
        for offset in OFFSETS:
            for w in window_samples(doc, doc_cuts, sample_tokens, global_tokens, offset=offset):
                rows.append(w["input_ids"])
                blocks.append(w["block_ids"])
    return torch.tensor(rows, dtype=torch.int32), torch.tensor(blocks, dtype=torch.int8)


def as_batch(ids: torch.Tensor, blocks: torch.Tensor, full_attention: bool = False) -> dict[str, torch.Tensor]:
    """A packed batch dict; the global block's tokens after its first are scored. ``full_attention``: one global
    block over the whole window (the full-attention control trains on the same tokens without blocks)."""
    blocks = torch.full_like(blocks, -1) if full_attention else blocks.long()
    target = blocks < 0
    target &= torch.roll(target, 1, dims=1)
    return {"input_ids": ids.long(), "block_ids": blocks, "attention_mask": torch.ones_like(ids, dtype=torch.long),
            "target_mask": target}


class StepBatches(torch.utils.data.Dataset):
    """Batch ``i`` of a run: ``batch_size`` windows, each pass over the windows in a new seeded order."""

    def __init__(self, ids, blocks, batch_size: int, steps: int, seed: int, full_attention: bool):
        self.ids, self.blocks, self.batch_size, self.steps, self.full = ids, blocks, batch_size, steps, full_attention
        per_pass = len(ids) // batch_size
        passes = -(-steps // per_pass)
        g = torch.Generator().manual_seed(seed)
        self.order = torch.cat([torch.randperm(len(ids), generator=g)[: per_pass * batch_size] for _ in range(passes)])

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, step: int) -> dict[str, torch.Tensor]:
        rows = self.order[step * self.batch_size:(step + 1) * self.batch_size]
        return as_batch(self.ids[rows], self.blocks[rows], self.full)


def eval_batches(split: dict, device: str, batch_size: int) -> list[dict]:
    ids, blocks = split["input_ids"], split["block_ids"]
    return [{k: v.to(device) for k, v in as_batch(ids[i:i + batch_size], blocks[i:i + batch_size]).items()}
            for i in range(0, len(ids), batch_size)]


def score_splits(teacher, model, splits: dict[str, list[dict]]) -> dict[str, dict]:
    """``compare_to_teacher``'s rows for ``model`` on each split, plus the two teacher reference rows' NLLs."""
    from lit_block.evaluation_lm import TEACHER_BLOCK, TEACHER_FULL, compare_to_teacher

    out = {}
    for name, batches in splits.items():
        rows = compare_to_teacher(teacher, {"model": model}, batches)
        out[name] = {**rows["model"], "nll_teacher_full": rows[TEACHER_FULL]["nll"],
                     "nll_teacher_block": rows[TEACHER_BLOCK]["nll"], "kl_teacher_block": rows[TEACHER_BLOCK]["kl_teacher"]}
    return out


def task_answers(model, samples: list[dict]) -> dict[str, list[bool]]:
    """``model``'s per-sample correctness on the separating task, per condition (full attention, each block layout)."""
    return {cond: xs for (_, cond), xs in separating_task.evaluate({"model": model}, samples).items()}


def lm_of(module):
    """The trained model of a distillation (its student, LoRA merged) or fine-tuning module."""
    return module.plain_student() if hasattr(module, "plain_student") else module.lm


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class Marks(L.Callback):
    """Scores the model at token marks (fp32 copy, uncompiled) and times training with evaluation left out;
    ``on_mark()`` runs after each mark's scores are in ``results`` (the recipe saves them: a lost machine keeps them)."""

    def __init__(self, marks: list[int], tokens_per_step: int, warmup_steps: int, score, time_limit_s: float | None = None,
                 on_mark=None):
        self.marks, self.tokens_per_step, self.warmup_steps, self.score = sorted(marks), tokens_per_step, warmup_steps, score
        self.time_limit_s = time_limit_s  # stop training (then score and export) once the run has taken this long
        self.on_mark = on_mark
        self.results: list[dict] = []
        self.eval_seconds, self.start, self.warm_start, self.warm_eval = 0.0, None, None, 0.0

    def on_train_start(self, trainer, pl_module) -> None:
        synchronize()
        self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if self.time_limit_s and time.perf_counter() - self.start > self.time_limit_s:
            trainer.should_stop = True
        if step == self.warmup_steps:
            synchronize()
            self.warm_start, self.warm_eval = time.perf_counter(), self.eval_seconds
        if self.marks and step * self.tokens_per_step >= self.marks[0]:
            self.marks.pop(0)
            synchronize()
            t = time.perf_counter()
            self.results.append({"tokens": step * self.tokens_per_step, "step": step, **self.score(lm_of(pl_module))})
            self.eval_seconds += time.perf_counter() - t
            print(f"  {step * self.tokens_per_step / 1e6:.1f}M tokens: " + ", ".join(
                f"{k} KL gap closed {v['kl_gap_closed']:.1%}" for k, v in self.results[-1].items() if isinstance(v, dict)),
                flush=True)
            if self.on_mark is not None:
                self.on_mark()

    def throughput(self, steps: int) -> dict:
        synchronize()
        now = time.perf_counter()
        train_s = now - self.start - self.eval_seconds
        out = {"train_seconds": train_s, "tokens_per_s": steps * self.tokens_per_step / train_s}
        if self.warm_start is not None and steps > self.warmup_steps:
            warm_s = now - self.warm_start - (self.eval_seconds - self.warm_eval)
            out["tokens_per_s_after_warmup"] = (steps - self.warmup_steps) * self.tokens_per_step / warm_s
        return out


def run(args, name: str, seed: int, windows, splits, teacher, task_samples: list[dict], save_partial=None) -> dict:
    """Train one variant with one seed; score it at the marks and, exported, at the end. ``save_partial(record)``
    receives the run so far (``"partial": True``, its curves up to the last mark) after every mark."""
    from lit_block.model import BlockAttentionLM
    from lit_block.output_dir import output_dir

    cls, kwargs, make_callbacks, full_attention = variants(args.teacher, args.lr, args.isolated_weight,
                                                           args.compile != "none" and args.compile, args.release_end,
                                                           {"divergence": args.divergence, "lora_rank": args.lora_rank})[name]
    if args.warmup_lr_steps or args.decay != "constant":
        from lit_block.optim import LRSchedule

        kwargs = {**kwargs, "schedule": LRSchedule(args.warmup_lr_steps, args.decay, args.min_lr_ratio)}
    tokens_per_step = args.batch_size * windows[0].shape[1]
    steps = int(args.tokens // tokens_per_step)
    L.seed_everything(seed, verbose=False)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()  # this run's peak, not an earlier run's in the same process
    module = cls(**kwargs)
    shell = None  # an uncompiled fp32 model the marks copy the weights into (the compiled one stays as it is)
    task_marks = []  # the separating task at each mark too: comparisons with other runs at equal tokens

    def score(lm) -> dict:
        nonlocal shell
        if shell is None:
            shell = BlockAttentionLM.from_pretrained(args.teacher, num_sink_tokens=lm.num_sink_tokens,
                                                     dtype=torch.float32).to(args.device).eval()
        shell.load_state_dict(lm.state_dict())
        task_marks.append(task_answers(shell, task_samples))
        return score_splits(teacher, shell, splits)

    def task_curve() -> list[dict]:
        return [{"tokens": m["tokens"], **t} for m, t in zip(marks.results, task_marks)]

    def on_mark() -> None:
        if save_partial is not None:
            save_partial({"variant": name, "seed": seed, "partial": True, "curve": marks.results, "task_curve": task_curve()})

    marks = Marks([int(m) for m in args.eval_at if m < steps * tokens_per_step], tokens_per_step, args.warmup_steps, score,
                  args.time_limit_s, on_mark)
    loader = torch.utils.data.DataLoader(StepBatches(*windows, args.batch_size, steps, seed, full_attention),
                                         batch_size=None, num_workers=2, pin_memory=True, persistent_workers=True)
    trainer = L.Trainer(accelerator=args.device, devices=1, precision=args.precision, max_steps=steps, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, gradient_clip_val=1.0, callbacks=[*make_callbacks(), marks])
    trainer.fit(module, train_dataloaders=loader)
    out = {"variant": name, "seed": seed, "steps": trainer.global_step, "tokens": trainer.global_step * tokens_per_step,
           **marks.throughput(trainer.global_step), "curve": marks.results,
           "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None}
    folder = Path(args.export_dir) / f"{name.replace(' ', '_').replace('(', '').replace(')', '')}-seed{seed}"
    with output_dir(folder, command="distill recipe", option="--export-dir") as staging:
        module.export(str(staging))  # what anyone scores afterwards: BlockAttentionLM.from_pretrained(folder)
        # scored from this process's own staging folder, so runs at once sharing --export-dir never read each other's
        exported = BlockAttentionLM.from_pretrained(str(staging), dtype=torch.float32).to(args.device).eval()
        final = score_splits(teacher, exported, splits)
        # the separating task (scripts/separating_task.py): per-sample correctness under full and block attention
        task = task_answers(exported, task_samples)
    out.update(export=str(folder), final=final, task=task, task_curve=task_curve())
    del module, trainer, shell, exported
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return out


CONTROL = "full-attention fine-tuning (control)"


def vs_control(run: dict, controls: dict[int, dict], split: str) -> float:
    """The NLL gap closed against the full-attention control of the same seed (``lit_block.quality``): for block
    fine-tuning, the control fine-tuned on the same windows with full attention; for distillation, whose
    full-attention counterpart is the teacher itself (KL 0 from the start), the teacher."""
    from lit_block.quality import nll_gap_closed

    r = run["final"][split]
    control = controls.get(run["seed"])
    reference = r["nll_teacher_full"] if run["variant"].startswith("distill") or control is None \
        else control["final"][split]["nll_full"]
    return nll_gap_closed(r["nll"], reference, r["nll_teacher_block"], r["nll_teacher_full"])


def table(results: list[dict]) -> str:
    """Markdown: per variant, each split's KL gap closed (mean over seeds, 95% t interval, each seed) and more."""
    from lit_block.quality import mean_interval

    def cell(values: list[float]) -> str:
        if len(values) == 1:
            return f"{100 * values[0]:.1f}%"
        mean, low, high = mean_interval([100 * v for v in values])
        return f"{mean:.1f}% [{low:.1f}, {high:.1f}] ({'/'.join(f'{100 * v:.1f}' for v in values)})"

    splits = list(results[0]["final"])
    heldout = [s for s in splits if s != "val"]
    controls = {r["seed"]: r for r in results if r["variant"] == CONTROL}
    lines = ["| model | seeds | tokens | " + " | ".join(f"{s} KL gap closed" for s in splits)
             + " | held-out mean KL gap closed | held-out NLL gap closed vs full-attention control"
             + " | held-out own gap closed | tokens/s |", "|---" * (len(splits) + 7) + "|"]
    by_variant: dict[str, list[dict]] = {}
    for r in results:
        by_variant.setdefault(r["variant"], []).append(r)
    for name, runs in by_variant.items():
        cells = [cell([r["final"][s]["kl_gap_closed"] for r in runs]) for s in splits]
        mean_kl = cell([statistics.fmean(r["final"][s]["kl_gap_closed"] for s in heldout) for r in runs])
        control = cell([statistics.fmean(vs_control(r, controls, s) for s in heldout) for r in runs])
        own = cell([statistics.fmean(r["final"][s].get("own_gap_closed", float("nan")) for s in heldout) for r in runs])
        rate = statistics.fmean(r.get("tokens_per_s_after_warmup", r["tokens_per_s"]) for r in runs)
        lines.append(f"| {name} | {','.join(str(r['seed']) for r in runs)} | {runs[0]['tokens'] / 1e6:.1f}M | "
                     + " | ".join(cells) + f" | {mean_kl} | {control} | {own} | {rate / 1e3:.0f}k |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    from lit_block.losses import DIVERGENCES

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", required=True, help="the teacher's folder (HF format); the student starts from it")
    p.add_argument("--data", required=True, help="scripts/prepare_distill_samples.py --train-documents output")
    p.add_argument("--runs", nargs="+", default=[DEFAULT_RUN], help="variant names (see variants())")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--tokens", type=float, default=50e6, help="training tokens per run")
    p.add_argument("--eval-at", type=float, nargs="*", default=[1e6, 5e6, 20e6], help="token marks to score at")
    p.add_argument("--batch-size", type=int, default=16, help="windows per step")
    p.add_argument("--sample-tokens", type=int, default=2048, help="training window length (0: the validation windows')")
    p.add_argument("--global-tokens", type=int, default=None, help="training windows' global block (default: the validation's)")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--warmup-lr-steps", type=int, default=10, help="linear warm-up of the learning rate (optimizer steps)")
    p.add_argument("--decay", default="linear", help="the rate after warm-up: constant, linear or cosine decay")
    p.add_argument("--min-lr-ratio", type=float, default=0.0, help="the rate at the last step, as a share of --lr")
    p.add_argument("--release-end", type=float, default=0.3,
                   help="block dropout's release probability at the end of its linear schedule (variants with dropout)")
    p.add_argument("--divergence", default="forward_kl", choices=DIVERGENCES,
                   help="the distillation variants' divergence (the KL gap closed scores forward KL)")
    p.add_argument("--lora-rank", type=int, default=0, help="the distillation variants' LoRA rank (0: every weight trains)")
    p.add_argument("--isolated-weight", type=float, default=0.0, help="loss weight of isolated-block rows")
    p.add_argument("--warmup-steps", type=int, default=20, help="steps left out of the after-warm-up throughput")
    p.add_argument("--time-limit-s", type=float, default=None,
                   help="stop a run's training after this many seconds (a decaying rate then stops short of its end)")
    p.add_argument("--precision", default="bf16-mixed")
    p.add_argument("--compile", default="inductor", help="torch.compile backend of the decoder layers, or none")
    p.add_argument("--max-eval-windows", type=int, default=None, help="score at most this many windows per split")
    p.add_argument("--task-samples", type=int, default=200,
                   help="samples of the separating task (scripts/separating_task.py) scored per student; 0: none")
    p.add_argument("--device", default="cuda")
    p.add_argument("--export-dir", default="/tmp/students")
    p.add_argument("--out", default="recipe.json",
                   help="results JSON, rewritten atomically after every mark (the run in progress: \"partial\": true)")
    args = p.parse_args(argv)
    known = variants("", 0.0, 0.0)
    unknown = [r for r in args.runs if r not in known]
    if unknown:  # before any data or model loads
        p.error(f"--runs: unknown variant(s) {', '.join(map(repr, unknown))}; choose from {', '.join(map(repr, known))}")
    backends = torch._dynamo.list_backends(exclude_tags=())
    if args.compile != "none" and args.compile not in backends:  # torch would say so only once the first run compiles
        p.error(f"--compile: unknown torch.compile backend {args.compile!r}; none (no compilation) or one of "
                f"{', '.join(b for b in backends if 'TESTING' not in b)}")
    torch.set_float32_matmul_precision("high")
    from lit_block.model import BlockAttentionLM

    data = torch.load(args.data, weights_only=True)  # no code runs
    t = time.perf_counter()
    windows = training_windows(data["train_documents"], args.sample_tokens or data["val"]["input_ids"].shape[1],
                               args.global_tokens or int((data["val"]["block_ids"][0] < 0).sum()))
    print(f"{len(windows[0])} training windows ({windows[0].numel() / 1e6:.1f}M tokens) in {time.perf_counter() - t:.0f} s")
    cap = {k: v[: args.max_eval_windows] for k, v in data["val"].items()}
    splits = {"val": eval_batches(cap, args.device, 16)}
    for family, windows_ in data.get("heldout", {}).items():
        splits[family] = eval_batches({k: v[: args.max_eval_windows] for k, v in windows_.items()}, args.device, 8)
    teacher = BlockAttentionLM.from_pretrained(args.teacher, num_sink_tokens=0, dtype=torch.float32).to(args.device).eval()
    task_samples = separating_task.make_samples(teacher.tokenizer, args.task_samples, 8, 0) if args.task_samples else []
    task_reference = task_answers(teacher, task_samples)
    results = []

    def save(partial: dict | None = None) -> None:
        """The results so far, written atomically: finished runs, then the run in progress (``"partial": True``)."""
        runs = results + ([partial] if partial else [])
        write_text_atomic(args.out, json.dumps({"settings": vars(args), "task_reference": task_reference, "runs": runs},
                                               indent=1))

    for seed in args.seeds:
        for name in args.runs:
            start = time.perf_counter()
            results.append(run(args, name, seed, windows, splits, teacher, task_samples, save))
            r = results[-1]
            print(f"{name}, seed {seed}: {r['tokens'] / 1e6:.1f}M tokens, {r['tokens_per_s'] / 1e3:.0f}k tokens/s "
                  f"({r.get('tokens_per_s_after_warmup', 0) / 1e3:.0f}k after warm-up, peak {r['peak_memory_gib'] or 0:.1f} GiB), "
                  f"{time.perf_counter() - start:.0f} s "
                  f"in all; final KL gap closed " + ", ".join(f"{k} {v['kl_gap_closed']:.1%}" for k, v in r["final"].items()),
                  flush=True)
            save()  # after every run (and every mark): a killed call keeps what finished
    print("\n" + table(results))
    if task_samples:  # the teacher's full and block attention, then each student's, on the separating task
        correct = {("teacher", c): xs for c, xs in task_reference.items()}
        correct.update({(f"{r['variant']} (seed {r['seed']})", c): xs for r in results for c, xs in r["task"].items()})
        print("\nseparating task (scripts/separating_task.py): " + separating_task.table(correct, "teacher"))


if __name__ == "__main__":
    main()
