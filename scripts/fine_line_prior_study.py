"""Select, then confirm, a line-start prior for the segmenter's fine level (docs/segmenter_generalisation.md).

Selection (``--select``): the full segmenter checkpoint on the corpus's validation split (every category, never
trained on), fine level only, as ``eval-seg`` cuts it (the gold number of blocks per document); each weight of the
grid multiplies the probabilities of units inside a line (``Segmenter(fine_inline_weight=w)``). Prints pooled fine Pk
and WindowDiff per weight; the registered choice is the weight with the lowest pooled Pk (ties: the larger weight).

    python scripts/fine_line_prior_study.py --select --checkpoint checkpoints/segmenter/segmenter.ckpt

Confirmation: ``lit-block eval-seg --leave-one-out ... --fine-inline-weight W`` on the 16 folds, then
``--compare`` pools the left-out documents of two such runs (every fold, in the same order) and prints, per level, the
segmenter's Pk and WindowDiff in each and the Pk difference with its 95% paired bootstrap interval over documents.

    python scripts/fine_line_prior_study.py --compare eval-seg/loo-2026-12-06-close eval-seg/loo-2026-12-06-fine075
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lit_block.segmentation.evaluation import evaluate
from lit_block.segmentation.segmenter import Segmenter

GRID = (1.0, 0.75, 0.5, 0.25, 0.1, 0.0)


def compare(base: Path, new: Path) -> None:
    from lit_block.segmentation.evaluation import pk_difference, pooled
    from lit_block.segmentation.results_file import load_results
    from lit_block.segmentation.segmenter import LEVELS

    a, b = (load_results(folder / "leave_one_out.json") for folder in (base, new))
    print(f"| level | Pk {base.name} | Pk {new.name} | difference [95% interval] | WindowDiff |\n|---|---|---|---|---|")
    for level in LEVELS:
        x, y = pooled(a, level), pooled(b, level)
        d, low, high = pk_difference(y, x)
        print(f"| {level} | {x['pk']:.4f} | {y['pk']:.4f} | {d:+.4f} [{low:+.4f}, {high:+.4f}] | "
              f"{x['windowdiff']:.4f} -> {y['windowdiff']:.4f} |")
    print(f"\n{len(x['documents'])} left-out documents, pooled over the folds")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--select", action="store_true")
    mode.add_argument("--compare", nargs=2, type=Path, metavar=("BASE", "NEW"), help="two eval-seg --leave-one-out outputs")
    p.add_argument("--checkpoint")
    p.add_argument("--dataset", default="data/semanticseg")
    p.add_argument("--split", default="validation")
    args = p.parse_args()
    if args.compare:
        return compare(*args.compare)
    if not args.checkpoint:
        p.error("--select needs --checkpoint")
    from datasets import load_from_disk

    rows = list(load_from_disk(args.dataset)[args.split])
    print(f"{len(rows)} documents of the {args.split} split, {len({r['category'] for r in rows})} categories")
    print("| fine inline weight | Pk | WindowDiff |\n|---|---|---|")
    scores = {}
    for w in GRID:
        seg = Segmenter("segmenter", args.checkpoint, fine_inline_weight=w)
        result = evaluate(rows, {"segmenter": seg})[("segmenter", "fine", "all")]
        scores[w] = result["pk"]
        print(f"| {w} | {result['pk']:.4f} | {result['windowdiff']:.4f} |", flush=True)
    best = min(GRID, key=lambda w: (scores[w], -w))
    print(f"\nregistered choice: {best}")


if __name__ == "__main__":
    main()
