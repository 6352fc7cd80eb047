"""Score segmenter recipes against each other: leave-one-out folds, held-out families and the corpus test split
(docs/results/segmenter_encoder_depth_2026-12-07.md).

Each recipe is a folder of checkpoints trained the same way: ``<category>.ckpt`` for the fold without that category,
``full.ckpt`` for the segmenter trained on every category. Every checkpoint is scored with the shipped inference
defaults beside every baseline (baselines once: they do not depend on the recipe): the folds on their left-out
category's documents (``eval-seg --leave-one-out``'s 10 per category, from all splits), the full segmenters on the
held-out families and on the test split. Parts (``--categories``) merge (``--merge``). The report prints each recipe's
goal table and each recipe's pooled Pk minus the first recipe's, with 95% paired bootstrap intervals over documents.

    python scripts/recipe_study.py --recipes R=ckpts/R C=ckpts/C --categories academic code --output study/a
    python scripts/recipe_study.py --recipes R=ckpts/R C=ckpts/C --sets heldout test --output study/b
    python scripts/recipe_study.py --recipes R=ckpts/R C=ckpts/C --merge study/a study/b --output study
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

SETS = ("folds", "heldout", "test")


def score(rows: list[dict], checkpoints: dict[str, Path]) -> dict:
    """``evaluate``'s results, each recipe's segmenter under the recipe's name, beside every baseline."""
    from lit_block.segmentation.evaluation import evaluate
    from lit_block.segmentation.segmenter import METHODS, Segmenter

    methods = {name: Segmenter("segmenter", str(ckpt)) for name, ckpt in checkpoints.items()}
    methods.update({b: Segmenter(b) for b in METHODS if b != "segmenter"})
    return evaluate(rows, methods)


def score_parts(args) -> None:
    """Score what ``args`` selects into ``args.output/<set>.json`` (keys ``method|level|category``)."""
    from datasets import load_from_disk

    from lit_block.segmentation.evaluation import pick_documents

    out: dict[str, dict] = {}
    data = load_from_disk(args.dataset)
    if args.categories:
        rows = [r for split in data for r in data[split]]
        out["folds"] = {}
        for category in args.categories:
            print(f"=== fold without {category}", flush=True)
            picked = pick_documents([r for r in rows if r["category"] == category], args.per_category)
            found = score(picked, {n: folder / f"{category}.ckpt" for n, folder in args.recipes.items()})
            out["folds"].update({k: v for k, v in found.items() if k[2] != "all"})
    full = {n: folder / "full.ckpt" for n, folder in args.recipes.items()}
    if "heldout" in args.sets:
        out["heldout"] = score([r for split in load_from_disk(args.heldout).values() for r in split], full)
    if "test" in args.sets:
        out["test"] = score(pick_documents(list(data["test"]), args.per_category), full)
    args.output.mkdir(parents=True, exist_ok=True)
    for name, results in out.items():
        (args.output / f"{name}.json").write_text(json.dumps({"|".join(k): v for k, v in results.items()}))


def as_segmenter(results: dict, recipe: str, recipes: list[str]) -> dict:
    """The view of ``results`` in which ``recipe`` is the method named ``segmenter`` (what the goal tables read)."""
    return {("segmenter" if m == recipe else m, lv, c): v for (m, lv, c), v in results.items()
            if m == recipe or m not in recipes}


def report(folders: list[Path], recipes: list[str], output: Path) -> None:
    """Merge scored parts; print and write (``output/report.md``) the tables and the registered decision."""
    from lit_block.segmentation.evaluation import family_table, pooled_pk_table
    from lit_block.segmentation.leave_one_out import goal_table
    from lit_block.segmentation.segmenter import LEVELS, METHODS

    baselines = [m for m in METHODS if m != "segmenter"]
    merged: dict[str, dict] = {}
    for folder in folders:
        for name in SETS:
            if (folder / f"{name}.json").is_file():
                found = json.loads((folder / f"{name}.json").read_text())
                merged.setdefault(name, {}).update({tuple(k.split("|")): v for k, v in found.items()})
    lines, decision, won = [], {}, {}
    if "folds" in merged:
        categories = sorted({c for _, _, c in merged["folds"]})
        for name in recipes:
            table, goals = goal_table(as_segmenter(merged["folds"], name, recipes), categories, baselines)
            won[name] = round(goals["share_won"] * goals["categories"])
            lines += [f"## {name}: {len(categories)} leave-one-out folds", "", table, ""]
    for name, label in (("folds", "folds' left-out documents"), ("heldout", "held-out families"),
                        ("test", "corpus test split")):
        if name in merged:
            table, decision[name] = pooled_pk_table(merged[name], recipes, label)
            lines += table + [""]
    for name in recipes:
        if "heldout" in merged:
            lines += [f"held-out families, {name}:", "",
                      family_table(as_segmenter(merged["heldout"], name, recipes), baselines), ""]
    base = recipes[0]
    for name in recipes[1:]:
        rule = [bool(won) and won[name] >= won[base]] + [
            s in decision and not any(decision[s][name, lv][1] > 0 for lv in LEVELS) for s in SETS]
        lines.append(f"{name} against {base}: folds won {won.get(name)} vs {won.get(base)} ({rule[0]}); no level "
                     f"worse on the folds {rule[1]}, the held-out families {rule[2]}, the test split {rule[3]} -> "
                     f"{'adopt' if all(rule) else f'keep {base}'}")
    output.mkdir(parents=True, exist_ok=True)
    (output / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def recipe_folder(value: str) -> tuple[str, Path]:
    name, sep, folder = value.partition("=")
    if not sep or not name or not Path(folder).is_dir():
        raise argparse.ArgumentTypeError(f"--recipes takes NAME=FOLDER with an existing folder, got {value!r}")
    return name, Path(folder)


def main() -> None:
    from lit_block.segmentation.evaluation import add_study_options

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipes", type=recipe_folder, nargs="+", required=True,
                   help="NAME=FOLDER, the first is the reference")
    p.add_argument("--categories", nargs="*", default=[], help="folds to score (left-out categories)")
    p.add_argument("--sets", nargs="*", default=[], choices=("heldout", "test"), help="full segmenters scored on these")
    add_study_options(p)
    args = p.parse_args()
    args.recipes = dict(args.recipes)
    if args.categories or args.sets:
        score_parts(args)
        folders = [*args.merge, args.output]
    else:
        folders = args.merge or [args.output]
    report(folders, list(args.recipes), args.output)


if __name__ == "__main__":
    main()
