"""``lit-block eval-seg``: the segmenter and every baseline side by side on the corpus's test split.

Every method is given the same average block size as the gold segmentation of each document at
each level (so Pk and WindowDiff compare where the cuts fall, not how many there are). Scores are
computed in token positions of the embedded teacher's tokenizer. The table is printed and logged,
with a plot of Pk per category and level, to MLflow.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from tqdm.auto import tqdm

from lit_block.output_dir import write_text_atomic
from lit_block.segmentation.metrics import SegmentationMetrics, window_errors
from lit_block.segmentation.results_file import save_results
from lit_block.segmentation.segmenter import (COARSE_SCORING, LEVELS, METHODS, Segmenter, add_inference_options,
                                              inference_options)

SUMMARY_KEYS = ("pk", "windowdiff", "f1", "f1_tol", "length_error")


def pick_documents(rows, per_category: int, seed: int = 0) -> list[dict]:
    """At most ``per_category`` documents of each category, in a fixed order."""
    taken: dict[str, int] = defaultdict(int)
    out = []
    for row in rows:
        if taken[row["category"]] < per_category:
            taken[row["category"]] += 1
            out.append(row)
    return out


def evaluate(rows: list[dict], segmenters: dict[str, Segmenter], tolerance: int = 10):
    """Metrics keyed by (method, level, category) plus (method, level, "all"). Each entry's ``documents`` lists
    ``[Pk errors, WindowDiff errors, windows]`` per document, in ``rows`` order, for intervals over documents."""
    metrics: dict[tuple[str, str, str], SegmentationMetrics] = defaultdict(lambda: SegmentationMetrics(tolerance))
    documents: dict[tuple[str, str, str], list[list[int]]] = defaultdict(list)
    any_seg = next(iter(segmenters.values()))
    for row in tqdm(rows, desc="eval-seg", unit="doc"):
        doc = any_seg.prepare(row["text"])  # one tokenization and candidate set, shared by every method
        for level in LEVELS:
            gold = sorted({doc.token_index(c) for c in row[f"boundaries_{level}"]} - {0, doc.n_tokens})
            target = doc.n_tokens / (len(gold) + 1)
            for name, seg in segmenters.items():
                hyp = seg.cut(doc, level, target_tokens=target)
                errors = list(window_errors(gold, hyp, doc.n_tokens))
                for cat in (row["category"], "all"):
                    metrics[(name, level, cat)].update(gold, hyp, doc.n_tokens, target_block=target)
                    documents[(name, level, cat)].append(errors)
    return {key: {**{k: float(v) for k, v in m.compute().items()}, "documents": documents[key]}
            for key, m in metrics.items()}


def summary_table(results: dict) -> str:
    methods = sorted({m for m, _, _ in results}, key=lambda m: METHODS.index(m))
    lines = ["| method | level | Pk | WindowDiff | F1 | F1 (tol) | length error |", "|---|---|---|---|---|---|---|"]
    for level in LEVELS:
        for m in methods:
            r = results[(m, level, "all")]
            lines.append(f"| {m} | {level} | " + " | ".join(f"{r[k]:.3f}" for k in SUMMARY_KEYS) + " |")
    return "\n".join(lines)


def pk_difference(ours: dict, theirs: dict) -> tuple[float, float, float]:
    """Pk of ``ours`` minus ``theirs`` (two ``evaluate`` entries over the same documents) and a 95% paired bootstrap
    interval over the documents: ``(difference, low, high)``; nan bounds with fewer than 3 documents."""
    from lit_block.quality import bootstrap_ratio_interval

    point = ours["pk"] - theirs["pk"]
    diff = [a[0] - b[0] for a, b in zip(ours["documents"], theirs["documents"])]
    low, high = bootstrap_ratio_interval(diff, [a[2] for a in ours["documents"]])
    if low != low and len(diff) >= 3:  # every document differs by the same share: no resample moves it
        low = high = point
    return point, low, high


def pooled(results: dict, level: str, method: str = "segmenter") -> dict:
    """``method``'s entries of one level, every category's documents in one list (sorted by category, "all" left
    out), as one entry: pooled Pk and WindowDiff, and the ``documents`` that ``pk_difference`` pairs."""
    documents = [d for (m, lv, c), v in sorted(results.items()) if m == method and lv == level and c != "all"
                 for d in v["documents"]]
    windows = sum(d[2] for d in documents) or 1
    return {"pk": sum(d[0] for d in documents) / windows, "windowdiff": sum(d[1] for d in documents) / windows,
            "documents": documents}


def pooled_pk_table(results: dict, methods: list[str], label: str) -> tuple[list[str], dict]:
    """Markdown lines: each method's pooled Pk per level and its difference from ``methods[0]``'s, with a 95% paired
    bootstrap interval over documents; and those differences keyed ``(method, level)``."""
    base = methods[0]
    lines = [f"{label}: pooled Pk, minus {base}'s, 95% paired bootstrap interval over documents", "",
             "| method | " + " | ".join(LEVELS) + " |", "|---|" + "---|" * len(LEVELS)]
    found = {}
    for name in methods:
        cells = []
        for level in LEVELS:
            a, b = pooled(results, level, base), pooled(results, level, name)
            found[name, level] = d, low, high = pk_difference(b, a)
            cells.append(f"{b['pk']:.4f} ({d:+.4f} [{low:+.4f}, {high:+.4f}])")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines, found


def family_table(results: dict, baselines: list[str], ours: str = "segmenter") -> str:
    """Per category (family) and level: ``ours``' Pk / WindowDiff, the best baseline's, and whether ours beats all."""
    families = sorted({c for _, _, c in results if c != "all"})
    lines = ["| family | " + " | ".join(LEVELS) + " |", "|---|" + "---|" * len(LEVELS)]
    for f in families:
        cells = []
        for lv in LEVELS:
            mine = results[(ours, lv, f)]
            pk, wd = (min(results[(b, lv, f)][k] for b in baselines) for k in ("pk", "windowdiff"))
            beats = "n/a" if mine["reference_boundaries"] == 0 else (
                "yes" if mine["pk"] < pk and mine["windowdiff"] < wd else "no")
            cells.append(f"{mine['pk']:.3f} / {mine['windowdiff']:.3f} ({pk:.3f} / {wd:.3f}) {beats}")
        lines.append(f"| {f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


class WithWeights:
    """One segmenter cutting with other inference settings (``Segmenter`` attributes such as
    ``fine_inline_weight``): views of one segmenter share its per-document features, so scoring several settings
    runs the encoder once per document. Each cut puts the segmenter's own settings back."""

    def __init__(self, segmenter, weights: dict):
        self.segmenter, self.weights = segmenter, weights

    def prepare(self, text: str):
        return self.segmenter.prepare(text)

    def cut(self, doc, *args, **kwargs):
        saved = {k: getattr(self.segmenter, k) for k in self.weights}
        try:
            for k, v in self.weights.items():
                setattr(self.segmenter, k, v)
            return self.segmenter.cut(doc, *args, **kwargs)
        finally:
            for k, v in saved.items():
                setattr(self.segmenter, k, v)


def score_settings(rows: list[dict], checkpoint, baselines: list[str], settings: dict[str, dict]) -> dict[str, dict]:
    """Per setting (name -> ``Segmenter`` attributes): ``evaluate``'s results of ``checkpoint`` cut with that setting,
    under the method name ``segmenter``, beside the baselines'."""
    shared = Segmenter("segmenter", str(checkpoint))
    methods = {name: WithWeights(shared, w) for name, w in settings.items()}
    methods.update({b: Segmenter(b) for b in baselines})
    results = evaluate(rows, methods)
    return {name: {("segmenter" if m == name else m, lv, c): r for (m, lv, c), r in results.items()
                   if m == name or m not in settings} for name in settings}


def settings_comparison(results: dict[str, dict], label: str, settings: list[str]) -> tuple[list[str], dict]:
    """``pooled_pk_table`` of the settings' segmenters (``results``: setting -> ``score_settings`` entries), each
    against ``settings[0]``."""
    as_methods = {(name, lv, c): v for name, r in results.items() for (m, lv, c), v in r.items() if m == "segmenter"}
    return pooled_pk_table(as_methods, settings, label)


def score_fold_settings(folds: Path, rows: list[dict], per_category: int, baselines: list[str],
                        settings: dict[str, dict]) -> dict[str, dict]:
    """``score_settings`` of each fold checkpoint in ``folds`` (``fold_checkpoints``) on its left-out category's
    documents (``pick_documents`` of ``rows``), merged per setting; a fold's "all" entries (its one category) left out."""
    merged: dict[str, dict] = {name: {} for name in settings}
    for category, ckpt in sorted(fold_checkpoints(folds).items()):
        print(f"=== fold {category} ({ckpt})", flush=True)
        picked = pick_documents([r for r in rows if r["category"] == category], per_category)
        for name, r in score_settings(picked, ckpt, baselines, settings).items():
            merged[name].update({k: v for k, v in r.items() if k[2] != "all"})
    return merged


def add_study_options(parser) -> None:
    """The options every segmenter study script takes: where scored parts are merged from and written, the corpus and
    held-out families, and how many documents of each left-out category a fold is scored on."""
    parser.add_argument("--merge", type=Path, nargs="+", default=[], help="earlier --output folders to report with these")
    parser.add_argument("--dataset", default="data/semanticseg")
    parser.add_argument("--heldout", default="data/heldout-families")
    parser.add_argument("--per-category", type=int, default=10)
    parser.add_argument("--output", type=Path, required=True)


def fold_checkpoints(folds: Path) -> dict[str, Path]:
    """Category -> checkpoint of the leave-one-out folds in ``folds``: ``<category>.ckpt`` files, or an
    ``eval-seg --leave-one-out`` output (``folds/<category>/``)."""
    from lit_block.segmentation.leave_one_out import fold_checkpoint

    found = {p.stem: p for p in folds.glob("*.ckpt")}
    for folder in sorted((folds / "folds").glob("*")) if (folds / "folds").is_dir() else []:
        if (ckpt := fold_checkpoint(folder)) is not None:
            found[folder.name] = ckpt
    return found


def win_table(results: dict, ours: str = "segmenter") -> str:
    """Per level and baseline: does ours win on Pk and WindowDiff overall (with the Pk difference's paired interval
    over documents), and in what share of categories.

    Only categories with gold boundaries at that level count (with none, every method makes no cut
    and all tie)."""
    all_cats = sorted({c for _, _, c in results if c != "all"})
    baselines = sorted({m for m, _, _ in results if m != ours}, key=lambda m: METHODS.index(m))
    lines = ["| level | baseline | Pk overall | Pk difference [95% interval over documents] | WD overall | "
             "categories won (Pk and WD) |", "|---|---|---|---|---|---|"]
    for level in LEVELS:
        cats = [c for c in all_cats if results[(ours, level, c)]["reference_boundaries"] > 0]
        for b in baselines:
            mine, theirs = results[(ours, level, "all")], results[(b, level, "all")]
            won = sum(results[(ours, level, c)]["pk"] < results[(b, level, c)]["pk"]
                      and results[(ours, level, c)]["windowdiff"] < results[(b, level, c)]["windowdiff"] for c in cats)
            diff, low, high = pk_difference(mine, theirs)
            lines.append(f"| {level} | {b} | {mine['pk']:.3f} vs {theirs['pk']:.3f} | {diff:+.3f} [{low:+.3f}, "
                         f"{high:+.3f}] | {mine['windowdiff']:.3f} vs {theirs['windowdiff']:.3f} | {won}/{len(cats)} |")
    return "\n".join(lines)


def plot_pk(results: dict, path: Path) -> None:
    """Pk of every method per category (rows, ``all`` last) and level (one heatmap per level)."""
    import numpy as np

    from lit_block.plots import draw_heatmap, pyplot, readable

    plt = pyplot()
    cats = sorted({c for _, _, c in results}, key=lambda c: (c == "all", c))
    methods = sorted({m for m, _, _ in results}, key=lambda m: METHODS.index(m))
    fig, axes = plt.subplots(1, len(LEVELS), figsize=(1.2 * len(methods) * len(LEVELS) + 5, 1.6 + 0.36 * len(cats)),
                             squeeze=False)
    for ax, level in zip(axes[0], LEVELS):
        grid = np.array([[results.get((m, level, c), {}).get("pk", np.nan) for m in methods] for c in cats])
        draw_heatmap(fig, ax, grid, [readable(c) for c in cats], methods, "Pk (error probability)")
        ax.tick_params(axis="x", labelrotation=45)
        ax.set_title(f"{level} level (lower is better)", fontsize=9)
    axes[0][0].set_ylabel("document category")
    fig.suptitle("Pk per category, level and method", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def build_parser():
    from lit_block.command_line import command_parser

    p = command_parser("lit-block eval-seg", __doc__)
    p.add_argument("--dataset", default="data/semanticseg", help="corpus folder (lit-block data build)")
    p.add_argument("--split", default="test", choices=("train", "validation", "test"), help="the corpus split scored")
    p.add_argument("--checkpoint", help="trained segmenter; without it only the baselines run")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS,
                   help="methods compared (segmenter only with --checkpoint)")
    p.add_argument("--per-category", type=int, default=6, help="documents per category")
    p.add_argument("--coarse-scoring", default=None, choices=COARSE_SCORING,
                   help="the segmenter's coarse scores (default: the checkpoint's, else topic-shift)")
    add_inference_options(p)
    p.add_argument("--tolerance", type=int, default=10, help="tokens of slack for F1 (tol)")
    p.add_argument("--output", default="eval-seg", help="folder for the table, JSON and plot")
    p.add_argument("--experiment", default="eval-seg", help="MLflow experiment ('' to skip logging)")
    g = p.add_argument_group("leave one category out (lit_block.segmentation.leave_one_out)")
    g.add_argument("--leave-one-out", default=None, help="a segmenter fit config: train it without each category "
                   "in turn and score it on the one left out (all its splits)")
    g.add_argument("--categories", nargs="+", default=None, help="only leave out these (null: every category)")
    g.add_argument("--extra", action="append", default=[], help="an argument appended to every fold's `lit-block "
                   "fit`, as --extra=--trainer.max_epochs=2 (repeatable)")
    g.add_argument("--force", action="store_true", help="retrain folds whose checkpoint exists")
    g.add_argument("--jobs", type=int, default=1, help="folds trained at a time, each its own `lit-block "
                   "fit` process (for a GPU, which one small fit leaves mostly idle)")
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.leave_one_out:
        return leave_one_out_main(args)
    from datasets import load_from_disk

    methods = [m for m in args.methods if m != "segmenter" or args.checkpoint]
    rows = pick_documents(load_from_disk(args.dataset)[args.split], args.per_category)
    segmenters = {m: Segmenter(m, args.checkpoint if m == "segmenter" else None, coarse_scoring=args.coarse_scoring,
                               **inference_options(args)) for m in methods}
    results = evaluate(rows, segmenters, args.tolerance)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    table = summary_table(results) + ("\n\n" + win_table(results) if "segmenter" in methods else "")
    write_text_atomic(out / "eval_seg.md", table + "\n")
    save_results(out / "eval_seg.json", results)
    plot_pk(results, out / "pk_per_category.png")
    print(f"\n{len(rows)} documents of the {args.split} split\n\n{table}\n\nwritten to {out}/")
    if args.experiment:
        import mlflow

        from lit_block.tracking import start_mlflow_run

        with start_mlflow_run(args.experiment, f"eval-seg-{args.split}"):
            mlflow.log_params({"dataset": args.dataset, "checkpoint": args.checkpoint, "documents": len(rows)})
            mlflow.log_metrics({f"{m}.{lv}.{c}.{k}".replace(" ", "_"): v for (m, lv, c), r in results.items()
                                for k, v in r.items() if k in SUMMARY_KEYS and v == v})
            for f in ("eval_seg.md", "eval_seg.json", "pk_per_category.png"):
                mlflow.log_artifact(str(out / f))
    return 0


def leave_one_out_main(args) -> int:
    from contextlib import nullcontext

    from lit_block.segmentation import leave_one_out

    if args.experiment:
        from lit_block.tracking import start_mlflow_run

        context = start_mlflow_run(args.experiment, "eval-seg-leave-one-out")
    else:
        context = nullcontext()
    with context:
        text, found = leave_one_out.run(args)
        print(f"\n{text}\n\nwritten to {args.output}/")
        if args.experiment:
            import mlflow

            mlflow.log_params({"dataset": args.dataset, "config": args.leave_one_out,
                               "extra": " ".join(args.extra)[:500], "per_category": args.per_category})
            mlflow.log_metrics({f"{m}.{lv}.{c}.{k}".replace(" ", "_"): v for (m, lv, c), r in found["results"].items()
                                for k, v in r.items() if k in SUMMARY_KEYS and v == v})
            mlflow.log_metrics({f"goal.{k}": float(v) for k, v in found["goals"].items()})
            for f in ("leave_one_out.md", "leave_one_out.json", "pk_per_left_out_category.png"):
                mlflow.log_artifact(str(Path(args.output) / f))
    return 0
