"""Score a registered per-document fine prior against the one before it (``--study``):
- ``unwrapped`` (docs/results/segmenter_unwrapped_prior_2026-12-07.md): V3, units inside a line get the fine weight
  0.02 instead of 0.25 in documents whose lines are not hard-wrapped (``planner.wrapped_line_share`` under 0.10),
  against V2;
- ``line-order`` (docs/results/segmenter_line_order_prior_2026-12-07.md): V4, 1e-6 there, against V3;
- ``after-heading`` (docs/results/segmenter_after_heading_prior_2026-12-08.md): V5, in those documents units right
  after a heading-like line (``planner.heading_like``) also get the fine weight 1e-4, against V4.

Fold checkpoints are scored on their left-out category's documents
(``eval-seg --leave-one-out``'s 10 per category) beside the baselines; each full segmenter (one per training seed) on
the held-out families and the corpus test split. Both settings cut the same unit probabilities, so the encoder runs
once per document. Then it prints the goal tables, the paired comparisons and the registered decision.

    python scripts/unwrapped_prior_study.py --study S --folds 0=F0 1=F1 --full 0=s0.ckpt 1=s1.ckpt --output O
    python scripts/unwrapped_prior_study.py --study S --merge O1 O2 --output O   # parts scored apart, reported together

Each fold folder ``F<seed>`` holds ``<category>.ckpt`` files, or is an ``eval-seg --leave-one-out`` output.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

SHIPPED = {"fine_inline_weight": 0.25, "mid_sentence_weight": 0.0, "fine_after_heading_weight_unwrapped": None}
V2, V3, V4 = ({**SHIPPED, "fine_inline_weight_unwrapped": w} for w in (None, 0.02, 1e-6))
V5 = {**V4, "fine_after_heading_weight_unwrapped": 1e-4}
# per study: the settings (the reference first) and the fold seeds whose intervals the rule reads
STUDIES = {"unwrapped": ({"V2": V2, "V3": V3}, ("0",)), "line-order": ({"V3": V3, "V4": V4}, ("1", "2")),
           "after-heading": ({"V4": V4, "V5": V5}, ("0", "2"))}
# the folds whose left-out documents include unwrapped ones: the settings agree on every other
REGISTERED_FOLDS = ("code", "conversation", "email", "legal", "manuals", "quotes", "religious")


def score_all(args, settings: dict[str, dict]) -> None:
    """Score each seed's folds into ``folds_<seed>.json`` and each seed's full segmenter into ``heldout_<seed>.json``
    and ``test_<seed>.json`` under ``args.output``. Baselines do not depend on the checkpoint: each set's are scored
    with its first seed and copied to the others, so the fold folders of one run must hold the same categories."""
    from datasets import load_from_disk

    from lit_block.segmentation.evaluation import pick_documents, score_fold_settings, score_settings
    from lit_block.segmentation.results_file import save_results
    from lit_block.segmentation.segmenter import METHODS

    args.output.mkdir(parents=True, exist_ok=True)
    data = load_from_disk(args.dataset)
    rows = [r for split in data for r in data[split]]
    sets = {"heldout": [r for split in load_from_disk(args.heldout).values() for r in split],
            "test": pick_documents(data["test"], 10**6)} if args.full else {}

    def score_one(set_name: str, checkpoint: str, with_baselines: bool) -> dict[str, dict]:
        baselines = [m for m in METHODS if m != "segmenter"] if with_baselines else []
        if set_name == "folds":  # a folder of fold checkpoints
            return score_fold_settings(Path(checkpoint), rows, args.per_category, baselines, settings)
        return score_settings(sets[set_name], checkpoint, baselines, settings)

    jobs = [("folds", seed, path) for seed, path in args.folds]
    jobs += [(set_name, seed, path) for set_name in sets for seed, path in args.full]
    first: dict[str, dict] = {}
    for set_name, seed, path in jobs:
        print(f"=== {set_name}, seed {seed} ({path})", flush=True)
        results = score_one(set_name, path, with_baselines=set_name not in first)
        if set_name in first:
            categories = {c for _, _, c in results[next(iter(results))]}
            if categories != {c for _, _, c in first[set_name][next(iter(results))]}:
                raise SystemExit(f"{path}: other categories than the first {set_name} of this run; score it apart")
            for name in results:
                results[name].update({k: v for k, v in first[set_name][name].items() if k[0] != "segmenter"})
        else:
            first[set_name] = results
        save_results(args.output / f"{set_name}_{seed}.json", results)


def decide(study: str, folds: dict[str, dict], per_seed: dict[str, dict[str, dict]]) -> tuple[list[str], bool]:
    """``study``'s registered rule. ``folds``: seed -> settings_comparison's differences over the registered folds
    (the rule reads the study's fold seeds); ``per_seed``: set name -> seed -> the same over that set. Lines saying
    what each condition found, and whether the candidate (the second setting) is adopted."""
    settings, fold_seeds = STUDIES[study]
    candidate = list(settings)[1]
    lines, ok = [], []
    if all(seed in folds for seed in fold_seeds):
        fine = {seed: folds[seed][candidate, "fine"] for seed in fold_seeds}
        ok.append(all(high < 0 for _, _, high in fine.values()))
        cells = ", ".join(f"seed {s}: {d:+.4f} [{low:+.4f}, {high:+.4f}]" for s, (d, low, high) in fine.items())
        lines.append(f"1. folds, fine: {cells}; wholly below zero: {ok[-1]}")
    else:
        ok.append(False)
        lines.append(f"1. folds: seeds {', '.join(fold_seeds)} not all scored")
    for number, set_name in enumerate(("heldout", "test"), start=2):
        seeds = per_seed.get(set_name, {})
        fine = [found[candidate, "fine"] for found in seeds.values()]
        if not fine:
            ok.append(False)
            lines.append(f"{number}. {set_name}: none scored")
            continue
        mean = statistics.mean(d for d, _, _ in fine)
        ok.append(all(low <= 0 for _, low, _ in fine) and mean <= 0)
        cells = ", ".join(f"seed {s}: {d:+.4f} [{low:+.4f}, {high:+.4f}]" for s, (d, low, high) in zip(seeds, fine))
        lines.append(f"{number}. {set_name}, fine: {cells}; mean {mean:+.4f}; none above zero and mean <= 0: {ok[-1]}")
    return lines, all(ok)


def wins_every_level(row: str) -> bool:
    """Whether a ``family_table`` row says ours beats every baseline at every level that has gold boundaries."""
    verdicts = [cell.split()[-1] for cell in row.strip("|").split("|")[1:]]
    return "yes" in verdicts and all(v in ("yes", "n/a") for v in verdicts)


def gather(folders: list[Path], settings: dict[str, dict]) -> dict[str, dict[str, dict]]:
    """Set name (folds, heldout, test) -> seed -> setting -> results, from scored folders (later ones win)."""
    from lit_block.segmentation.results_file import load_results

    sets: dict[str, dict[str, dict]] = {"folds": {}, "heldout": {}, "test": {}}
    for folder in folders:
        for set_name, seeds in sets.items():
            for path in sorted(folder.glob(f"{set_name}_*.json")):
                seed = path.stem.split("_", 1)[1]
                merged = seeds.setdefault(seed, {name: {} for name in settings})
                for name, r in load_results(path).items():
                    merged[name].update(r)
    return sets


def report(study: str, folders: list[Path], output: Path) -> None:
    """Goal tables and comparisons per seed, a summary of the goal counts, and ``study``'s registered decision
    (condition 1 on the ``REGISTERED_FOLDS`` of its fold seeds; the settings must agree on every other fold)."""
    from lit_block.segmentation.evaluation import family_table, settings_comparison
    from lit_block.segmentation.leave_one_out import goal_table
    from lit_block.segmentation.segmenter import METHODS

    baselines = [m for m in METHODS if m != "segmenter"]
    settings = STUDIES[study][0]
    sets = gather(folders, settings)
    output.mkdir(parents=True, exist_ok=True)
    base, candidate = list(settings)
    text, summary, fold_found = [], [f"| set, seed | {base} | {candidate} |", "|---|---|---|"], {}
    for seed, results in sets["folds"].items():
        categories = sorted({c for _, _, c in results[base]})
        counts = {}
        for name in settings:
            table, goals = goal_table(results[name], categories, baselines)
            text += [f"## Folds, seed {seed}, {name} {settings[name]}", "", table, ""]
            counts[name] = f"{round(goals['share_won'] * len(categories))} / {len(categories)} won, coarse Pk <= 0.30 " \
                           f"in {goals['coarse_pk_ok']}"
        summary.append(f"| folds, seed {seed} | {counts[base]} | {counts[candidate]} |")
        others = [k for k in results[base] if k[0] == "segmenter" and k[2] not in REGISTERED_FOLDS]
        assert all(results[base][k]["pk"] == results[candidate][k]["pk"] for k in others), \
            f"{candidate} moved a fold it cannot"
        lines, _ = settings_comparison(results, f"folds, seed {seed}, all {len(categories)}", list(settings))
        text += lines + [""]
        ours = {name: {k: v for k, v in r.items() if k[2] in REGISTERED_FOLDS} for name, r in results.items()}
        lines, found = settings_comparison(ours, f"folds, seed {seed}, the registered seven", list(settings))
        text += lines + [""]
        fold_found[seed] = found
    per_seed: dict[str, dict[str, dict]] = {}
    for set_name in ("heldout", "test"):
        for seed, results in sets[set_name].items():
            lines, per_seed.setdefault(set_name, {})[seed] = settings_comparison(
                results, f"{set_name}, full segmenter seed {seed}", list(settings))
            text += lines + [""]
            if set_name == "heldout":
                won = {}
                for name in settings:
                    table = family_table(results[name], baselines)
                    text += [f"held-out families, seed {seed}, {name}:", "", table, ""]
                    rows = table.splitlines()[2:]
                    won[name] = f"{sum(map(wins_every_level, rows))} / {len(rows)} families won"
                summary.append(f"| held-out, seed {seed} | {won[base]} | {won[candidate]} |")
    lines, adopt = decide(study, fold_found, per_seed)
    text = ["## Goal counts", "", *summary, "", *text, "## Registered rule", "", *lines, "",
            f"-> {'adopt ' + candidate if adopt else 'keep ' + base}"]
    (output / "report.md").write_text("\n".join(text) + "\n")
    print("\n".join(text), flush=True)


def main() -> None:
    from lit_block.segmentation.evaluation import add_study_options

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--study", required=True, choices=list(STUDIES), help="the registered study to score and decide")
    p.add_argument("--folds", nargs="+", default=[], type=lambda s: tuple(s.split("=", 1)),
                   help="SEED=FOLDER of fold checkpoints (<category>.ckpt) to score")
    p.add_argument("--full", nargs="+", default=[], type=lambda s: tuple(s.split("=", 1)),
                   help="SEED=CHECKPOINT of segmenters trained on every category (held-out families, test split)")
    add_study_options(p)
    args = p.parse_args()
    for option, given in (("--folds", args.folds), ("--full", args.full)):
        if any(len(f) != 2 for f in given):
            p.error(f"{option} takes SEED=PATH, got {' '.join('='.join(f) for f in given)}")
    scoring = bool(args.folds or args.full)
    if not scoring and not args.merge:
        p.error("give --folds or --full to score, --merge to report scored folders, or both")
    if scoring:
        score_all(args, STUDIES[args.study][0])
    report(args.study, [*args.merge, args.output] if scoring else args.merge, args.output)


if __name__ == "__main__":
    main()
