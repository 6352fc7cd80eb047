"""Score the registered kind priors on leave-one-out folds and the held-out families
(docs/results/segmenter_kind_prior_2026-12-07.md).

Each fold's checkpoint is scored on its left-out category's documents (``eval-seg --leave-one-out``'s 10 per
category) with each setting, beside the baselines, in one pass per document: the settings cut the same unit
probabilities with other prior weights, so the encoder runs once per document. Writes, per setting, a
``leave_one_out.json`` and ``.md`` in ``--output/<setting>/`` (the format ``fine_line_prior_study.py --compare``
pools), then prints each setting's pooled Pk against V0 with paired intervals and the registered decision.

    python scripts/kind_prior_study.py --folds FOLDS --full full.ckpt --output eval-seg/kind-prior-2026-12-07
    python scripts/kind_prior_study.py --folds MORE --output B --merge eval-seg/kind-prior-2026-12-07   # folds added

``FOLDS`` holds ``<category>.ckpt`` files, or is an ``eval-seg --leave-one-out`` output (``folds/<category>/``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

# as registered (V0: the defaults then; the per-document weight of 2026-12-07 came later: off)
SETTINGS = {"V0": {"fine_inline_weight": 0.75, "mid_sentence_weight": 1.0, "fine_inline_weight_unwrapped": None},
            "V1": {"fine_inline_weight": 0.75, "mid_sentence_weight": 0.0, "fine_inline_weight_unwrapped": None},
            "V2": {"fine_inline_weight": 0.25, "mid_sentence_weight": 0.0, "fine_inline_weight_unwrapped": None}}


def pooled_comparison(results: dict[str, dict], label: str) -> tuple[list[str], dict]:
    """Pooled Pk of each setting against V0 per level, paired intervals over documents."""
    from lit_block.segmentation.evaluation import settings_comparison

    return settings_comparison(results, label, list(SETTINGS))


def report(folders: list[Path], output: Path) -> None:
    """Merge scored folds (``--output`` folders of earlier runs), write and print the goal tables per setting, the
    pooled comparisons (folds; held-out families where a folder has them) and the registered decision."""
    from lit_block.segmentation.evaluation import family_table
    from lit_block.segmentation.leave_one_out import goal_table
    from lit_block.output_dir import write_text_atomic
    from lit_block.segmentation.results_file import load_results, save_results
    from lit_block.segmentation.segmenter import LEVELS, METHODS

    baselines = [m for m in METHODS if m != "segmenter"]
    merged = {name: {} for name in SETTINGS}
    heldout = None
    for folder in folders:
        for name in SETTINGS:
            merged[name].update(load_results(folder / name / "leave_one_out.json"))
        if (folder / "heldout.json").is_file():
            heldout = load_results(folder / "heldout.json")
    categories = sorted({c for _, _, c in merged["V0"]})
    for name, results in merged.items():
        out = output / name
        out.mkdir(parents=True, exist_ok=True)
        table, _ = goal_table(results, categories, baselines)
        write_text_atomic(out / "leave_one_out.md", table + "\n")
        save_results(out / "leave_one_out.json", results)
        print(f"\n## {name} {SETTINGS[name]}\n\n{table}", flush=True)
    decision = {}
    lines, decision["folds"] = pooled_comparison(merged, f"{len(categories)} folds' left-out documents")
    print("\n" + "\n".join(lines))
    if heldout is not None:
        save_results(output / "heldout.json", heldout)
        lines, decision["heldout"] = pooled_comparison(heldout, "held-out families")
        print("\n" + "\n".join(lines))
        for name, r in heldout.items():
            print(f"\nheld-out families, {name}:\n\n{family_table(r, baselines)}")
    candidate = min(("V1", "V2"), key=lambda n: decision["folds"][n, "fine"][0])
    rule = [decision["folds"][candidate, "fine"][2] < 0,
            not any(decision["folds"][candidate, lv][1] > 0 for lv in LEVELS),
            "heldout" in decision and not any(decision["heldout"][candidate, lv][1] > 0 for lv in LEVELS)]
    print(f"\ncandidate {candidate}: fine interval below zero {rule[0]}; no level above zero on the folds {rule[1]}; "
          f"none above zero on the held-out families {rule[2]} -> {'adopt' if all(rule) else 'keep V0'}")


def main() -> None:
    from lit_block.segmentation.evaluation import add_study_options

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--folds", type=Path, help="fold checkpoints to score")
    p.add_argument("--full", type=Path, help="the segmenter trained on every category (held-out families)")
    add_study_options(p)
    args = p.parse_args()
    if args.folds is None and not args.merge:
        p.error("give --folds to score, --merge to report scored folders, or both")
    if args.folds is not None:
        score_folds(args)
    report([*args.merge, args.output] if args.folds is not None else args.merge, args.output)


def score_folds(args) -> None:
    """Score every fold (and the full segmenter on the held-out families) with each setting into ``args.output``."""
    from datasets import load_from_disk

    from lit_block.segmentation.evaluation import score_fold_settings, score_settings
    from lit_block.segmentation.results_file import save_results
    from lit_block.segmentation.segmenter import METHODS

    baselines = [m for m in METHODS if m != "segmenter"]
    data = load_from_disk(args.dataset)
    rows = [r for split in data for r in data[split]]
    merged = score_fold_settings(args.folds, rows, args.per_category, baselines, SETTINGS)
    for name, results in merged.items():
        (args.output / name).mkdir(parents=True, exist_ok=True)
        save_results(args.output / name / "leave_one_out.json", results)
    if args.full:
        heldout = [r for split in load_from_disk(args.heldout).values() for r in split]
        held = score_settings(heldout, args.full, baselines, SETTINGS)
        save_results(args.output / "heldout.json", held)


if __name__ == "__main__":
    main()
