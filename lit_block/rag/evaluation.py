"""``lit-block eval-rag``: RAG-style question answering with every passage a cached block.

    lit-block eval-rag --teacher smollm2-135m --models distilled=exports/distilled finetuned=exports/ft \\
        --dataset data/semanticseg --split validation test --tasks faq definition headword --max-samples 50
    lit-block eval-rag --benchmark hotpotqa=data/hotpot_dev_distractor_v1.json --max-samples 200

Each sample's passages are context blocks (after one shared instruction block) and the question is
the global block. Rows: the teacher with full attention (the whole prompt prefilled causally), the
teacher under block attention (untrained), and each given model under block attention with its own
sinks; every block-attention row reads its blocks through one ``BlockKVStore``, so a passage that
recurs across questions is encoded once. Metrics per task: exact match, token F1 and substring
match (the answer appears in the output). The corpus tasks are constructed from the corpus's real
text (``lit_block.rag.corpus_tasks``); public benchmarks load with ``lit_block.rag.benchmarks``.
The table is printed and logged to MLflow (experiment ``eval-rag``).
"""

from __future__ import annotations

import statistics
from collections import defaultdict

import torch

from lit_block.errors import UsageError, check_number
from lit_block.model_sources import named_models
from lit_block.rag.prompt import TEMPLATES, RagPrompt, default_template

def answer_all(model, samples, prompt: RagPrompt, config, store, full_attention: bool) -> tuple[list[str], list[float]]:
    """The model's answers and times to first token for ``samples``."""
    from lit_block.serving import generate

    answers, ttfts = [], []
    for sample in samples:
        result = generate(model, prompt.blocks(sample), prompt.query(sample), config, store=store,
                          full_attention=full_attention)
        answers.append(result.text.strip())
        ttfts.append(result.ttft_s)
    return answers, ttfts


def score(samples, predictions: list[str]) -> dict[str, dict[str, float]]:
    """Per task (and ``all``): mean exact match, F1, substring match, and the sample count."""
    from lit_block.rag.metrics import AnswerMetrics

    by_task: dict[str, AnswerMetrics] = defaultdict(AnswerMetrics)
    for sample, pred in zip(samples, predictions):
        for task in (sample.task, "all"):
            by_task[task].update([pred], [sample.answers])
    return {task: {k: float(v) for k, v in m.compute().items()} for task, m in by_task.items()}


def run_rag(model, samples, prompt: RagPrompt, max_new_tokens: int, full_attention: bool = False,
            store_gib: float = 2.0) -> dict:
    """One model on ``samples``: scores, answers, median TTFT and (block attention) the store's hit rate."""
    from lit_block.serving import BlockKVStore, GenerationConfig

    config = GenerationConfig(max_new_tokens=max_new_tokens, stop=("\n", "<|im_end|>"))
    store = BlockKVStore(max_bytes=int(store_gib * 2**30))
    answers, ttfts = answer_all(model, samples, prompt, config, store, full_attention)
    stats = store.stats()
    return {"scores": score(samples, answers), "answers": answers, "ttft_ms": 1e3 * statistics.median(ttfts),
            "block_hit_rate": None if full_attention else stats["hits"] / max(1, stats["hits"] + stats["misses"])}


def fitting_samples(samples, prompt: RagPrompt, tokenizer, context: int, max_sinks: int, max_new_tokens: int):
    """The samples whose prompt and answer fit ``context`` positions in every row (``max_sinks`` per block), and
    the ids of those that do not: checked before any row runs, so one long sample cannot abort the evaluation."""
    fit, too_long = [], []
    for sample in samples:
        blocks = prompt.blocks(sample)
        tokens = sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in [*blocks, prompt.query(sample)])
        (fit if tokens + max_sinks * len(blocks) + max_new_tokens <= context else too_long).append(sample)
    return fit, [s.id for s in too_long]


def evaluate(teacher: str, models: dict[str, str], samples, template: str | None, max_new_tokens: int,
             store_gib: float, device: str) -> tuple[dict[str, dict], list]:
    """Every row's answers and scores (each block-attention row reads its blocks through its own KV store), and the
    samples scored: those that fit every row's context."""
    from lit_block.model import BlockAttentionLM, load_scored_model

    ref = BlockAttentionLM.from_pretrained(teacher, num_sink_tokens=0, dtype=torch.float32).to(device).eval()
    prompt = RagPrompt(*TEMPLATES[template or default_template(ref.tokenizer)])
    rows = {"teacher, full attention": (ref, True), "teacher, block attention (untrained)": (ref, False)}
    for name, path in models.items():
        rows[name] = (load_scored_model(path, ref, f"--models {name}={path}"), False)  # prompts use the teacher's tokens
    context = min(getattr(m.config, "max_position_embeddings", None) or 10**9 for m, _ in rows.values())
    samples, too_long = fitting_samples(samples, prompt, ref.tokenizer, context,
                                        max(m.num_sink_tokens for m, _ in rows.values()), max_new_tokens)
    if too_long:
        print(f"skipping {len(too_long)} sample(s) longer than the models' context of {context} positions: "
              f"{', '.join(too_long[:5])}{' ...' if len(too_long) > 5 else ''}", flush=True)
    if not samples:
        raise UsageError(f"no sample fits the models' context of {context} positions")
    results = {}
    for name, (model, full) in rows.items():
        if model.tokenizer is None:
            model.tokenizer = ref.tokenizer
        results[name] = run_rag(model, samples, prompt, max_new_tokens, full, store_gib)
    return results, samples


def table(results: dict[str, dict]) -> str:
    tasks = sorted({t for r in results.values() for t in r["scores"]}, key=lambda t: (t == "all", t))
    lines = ["| model | task | samples | exact match | F1 | substring | median TTFT ms | block cache hit rate |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        for task in tasks:
            s = r["scores"].get(task)
            if s is None:
                continue
            hit = "-" if r["block_hit_rate"] is None else f"{100 * r['block_hit_rate']:.0f}%"
            lines.append(f"| {name} | {task} | {int(s['count'])} | {100 * s['exact_match']:.1f} | {100 * s['f1']:.1f} | "
                         f"{100 * s['substring']:.1f} | {r['ttft_ms']:.0f} | {hit} |")
    return "\n".join(lines)


def load_samples(args) -> list:
    from lit_block.rag.benchmarks import load_benchmark
    from lit_block.rag.corpus_tasks import build_corpus_tasks

    samples = []
    if args.tasks:
        samples += build_corpus_tasks(args.dataset, tasks=tuple(args.tasks), splits=tuple(args.split),
                                      num_passages=args.num_passages, max_samples_per_task=args.max_samples,
                                      seed=args.seed)
    for item in args.benchmark:
        if "=" not in item:
            raise UsageError(f"--benchmark takes NAME=PATH_OR_HUB_ID, got {item!r}")
        name, source = item.split("=", 1)
        samples += load_benchmark(name, source, split=args.benchmark_split, max_samples=args.max_samples)
    return samples


def build_parser():
    from lit_block.command_line import command_parser

    p = command_parser("lit-block eval-rag", __doc__)
    p.add_argument("--teacher", default="smollm2-135m", help="the full-attention teacher: an embedded name or a folder")
    p.add_argument("--models", nargs="*", default=[], help="NAME=PATH of exported students (block attention)")
    p.add_argument("--dataset", default="data/semanticseg", help="the corpus, for the constructed tasks")
    p.add_argument("--tasks", nargs="*", default=["faq", "definition", "headword"], help="constructed tasks ('' for none)")
    p.add_argument("--split", nargs="+", default=["validation", "test"], choices=("train", "validation", "test"),
                   help="corpus splits the constructed tasks are drawn from")
    p.add_argument("--benchmark", nargs="*", default=[], help="NAME=PATH_OR_HUB_ID (hotpotqa, 2wikimqa, nq, triviaqa, "
                   "longbench, locomo)")
    p.add_argument("--benchmark-split", default=None, help="the benchmarks' split (default: each one's evaluation split)")
    p.add_argument("--num-passages", type=int, default=5, help="passages per question, each a cached block")
    p.add_argument("--max-samples", type=int, default=40, help="per task / benchmark")
    p.add_argument("--max-new-tokens", type=int, default=24, help="answer length limit (tokens)")
    p.add_argument("--template", choices=sorted(TEMPLATES), default=None, help="default: chatml if the tokenizer has it")
    p.add_argument("--store-gib", type=float, default=2.0, help="byte budget of the shared block KV store (GiB)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="where the models run")
    p.add_argument("--seed", type=int, default=0, help="seed of the constructed tasks' sampling")
    p.add_argument("--experiment", default="eval-rag", help="MLflow experiment ('' to skip logging)")
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    args.tasks = [t for t in args.tasks if t]
    models = named_models(args.models)
    check_number("--store-gib", args.store_gib, low=0, low_open=True)
    check_number("--num-passages", args.num_passages, low=1, integer=True)
    check_number("--max-samples", args.max_samples, low=1, integer=True)
    samples = load_samples(args)
    if not samples:
        raise UsageError("no samples (give --tasks with a built corpus, or --benchmark)")
    results, samples = evaluate(args.teacher, models, samples, args.template, args.max_new_tokens, args.store_gib,
                                args.device)
    text = table(results)
    print(f"\n{len(samples)} samples ({', '.join(sorted({s.task for s in samples}))}); the corpus tasks are "
          f"constructed from the corpus's real text\n\n{text}")
    if args.experiment:
        import json

        import mlflow

        from lit_block.tracking import metric_key, start_mlflow_run

        with start_mlflow_run(args.experiment, "eval-rag"):
            mlflow.log_params({"teacher": args.teacher, "tasks": ",".join(args.tasks), "splits": ",".join(args.split),
                               "benchmarks": ",".join(args.benchmark), "samples": len(samples),
                               "num_passages": args.num_passages, "template": args.template or "default",
                               "max_new_tokens": args.max_new_tokens, "seed": args.seed,
                               **{f"model.{k}": v for k, v in models.items()}})
            for name, r in results.items():
                key = metric_key(name)
                for task, s in r["scores"].items():
                    mlflow.log_metrics({f"{key}.{task}.{m}": v for m, v in s.items()})
                mlflow.log_metric(f"{key}.ttft_ms", r["ttft_ms"])
            mlflow.log_text(text, "eval_rag.md")
            answers = [{"id": s.id, "task": s.task, "question": s.question, "answers": s.answers,
                        **{name: r["answers"][i] for name, r in results.items()}} for i, s in enumerate(samples)]
            mlflow.log_text(json.dumps(answers, indent=1), "answers.json")
    return 0
