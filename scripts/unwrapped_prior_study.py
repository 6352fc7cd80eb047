"""Score the registered per-document fine prior V3 against the shipped V2
(docs/results/segmenter_unwrapped_prior_2026-12-07.md).

V3 gives units inside a line the fine weight 0.02 instead of 0.25 in documents whose lines are not hard-wrapped
(``planner.wrapped_line_share`` under 0.10). Fold checkpoints are scored on their left-out category's documents
(``eval-seg --leave-one-out``'s 10 per category) beside the baselines; each full segmenter (one per training seed) on
the held-out families and the corpus test split. Both settings cut the same unit probabilities, so the encoder runs
once per document. Then it prints the goal tables, the paired comparisons and the registered decision.

    python scripts/unwrapped_prior_study.py --folds FOLDS --full 0=s0.ckpt 1=s1.ckpt 2=s2.ckpt --output O
    python scripts/unwrapped_prior_study.py --merge O1 O2 --output O      # parts scored apart, reported together

``FOLDS`` holds ``<category>.ckpt`` files, or is an ``eval-seg --leave-one-out`` output (``folds/<category>/``).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

SHIPPED = {"fine_inline_weight": 0.25, "mid_sentence_weight": 0.0}
SETTINGS = {"V2": {**SHIPPED, "fine_inline_weight_unwrapped": None},
            "V3": {**SHIPPED, "fine_inline_weight_unwrapped": 0.02}}


def save(path: Path, results: dict[str, dict]) -> None:
    path.write_text(json.dumps({name: {"|".join(k): v for k, v in r.items()} for name, r in results.items()}, indent=1))


def load(path: Path) -> dict[str, dict]:
    return {name: {tuple(k.split("|")): v for k, v in r.items()} for name, r in json.loads(path.read_text()).items()}


def score_all(args) -> None:
    """Score the folds into ``folds.json`` and each seed's full segmenter into ``heldout_<seed>.json`` and
    ``test_<seed>.json`` under ``args.output`` (baselines scored once, with the first seed, and copied)."""
    from datasets import load_from_disk

    from lit_block.segmentation.evaluation import pick_documents, score_fold_settings, score_settings
    from lit_block.segmentation.segmenter import METHODS

    baselines = [m for m in METHODS if m != "segmenter"]
    args.output.mkdir(parents=True, exist_ok=True)
    if args.folds is not None:
        data = load_from_disk(args.dataset)
        rows = [r for split in data for r in data[split]]
        save(args.output / "folds.json", score_fold_settings(args.folds, rows, args.per_category, baselines, SETTINGS))
    sets = {"heldout": [r for split in load_from_disk(args.heldout).values() for r in split],
            "test": pick_documents(load_from_disk(args.dataset)["test"], 10**6)} if args.full else {}
    for set_name, rows in sets.items():
        first = None
        for seed, ckpt in args.full:
            print(f"=== {set_name}, seed {seed} ({ckpt}, {len(rows)} documents)", flush=True)
            results = score_settings(rows, ckpt, baselines if first is None else [], SETTINGS)
            if first is None:
                first = results
            else:  # the baselines do not depend on the checkpoint
                for name in results:
                    results[name].update({k: v for k, v in first[name].items() if k[0] != "segmenter"})
            save(args.output / f"{set_name}_{seed}.json", results)


def decide(folds: dict | None, per_seed: dict[str, dict[str, dict]]) -> tuple[list[str], bool]:
    """The registered rule. ``folds``: settings_comparison's differences over the folds; ``per_seed``: set name ->
    seed -> the same over that set. Lines saying what each condition found, and whether V3 is adopted."""
    lines, ok = [], []
    if folds is not None:
        d, low, high = folds["V3", "fine"]
        ok.append(high < 0)
        lines.append(f"1. folds, fine: {d:+.4f} [{low:+.4f}, {high:+.4f}], wholly below zero: {ok[-1]}")
    else:
        ok.append(False)
        lines.append("1. folds: none scored")
    for number, set_name in enumerate(("heldout", "test"), start=2):
        seeds = per_seed.get(set_name, {})
        fine = [found["V3", "fine"] for found in seeds.values()]
        if not fine:
            ok.append(False)
            lines.append(f"{number}. {set_name}: none scored")
            continue
        mean = statistics.mean(d for d, _, _ in fine)
        ok.append(all(low <= 0 for _, low, _ in fine) and mean <= 0)
        cells = ", ".join(f"seed {s}: {d:+.4f} [{low:+.4f}, {high:+.4f}]" for s, (d, low, high) in zip(seeds, fine))
        lines.append(f"{number}. {set_name}, fine: {cells}; mean {mean:+.4f}; none above zero and mean <= 0: {ok[-1]}")
    return lines, all(ok)


def report(folders: list[Path], output: Path) -> None:
    from lit_block.segmentation.evaluation import family_table, settings_comparison
    from lit_block.segmentation.leave_one_out import goal_table
    from lit_block.segmentation.segmenter import METHODS

    baselines = [m for m in METHODS if m != "segmenter"]
    folds: dict[str, dict] = {name: {} for name in SETTINGS}
    sets: dict[str, dict[str, dict]] = {"heldout": {}, "test": {}}
    for folder in folders:
        if (folder / "folds.json").is_file():
            for name, r in load(folder / "folds.json").items():
                folds[name].update(r)
        for set_name in sets:
            for path in sorted(folder.glob(f"{set_name}_*.json")):
                sets[set_name][path.stem.split("_", 1)[1]] = load(path)
    output.mkdir(parents=True, exist_ok=True)
    text, fold_found = [], None
    categories = sorted({c for _, _, c in folds["V2"]})
    if categories:
        for name in SETTINGS:
            table, _ = goal_table(folds[name], categories, baselines)
            text += [f"## Folds, {name} {SETTINGS[name]}", "", table, ""]
        lines, fold_found = settings_comparison(folds, f"{len(categories)} folds' left-out documents", list(SETTINGS))
        text += lines + [""]
    per_seed: dict[str, dict[str, dict]] = {}
    for set_name, seeds in sets.items():
        for seed, results in seeds.items():
            lines, per_seed.setdefault(set_name, {})[seed] = settings_comparison(
                results, f"{set_name}, full segmenter seed {seed}", list(SETTINGS))
            text += lines + [""]
            if set_name == "heldout":
                for name in SETTINGS:
                    text += [f"held-out families, seed {seed}, {name}:", "", family_table(results[name], baselines), ""]
    lines, adopt = decide(fold_found, per_seed)
    text += ["## Registered rule", "", *lines, "", f"-> {'adopt V3' if adopt else 'keep V2'}"]
    (output / "report.md").write_text("\n".join(text) + "\n")
    print("\n".join(text), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--folds", type=Path, help="fold checkpoints to score")
    p.add_argument("--full", nargs="+", default=[], type=lambda s: tuple(s.split("=", 1)),
                   help="SEED=CHECKPOINT of segmenters trained on every category (held-out families, test split)")
    p.add_argument("--merge", type=Path, nargs="+", default=[], help="earlier --output folders to report with these")
    p.add_argument("--dataset", default="data/semanticseg")
    p.add_argument("--heldout", default="data/heldout-families")
    p.add_argument("--per-category", type=int, default=10)
    p.add_argument("--output", type=Path, required=True)
    args = p.parse_args()
    if any(len(f) != 2 for f in args.full):
        p.error(f"--full takes SEED=CHECKPOINT, got {' '.join('='.join(f) for f in args.full)}")
    scoring = args.folds is not None or args.full
    if not scoring and not args.merge:
        p.error("give --folds or --full to score, --merge to report scored folders, or both")
    if scoring:
        score_all(args)
    report([*args.merge, args.output] if scoring else args.merge, args.output)


if __name__ == "__main__":
    main()
