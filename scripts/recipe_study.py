"""Score segmenter recipes against each other: leave-one-out folds, held-out families and the corpus test split
(docs/results/segmenter_encoder_depth_2026-12-07.md, and over seeds segmenter_encoder_depth_folds_2026-12-08.md).

Each recipe is a folder of checkpoints trained the same way: ``<category>.ckpt`` for the fold without that category
(or an ``eval-seg --leave-one-out`` output), ``full.ckpt`` for the segmenter trained on every category. Every
checkpoint is scored with the shipped inference defaults beside every baseline (baselines once: they do not depend on
the recipe): the folds on their left-out category's documents (``eval-seg --leave-one-out``'s 10 per category, from
all splits), the full segmenters on the held-out families and on the test split. Parts (``--categories``) merge
(``--merge``). The report prints each recipe's goal table and each recipe's pooled Pk minus the first recipe's, with
95% paired bootstrap intervals over documents. Trainings of one recipe with different seeds are named ``NAME@SEED``;
then the rule compares means over seeds, with intervals over documents and seeds.

    python scripts/recipe_study.py --recipes R=ckpts/R C=ckpts/C --categories academic code --output study/a
    python scripts/recipe_study.py --recipes R=ckpts/R C=ckpts/C --sets heldout test --output study/b
    python scripts/recipe_study.py --recipes R=ckpts/R C=ckpts/C --merge study/a study/b --output study
    python scripts/recipe_study.py --recipes R@0=R0 R@1=R1 C@0=C0 C@1=C1 --sets heldout test --output study/c
"""

from __future__ import annotations

import argparse
from pathlib import Path

SETS = ("folds", "heldout", "test")
MARGIN = 0.005  # the largest mean Pk loss over seeds the 2026-12-08 rule tolerates at any level


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

    from lit_block.segmentation.evaluation import fold_checkpoints, pick_documents
    from lit_block.segmentation.results_file import save_results

    out: dict[str, dict] = {}
    folds = {n: fold_checkpoints(folder) for n, folder in args.recipes.items()}
    for name, found in folds.items():  # before any scoring: a missing checkpoint would stop a long run late
        if missing := sorted(set(args.categories) - set(found)):
            raise SystemExit(f"--recipes {name}={args.recipes[name]}: no fold checkpoint for {', '.join(missing)}")
        if args.sets and not (args.recipes[name] / "full.ckpt").is_file():
            raise SystemExit(f"--recipes {name}={args.recipes[name]}: no full.ckpt for --sets {' '.join(args.sets)}")
    data = load_from_disk(args.dataset)
    if args.categories:
        rows = [r for split in data for r in data[split]]
        out["folds"] = {}
        for category in args.categories:
            print(f"=== fold without {category}", flush=True)
            picked = pick_documents([r for r in rows if r["category"] == category], args.per_category)
            found = score(picked, {n: f[category] for n, f in folds.items()})
            out["folds"].update({k: v for k, v in found.items() if k[2] != "all"})
    full = {n: folder / "full.ckpt" for n, folder in args.recipes.items()}
    if "heldout" in args.sets:
        out["heldout"] = score([r for split in load_from_disk(args.heldout).values() for r in split], full)
    if "test" in args.sets:
        out["test"] = score(pick_documents(list(data["test"]), args.per_category), full)
    args.output.mkdir(parents=True, exist_ok=True)
    for name, results in out.items():
        save_results(args.output / f"{name}.json", results)


def as_segmenter(results: dict, recipe: str, recipes: list[str]) -> dict:
    """The view of ``results`` in which ``recipe`` is the method named ``segmenter`` (what the goal tables read)."""
    return {("segmenter" if m == recipe else m, lv, c): v for (m, lv, c), v in results.items()
            if m == recipe or m not in recipes}


def report(folders: list[Path], recipes: list[str], output: Path) -> None:
    """Merge scored parts; print and write (``output/report.md``) the tables and the registered decision."""
    from lit_block.segmentation.evaluation import family_table, pooled_pk_table
    from lit_block.segmentation.leave_one_out import goal_table
    from lit_block.segmentation.results_file import load_results
    from lit_block.segmentation.segmenter import LEVELS, METHODS

    baselines = [m for m in METHODS if m != "segmenter"]
    merged: dict[str, dict] = {}
    for folder in folders:
        for name in SETS:
            if (folder / f"{name}.json").is_file():
                merged.setdefault(name, {}).update(load_results(folder / f"{name}.json"))
    lines, decision, won, coarse = [], {}, {}, {}
    if "folds" in merged:
        categories = sorted({c for _, _, c in merged["folds"]})
        for name in recipes:
            table, goals = goal_table(as_segmenter(merged["folds"], name, recipes), categories, baselines)
            won[name] = round(goals["share_won"] * goals["categories"])
            coarse[name] = goals["coarse_pk_ok"]
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
    groups = seed_groups(recipes)
    if any(len(seeds) > 1 for seeds in groups.values()):
        lines += seeded_rule(merged, groups, won, coarse)
    else:
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


def seed_groups(recipes: list[str]) -> dict[str, list[str]]:
    """Recipe names ``NAME@SEED`` grouped by ``NAME`` (a name without ``@`` is a group of one), in order."""
    groups: dict[str, list[str]] = {}
    for name in recipes:
        groups.setdefault(name.split("@")[0], []).append(name)
    return groups


def seeded_rule(merged: dict, groups: dict[str, list[str]], won: dict, coarse: dict,
                margin: float = MARGIN) -> list[str]:
    """The rule over seeds (docs/results/segmenter_encoder_depth_folds_2026-12-08.md): each later group against the
    first, goal counts summed over seeds, and per set and level the mean over seeds of pooled Pk minus the first
    group's with a two-level (documents, seeds) bootstrap interval."""
    from lit_block.quality import seeded_ratio_difference
    from lit_block.segmentation.evaluation import pooled
    from lit_block.segmentation.segmenter import LEVELS

    (base, base_names), *others = groups.items()
    lines = ["mean over seeds of pooled Pk, minus " + base + "'s, 95% bootstrap interval over documents and seeds", "",
             "| set | recipe | seeds | " + " | ".join(LEVELS) + " |", "|---|---|---|" + "---|" * len(LEVELS)]
    verdict = {}
    for name, names in others:
        ok = []
        for s in (s for s in SETS if s in merged):
            cells = []
            for level in LEVELS:
                docs = {n: pooled(merged[s], level, n)["documents"] for n in (*base_names, *names)}
                windows = [d[2] for d in docs[base_names[0]]]
                if any([d[2] for d in v] != windows for v in docs.values()):
                    raise ValueError(f"{s}, {level}: the recipes were scored on different documents")
                d, low, high = seeded_ratio_difference([[x[0] for x in docs[n]] for n in base_names],
                                                       [[x[0] for x in docs[n]] for n in names], windows)
                ok.append(d <= margin and low <= 0)
                cells.append(f"{d:+.4f} [{low:+.4f}, {high:+.4f}]")
            lines.append(f"| {s} | {name} | {len(names)} | " + " | ".join(cells) + " |")
        counts = [(sum(won[n] for n in names), sum(won[n] for n in base_names)),
                  (sum(coarse[n] for n in names), sum(coarse[n] for n in base_names))] if won else []
        enough = len(names) >= 2 and len(base_names) >= 2 and set(merged) == set(SETS)
        verdict[name] = enough and bool(counts) and all(c >= b - 1 for c, b in counts) and all(ok)
        won_text, coarse_text = (f"{c} vs {b}" for c, b in counts) if counts else ("not scored",) * 2
        lines += ["", f"{name} against {base} over seeds: folds won {won_text}, coarse Pk <= 0.30 {coarse_text} "
                      f"(summed over seeds, at least theirs minus one); every set and level within +{margin} and no "
                      f"interval above zero: {all(ok)} -> {'adopt' if verdict[name] else f'keep {base}'}"]
    return lines


def recipe_folder(value: str) -> tuple[str, Path]:
    name, sep, folder = value.partition("=")
    if not sep or not name or not Path(folder).is_dir():
        raise argparse.ArgumentTypeError(f"--recipes takes NAME=FOLDER with an existing folder, got {value!r}")
    return name, Path(folder)


def main() -> None:
    from lit_block.segmentation.evaluation import add_study_options

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipes", type=recipe_folder, nargs="+", required=True,
                   help="NAME=FOLDER, the first is the reference; NAME@SEED groups trainings of one recipe")
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
