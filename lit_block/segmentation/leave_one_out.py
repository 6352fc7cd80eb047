"""``lit-block eval-seg --leave-one-out CONFIG``: does the segmenter hold up on a kind of text it never saw?

For every category of the corpus (or those of ``--categories``), the segmenter of CONFIG (a
``lit-block fit`` YAML) is trained on every other category, in its own folder and MLflow run, then it
and every baseline are scored on the left-out category's documents, taken from all splits since none
was trained on. Baselines are given the same average block size as the gold segmentation, as in
``eval-seg``. The table says per category and level whether the segmenter beats every baseline on
both Pk and WindowDiff, and the issue's goals are checked at the end. A fold whose checkpoint exists
is reused if it was trained the same way (the config's contents, the dataset, ``--extra``; else an error
names what changed; ``--force`` retrains), so an interrupted run resumes; the frozen encoder's unit features
are stored once under ``<output>/features`` and shared by every fold.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from lit_block.errors import UsageError, check_number
from lit_block.output_dir import write_text_atomic
from lit_block.segmentation.results_file import save_results
from lit_block.segmentation.segmenter import LEVELS, Segmenter, inference_options

GOAL_SHARE, GOAL_COARSE_PK = 0.9, 0.30  # the goals: share of categories won, coarse Pk in every one


def fold_checkpoint(folder: Path) -> Path | None:
    """The checkpoint a fold's fit wrote (the config's ModelCheckpoint path, or the run folder's)."""
    found = sorted(folder.rglob("*.ckpt"), key=lambda p: (p.name != "segmenter.ckpt", -p.stat().st_mtime))
    return found[0] if found else None


def train_fold(config: Path, dataset: Path, category: str, folder: Path, extra: list[str], parent: str | None,
               force: bool) -> Path:
    """Train the segmenter without ``category`` (a ``lit-block fit`` process in ``folder``); its checkpoint. A fold
    trained before is reused only if it was trained the same way (the config's contents, the dataset, ``extra``)."""
    done = folder / "fold.json"
    training = {"config_sha256": hashlib.sha256(config.read_bytes()).hexdigest(), "dataset": str(dataset),
                "extra": list(extra)}
    if done.is_file() and not force and (ckpt := fold_checkpoint(folder)):
        recorded = json.loads(done.read_text()).get("training")
        if recorded is None:
            print(f"  reusing {ckpt} (trained before folds recorded how; --force retrains)", flush=True)
            return ckpt
        changed = [k for k in training if recorded.get(k) != training[k]]
        if changed:
            names = {"config_sha256": "the config's contents", "dataset": "--dataset", "extra": "--extra"}
            was = ", ".join(f"{k}: {recorded.get(k)!r}" for k in changed)
            raise UsageError(f"the fold without {category!r} in {folder} was trained with another "
                             f"{', '.join(names[k] for k in changed)} ({was}); pass --force to retrain it, or another "
                             "--output")
        print(f"  reusing {ckpt}", flush=True)
        return ckpt
    folder.mkdir(parents=True, exist_ok=True)
    done.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "lit_block.cli", "fit", f"--config={config}",
           f"--data.init_args.dataset_path={dataset}", f"--data.init_args.exclude_categories=[{category}]",
           f"--model.init_args.feature_cache_dir={folder.parent.parent / 'features'}",
           f"--trainer.logger.init_args.run_name=leave out {category}", *extra]
    env = dict(os.environ)
    if parent:  # every fold's run links to the evaluation's run (tags the MLflow UI filters on)
        env["LIT_BLOCK_MLFLOW_TAGS"] = json.dumps({"lit_block.leave_one_out": parent, "left_out": category})
    started = time.time()
    with open(folder / "fit.log", "w") as log:
        code = subprocess.run(cmd, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    ckpt = fold_checkpoint(folder)
    if code != 0 or ckpt is None:
        raise UsageError(f"training without {category!r} failed (status {code}); see {folder / 'fit.log'}")
    write_text_atomic(done, json.dumps({"category": category, "checkpoint": str(ckpt), "training": training,
                                        "started": started, "finished": time.time()}))  # Unix times of the fit
    return ckpt


def goal_table(results: dict, categories: list[str], baselines: list[str]) -> tuple[str, dict]:
    """Per left-out category and level: the segmenter's Pk / WindowDiff, the best baseline's, and whether the
    segmenter beats every baseline on both; then the goals. A level without gold boundaries in the category's
    documents decides nothing (every method cuts nothing and all score 0, as in ``eval-seg``'s win table)."""
    lines = ["| left out | " + " | ".join(f"{lv}: Pk / WD (best baseline) | beats all" for lv in LEVELS) + " |",
             "|---|" + "---|---|" * len(LEVELS)]
    won, coarse_ok = [], []
    for c in categories:
        cells, wins = [], []
        for lv in LEVELS:
            ours = results[("segmenter", lv, c)]
            best_pk = min(results[(b, lv, c)]["pk"] for b in baselines)
            best_wd = min(results[(b, lv, c)]["windowdiff"] for b in baselines)
            if ours["reference_boundaries"] == 0:
                verdict = "n/a (no gold boundaries)"
            else:
                beats = ours["pk"] < best_pk and ours["windowdiff"] < best_wd
                wins.append(beats)
                verdict = "yes" if beats else "no"
            cells.append(f"{ours['pk']:.3f} / {ours['windowdiff']:.3f} ({best_pk:.3f} / {best_wd:.3f}) | {verdict}")
        won.append(bool(wins) and all(wins))  # a category with no gold boundary at any level wins nothing
        coarse_ok.append(results[("segmenter", "coarse", c)]["pk"] <= GOAL_COARSE_PK)
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    share = sum(won) / max(len(won), 1)
    intervals, not_beaten = difference_table(results, categories, baselines)
    goals = {"share_won": share, "coarse_pk_ok": sum(coarse_ok), "categories": len(categories),
             "not_significantly_beaten": not_beaten}
    lines += ["", f"segmenter beats every baseline on Pk and WindowDiff at every level in {sum(won)}/{len(won)} "
              f"left-out categories ({share:.0%}; goal >= {GOAL_SHARE:.0%}): {'met' if share >= GOAL_SHARE else 'not met'}",
              f"coarse Pk <= {GOAL_COARSE_PK} in {sum(coarse_ok)}/{len(coarse_ok)} left-out categories (goal: all): "
              f"{'met' if all(coarse_ok) else 'not met'}", "", intervals]
    return "\n".join(lines), goals


def difference_table(results: dict, categories: list[str], baselines: list[str]) -> tuple[str, int]:
    """Segmenter minus the best baseline (lowest Pk at that level in that category), Pk, with a 95% paired
    bootstrap interval over the category's documents; and in how many categories no level's interval lies
    wholly above zero (the segmenter is not significantly beaten). A handful of documents a category leaves
    wide intervals: a "no" in the goal table inside an interval that holds zero is not a measured loss."""
    from lit_block.segmentation.evaluation import pk_difference

    lines = ["Pk, segmenter minus the best baseline, 95% paired bootstrap interval over documents:", "",
             "| left out | " + " | ".join(LEVELS) + " |", "|---|" + "---|" * len(LEVELS)]
    not_beaten = 0
    for c in categories:
        cells, beaten = [], False
        for lv in LEVELS:
            ours = results[("segmenter", lv, c)]
            best = min(baselines, key=lambda b: results[(b, lv, c)]["pk"])
            theirs = results[(best, lv, c)]
            if ours["reference_boundaries"] == 0:
                cells.append("n/a")
                continue
            diff, low, high = pk_difference(ours, theirs)
            beaten |= low > 0  # nan compares False: too few documents to tell
            cells.append(f"{diff:+.3f} [{low:+.3f}, {high:+.3f}] ({best})")
        not_beaten += not beaten
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    lines += ["", f"no level significantly worse than the best baseline in {not_beaten}/{len(categories)} "
              "left-out categories"]
    return "\n".join(lines), not_beaten


def train_folds(categories: list[str], config: Path, dataset: Path, out: Path, args, parent: str | None) -> dict:
    """Category -> checkpoint of its fold, ``args.jobs`` fits at a time (each its own process: on a GPU machine
    several share the device, which one small fit leaves mostly idle). Every fit runs to its end before a failure
    is raised, so a rerun resumes from all that finished."""
    from concurrent.futures import ThreadPoolExecutor

    def one(numbered: tuple[int, str]) -> Path:
        i, category = numbered
        print(f"=== [{i + 1}/{len(categories)}] leave out {category}", flush=True)
        return train_fold(config, dataset, category, (out / "folds" / category).resolve(), args.extra, parent,
                          args.force)

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:  # threads only wait on their fit's process
        futures = [pool.submit(one, numbered) for numbered in enumerate(categories)]
    return {category: future.result() for category, future in zip(categories, futures)}


def run(args) -> tuple[str, dict]:
    """Train a fold per category, score it and the baselines on that category; print and log the tables."""
    from datasets import load_from_disk

    from lit_block.segmentation.evaluation import evaluate, pick_documents, plot_pk

    config, dataset, out = Path(args.leave_one_out).resolve(), Path(args.dataset).resolve(), Path(args.output)
    if not config.is_file():
        raise FileNotFoundError(f"--leave-one-out: segmenter config not found: {config}")
    data = load_from_disk(str(dataset))
    rows = [r for split in data for r in data[split]]
    present = sorted({r["category"] for r in rows})
    categories = args.categories or present
    unknown = sorted(set(categories) - set(present))
    if unknown:
        raise UsageError(f"--categories: {unknown} not in {dataset} (it has {', '.join(present)})")
    check_number("--jobs", args.jobs, low=1, integer=True)
    baselines = [m for m in args.methods if m != "segmenter"]
    if not baselines:
        raise UsageError("--methods: the leave-one-out table compares the segmenter with at least one baseline")
    results: dict = {}
    parent = _active_run_id() if args.experiment else None  # without logging there is no run to link folds to
    checkpoints = train_folds(categories, config, dataset, out, args, parent)
    for i, category in enumerate(categories):
        print(f"\n=== [{i + 1}/{len(categories)}] score the fold without {category}", flush=True)
        ckpt = checkpoints[category]
        picked = pick_documents([r for r in rows if r["category"] == category], args.per_category)
        segmenters = {m: Segmenter(m, str(ckpt) if m == "segmenter" else None, coarse_scoring=args.coarse_scoring,
                                   **inference_options(args)) for m in ["segmenter", *baselines]}
        fold = evaluate(picked, segmenters, args.tolerance)
        results.update({k: v for k, v in fold.items() if k[2] != "all"})  # "all" of a fold is its one category
    table, goals = goal_table(results, categories, baselines)
    details = summary_by_category(results, categories)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "leave_one_out.md", table + "\n\n" + details + "\n")
    save_results(out / "leave_one_out.json", results)
    plot_pk(results, out / "pk_per_left_out_category.png")
    return table + "\n\n" + details, {"results": results, "goals": goals}


def summary_by_category(results: dict, categories: list[str]) -> str:
    """Pk and WindowDiff of every method per left-out category and level."""
    methods = sorted({m for m, _, _ in results}, key=lambda m: (m != "segmenter", m))
    lines = ["| left out | level | " + " | ".join(methods) + " |", "|---|---|" + "---|" * len(methods)]
    for c in categories:
        for lv in LEVELS:
            lines.append(f"| {c} | {lv} | " + " | ".join(
                f"{results[(m, lv, c)]['pk']:.3f} / {results[(m, lv, c)]['windowdiff']:.3f}" for m in methods) + " |")
    return "Pk / WindowDiff per method:\n\n" + "\n".join(lines)


def _active_run_id() -> str | None:
    import mlflow

    run = mlflow.active_run()
    return run.info.run_id if run else None
