"""``lit-block eval-lm``: how much of block attention's cost each model gets back, on held-out samples.

    lit-block eval-lm --teacher smollm2-135m --models distilled=exports/distilled finetuned=exports/ft \\
        --controls finetuned=exports/ft-full-attention --dataset data/semanticseg --split test --max-samples 64

Rows: the teacher with full attention, the teacher under block attention (untrained), then each
model (a folder written by ``BlockDistillationModule.export`` / ``BlockAttentionLM.save_pretrained``,
or any name ``BlockAttentionLM.from_pretrained`` takes) under block attention with its own sinks.
Columns lead with the **KL gap closed** and its 95% bootstrap interval over samples, then the
model's **own gap closed** (its block-attention NLL against its own full-attention NLL), the gap
closed against a full-attention **control** where ``--controls NAME=PATH`` gives one, and last the
domain-sensitive NLL gap closed against the teacher (``lit_block.quality`` defines each). The
samples are ``DistillDataModule`` samples of the chosen split (held-out documents). The table is
printed and logged to MLflow (experiment ``eval-lm``).
"""

from __future__ import annotations

import torch

from lit_block.errors import UsageError, check_number
from lit_block.model import BlockAttentionLM, load_scored_model
from lit_block.model_sources import named_models
from lit_block.quality import bootstrap_ratio_interval, kl_gap_closed, nll_gap_closed, window_sums

TEACHER_FULL, TEACHER_BLOCK = "teacher, full attention", "teacher, block attention (untrained)"


@torch.no_grad()
def teacher_states(teacher: BlockAttentionLM, batches) -> list[torch.Tensor]:
    """The teacher's full-attention hidden states of each batch: computed once, shared by every scored row."""
    return [teacher.full_attention_hidden_states(b["input_ids"], b["attention_mask"]) for b in batches]


@torch.no_grad()
def score(model: BlockAttentionLM, teacher: BlockAttentionLM, batches, states: list[torch.Tensor],
          full_attention: bool = False) -> torch.Tensor:
    """``[samples, 3]`` window sums (:func:`window_sums`) of ``model`` under block (or full) attention."""
    from tqdm import tqdm

    t_head, head = teacher.model.get_output_embeddings(), model.model.get_output_embeddings()
    sums = []
    for batch, t_hidden in zip(tqdm(batches, desc="scoring", unit="batch", leave=False), states):
        ids, mask = batch["input_ids"], batch["attention_mask"]
        if full_attention:
            hidden = t_hidden if model is teacher else model.full_attention_hidden_states(ids, mask)
        else:
            hidden, _ = model.token_hidden_states(ids, batch["block_ids"], mask)
        sums.append(window_sums(hidden, head, t_hidden, t_head, batch))
    return torch.cat(sums)


def summarize(rows: dict[str, dict[str, torch.Tensor]]) -> dict[str, dict]:
    """Per row: mean NLL and KL per scored token, and the gap-closed metrics of ``lit_block.quality``.

    ``rows[name]`` holds window sums: ``block`` (under block attention; full attention for the teacher's
    first row), optionally ``full`` (the same weights with full attention) and ``control`` (a full-attention
    control's full-attention sums)."""
    def mean(sums: torch.Tensor, column: int) -> float:
        return float(sums[:, column].sum() / sums[:, 2].sum().clamp(min=1))

    full, block = rows[TEACHER_FULL]["block"], rows[TEACHER_BLOCK]["block"]
    nll_tf, nll_tb, kl_tb = mean(full, 0), mean(block, 0), mean(block, 1)
    out = {}
    for name, sums in rows.items():
        b = sums["block"]
        r = {"nll": mean(b, 0), "kl_teacher": mean(b, 1), "tokens": int(b[:, 2].sum())}
        r["kl_gap_closed"] = kl_gap_closed(r["kl_teacher"], kl_tb)  # 100% for the teacher's own full attention
        r["kl_gap_closed_low"], r["kl_gap_closed_high"] = bootstrap_ratio_interval(
            b[:, 1], block[:, 1], transform=lambda ratio: 1 - ratio)  # resampled windows, the same for both sums
        r["nll_gap_closed_vs_teacher"] = nll_gap_closed(r["nll"], nll_tf, nll_tb, nll_tf)
        if name != TEACHER_FULL:
            if "full" in sums:
                r["nll_full"] = mean(sums["full"], 0)
                r["own_gap_closed"] = nll_gap_closed(r["nll"], r["nll_full"], nll_tb, nll_tf)
            if "control" in sums:
                r["nll_control_full"] = mean(sums["control"], 0)
                r["gap_closed_vs_control"] = nll_gap_closed(r["nll"], r["nll_control_full"], nll_tb, nll_tf)
        out[name] = r
    return out


def compare_to_teacher(teacher: BlockAttentionLM, models: dict[str, BlockAttentionLM], batches,
                       controls: dict[str, BlockAttentionLM] | None = None) -> dict[str, dict]:
    """The teacher's two reference rows and each model's row (:func:`summarize`) on ``batches``."""
    controls = controls or {}
    states = teacher_states(teacher, batches)
    rows = {TEACHER_FULL: {"block": score(teacher, teacher, batches, states, full_attention=True)},
            TEACHER_BLOCK: {"block": score(teacher, teacher, batches, states)}}
    rows[TEACHER_BLOCK]["full"] = rows[TEACHER_FULL]["block"]
    for name, model in models.items():
        rows[name] = {"block": score(model, teacher, batches, states),
                      "full": score(model, teacher, batches, states, full_attention=True)}
        if name in controls:
            rows[name]["control"] = score(controls[name], teacher, batches, states, full_attention=True)
    return summarize(rows)


def evaluate(teacher_name: str, models: dict[str, str], batches, controls: dict[str, str] | None = None) -> dict[str, dict]:
    """Score every row (see the module's docstring); ``controls`` maps a model's name to its full-attention control."""
    controls = controls or {}
    unknown = sorted(set(controls) - set(models))
    if unknown:
        raise UsageError(f"--controls {unknown[0]}: no model of that name in --models ({', '.join(models) or 'none'})")
    teacher = BlockAttentionLM.from_pretrained(teacher_name, num_sink_tokens=0, dtype=torch.float32).eval()
    loaded = {name: load_scored_model(path, teacher, f"--models {name}={path}") for name, path in models.items()}
    control_models = {name: load_scored_model(path, teacher, f"--controls {name}={path}")
                      for name, path in controls.items()}
    return compare_to_teacher(teacher, loaded, batches, control_models)


def _pct(value: float | None) -> str:
    return "-" if value is None or value != value else f"{100 * value:.1f}%"


def table(results: dict[str, dict]) -> str:
    """Markdown, the primary metric first."""
    lines = ["| model | KL gap closed [95% CI] | KL to teacher | NLL (block) | NLL (full, same weights) | own gap closed "
             "| gap closed vs control | NLL gap closed vs teacher (domain-sensitive) | scored tokens |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        ci = (f" [{_pct(r['kl_gap_closed_low'])}, {_pct(r['kl_gap_closed_high'])}]"
              if r.get("kl_gap_closed_low") == r.get("kl_gap_closed_low") and "kl_gap_closed_low" in r else "")
        full = r.get("nll_full")
        lines.append(f"| {name} | {_pct(r.get('kl_gap_closed'))}{ci} | {r['kl_teacher']:.4f} | {r['nll']:.4f} | "
                     f"{'-' if full is None else f'{full:.4f}'} | {_pct(r.get('own_gap_closed'))} | "
                     f"{_pct(r.get('gap_closed_vs_control'))} | {_pct(r.get('nll_gap_closed_vs_teacher'))} | "
                     f"{r['tokens']} |")
    return "\n".join(lines)


def build_parser():
    from datamodules.distill import add_sample_arguments
    from lit_block.command_line import command_parser

    p = command_parser("lit-block eval-lm", __doc__)
    p.add_argument("--teacher", default="smollm2-135m", help="the full-attention teacher: an embedded name or a folder")
    p.add_argument("--models", nargs="*", default=[], help="NAME=PATH of exported students (or any model name)")
    p.add_argument("--controls", nargs="*", default=[], help="NAME=PATH: the full-attention control of model NAME "
                   "(same initialisation, data and budget, trained with full attention)")
    p.add_argument("--split", default="test", choices=("validation", "test"), help="the corpus split scored")
    p.add_argument("--texts", nargs="*", default=[], help="score plain-text files (or folders of *.txt) instead of the "
                   "corpus: text families the models never trained on, cut into --text-block-tokens blocks")
    p.add_argument("--text-block-tokens", type=int, default=256, help="context block size for --texts")
    p.add_argument("--max-samples", type=int, default=64, help="samples (or --texts windows) scored")
    p.add_argument("--batch-size", type=int, default=2, help="samples per forward pass")
    p.add_argument("--experiment", default="eval-lm", help="MLflow experiment ('' to skip logging)")
    add_sample_arguments(p, max_documents=300)
    return p


def run(argv: list[str]) -> tuple[str, dict[str, dict]]:
    """Parse ``argv``, score every row, print and log the table; returns the table (markdown) and the figures."""
    from datamodules.distill import data_from_arguments

    args = build_parser().parse_args(argv)
    split = {"validation": "val", "test": "test"}[args.split]  # DistillDataModule's name for the split

    models, controls = named_models(args.models), named_models(args.controls, "--controls")
    check_number("--max-samples", args.max_samples, low=1, integer=True)
    check_number("--batch-size", args.batch_size, low=1, integer=True)
    if args.texts:  # held-out text families: fixed blocks over plain text, the window's end as the global block
        from datamodules.text_blocks import TextBlocksDataModule

        data = TextBlocksDataModule(val_files=args.texts, tokenizer=args.teacher, sample_tokens=args.sample_tokens,
                                    block_tokens=args.text_block_tokens, global_tokens=args.global_tokens,
                                    batch_size=args.batch_size, max_samples=args.max_samples)
        data.setup("validate")
        loader = data.val_dataloader()
        source = f"{len(data.splits['val'])} windows of {args.sample_tokens} tokens from {', '.join(args.texts)}"
    else:
        data = data_from_arguments(args, tokenizer=args.teacher, batch_size=args.batch_size)
        data.setup("validate" if split == "val" else "test")
        data.samples[split] = data.samples[split][: args.max_samples]
        loader = data.val_dataloader() if split == "val" else data.test_dataloader()
        source = f"{len(data.samples[split])} samples of the {args.split} split of {args.dataset}"
    results = evaluate(args.teacher, models, list(loader), controls)
    text = table(results)
    print(f"\n{source}\n\n{text}")
    if args.experiment:
        import mlflow

        from lit_block.tracking import metric_key, start_mlflow_run

        with start_mlflow_run(args.experiment, f"eval-lm-{args.split}"):
            cut = ({"texts": ",".join(args.texts), "block_tokens": args.text_block_tokens} if args.texts else
                   {"dataset": args.dataset, "split": args.split, "method": args.method, "checkpoint": args.checkpoint,
                    "granularity": args.granularity, "min_block_tokens": args.min_block_tokens,
                    "max_block_tokens": args.max_block_tokens})  # how the context was cut into blocks
            mlflow.log_params({**cut, "sample_tokens": args.sample_tokens, "global_tokens": args.global_tokens})
            mlflow.log_params({"teacher": args.teacher, "data": source[:250], "samples": args.max_samples,
                               **{f"model.{k}": v for k, v in models.items()},
                               **{f"control.{k}": v for k, v in controls.items()}})
            for name, r in results.items():
                key = metric_key(name)
                mlflow.log_metrics({f"{key}.{m}": v for m, v in r.items() if v is not None and v == v})
            mlflow.log_text(text, "eval_lm.md")
    return text, results


def main(argv: list[str]) -> int:
    run(argv)  # expected errors are reported by the command's top level (lit_block.cli)
    return 0
