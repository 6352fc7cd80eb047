"""``lit-block eval-lm``: global-block NLL, KL to the teacher and gap recovered, side by side.

    lit-block eval-lm --teacher smollm2-135m --models distilled=exports/distilled finetuned=exports/ft \\
        --dataset data/semanticseg --split test --max-samples 64

Rows: the teacher with full attention, the teacher under block attention (untrained), then each
model (a folder written by ``BlockDistillationModule.export`` / ``BlockAttentionLM.save_pretrained``,
or any name ``BlockAttentionLM.from_pretrained`` takes) under block attention with its own sinks.
``gap recovered = (NLL_block_teacher - NLL_model) / (NLL_block_teacher - NLL_full_teacher)``.
The samples are ``DistillDataModule`` samples of the chosen split (held-out documents).
The table is printed and logged to MLflow (experiment ``eval-lm``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from lit_block.losses import chunked_distillation_loss, next_token_nll
from lit_block.model import BlockAttentionLM


@torch.no_grad()
def teacher_states(teacher: BlockAttentionLM, batches) -> list[torch.Tensor]:
    """The teacher's full-attention hidden states of each batch: computed once, shared by every scored row."""
    return [teacher.full_attention_hidden_states(b["input_ids"], b["attention_mask"]) for b in batches]


@torch.no_grad()
def score(model: BlockAttentionLM, teacher: BlockAttentionLM, batches, full_attention: bool = False,
          states: list[torch.Tensor] | None = None) -> dict:
    """Mean global-block NLL and mean KL(teacher_full || model) over the scored tokens (``states``: the teacher's
    full-attention hidden states per batch, from :func:`teacher_states`; computed here when not given)."""
    nll_sum = kl_sum = count = 0.0
    t_head = teacher.model.get_output_embeddings()
    from tqdm import tqdm

    for i, batch in enumerate(tqdm(batches, desc="scoring", unit="batch", leave=False)):
        ids, blocks, mask, target = batch["input_ids"], batch["block_ids"], batch["attention_mask"], batch["target_mask"]
        t_hidden = states[i] if states is not None else teacher.full_attention_hidden_states(ids, mask)
        if full_attention and model is teacher:
            hidden = t_hidden
        elif full_attention:
            hidden = model.full_attention_hidden_states(ids, mask)
        else:
            hidden, _ = model.token_hidden_states(ids, blocks, mask)
        head = model.model.get_output_embeddings()
        nll, n = next_token_nll(head(hidden), ids, target)
        positions = torch.roll(target, -1, dims=1)
        positions[:, -1] = False
        kl, _ = chunked_distillation_loss(hidden[positions], t_hidden[positions], head,
                                          positions[positions].float(), teacher_lm_head=t_head)
        nll_sum, kl_sum, count = nll_sum + float(nll), kl_sum + float(kl), count + int(n)
    return {"nll": nll_sum / max(count, 1), "kl_teacher": kl_sum / max(count, 1), "tokens": count}


def evaluate(teacher_name: str, models: dict[str, str], batches) -> dict[str, dict]:
    teacher = BlockAttentionLM.from_pretrained(teacher_name, num_sink_tokens=0, dtype=torch.float32).eval()
    states = teacher_states(teacher, batches)
    results = {"teacher, full attention": score(teacher, teacher, batches, full_attention=True, states=states),
               "teacher, block attention (untrained)": score(teacher, teacher, batches, states=states)}
    for name, path in models.items():
        model = BlockAttentionLM.from_pretrained(path, dtype=torch.float32).eval()
        if model.config.vocab_size != teacher.config.vocab_size:
            raise ValueError(f"{name}: vocabulary {model.config.vocab_size} differs from the teacher's")
        results[name] = score(model, teacher, batches, states=states)
    full, block = results["teacher, full attention"]["nll"], results["teacher, block attention (untrained)"]["nll"]
    for r in results.values():
        r["gap_recovered"] = (block - r["nll"]) / (block - full) if abs(block - full) > 1e-9 else float("nan")
    return results


def table(results: dict[str, dict]) -> str:
    lines = ["| model | global-block NLL | KL to teacher | gap recovered | scored tokens |", "|---|---|---|---|---|"]
    for name, r in results.items():
        lines.append(f"| {name} | {r['nll']:.4f} | {r['kl_teacher']:.4f} | {100 * r['gap_recovered']:.1f}% | {r['tokens']} |")
    return "\n".join(lines)


def run(argv: list[str]) -> str:
    """Parse ``argv``, score every row, print and log the table; returns the table (markdown)."""
    p = argparse.ArgumentParser(prog="lit-block eval-lm", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", default="smollm2-135m")
    p.add_argument("--models", nargs="*", default=[], help="NAME=PATH of exported students (or any model name)")
    p.add_argument("--split", default="test", choices=("val", "test"))
    p.add_argument("--max-samples", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--experiment", default="eval-lm", help="MLflow experiment ('' to skip logging)")
    from datamodules.distill import add_sample_arguments, data_from_arguments

    add_sample_arguments(p, max_documents=300)
    args = p.parse_args(argv)

    models = dict(item.split("=", 1) for item in args.models)
    for name, path in models.items():
        if not Path(path).exists() and "/" in path:
            raise FileNotFoundError(f"model {name!r}: {path} does not exist")
    data = data_from_arguments(args, tokenizer=args.teacher, batch_size=args.batch_size)
    data.setup("validate" if args.split == "val" else "test")
    data.samples[args.split] = data.samples[args.split][: args.max_samples]
    loader = data.val_dataloader() if args.split == "val" else data.test_dataloader()
    results = evaluate(args.teacher, models, list(loader))
    text = table(results)
    print(f"\n{len(data.samples[args.split])} samples of the {args.split} split\n\n{text}")
    if args.experiment:
        import mlflow

        from lit_block.tracking import metric_key, start_mlflow_run

        with start_mlflow_run(args.experiment, f"eval-lm-{args.split}"):
            mlflow.log_params({"teacher": args.teacher, "dataset": args.dataset, "samples": args.max_samples,
                               **{f"model.{k}": v for k, v in models.items()}})
            for name, r in results.items():
                key = metric_key(name)
                mlflow.log_metrics({f"{key}.{m}": v for m, v in r.items() if v == v})
            mlflow.log_text(text, "eval_lm.md")
    return text


def main(argv: list[str]) -> int:
    try:
        run(argv)
    except FileNotFoundError as err:
        print(f"lit-block eval-lm: {err}", flush=True)
        return 2
    return 0
