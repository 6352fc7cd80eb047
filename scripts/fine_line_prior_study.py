"""Select, then confirm, a line-start prior for the segmenter's fine level (docs/segmenter_generalisation.md).

Selection (``--select``): the full segmenter checkpoint on the corpus's validation split (every category, never
trained on), fine level only, as ``eval-seg`` cuts it (the gold number of blocks per document); each weight of the
grid multiplies the probabilities of units inside a line (``Segmenter(fine_inline_weight=w)``). Prints pooled fine Pk
and WindowDiff per weight; the registered choice is the weight with the lowest pooled Pk (ties: the larger weight).

    python scripts/fine_line_prior_study.py --select --checkpoint checkpoints/segmenter/segmenter.ckpt

Confirmation runs through ``lit-block eval-seg --leave-one-out ... --fine-inline-weight W`` on the 16 folds.
"""

from __future__ import annotations

import argparse

from lit_block.segmentation.evaluation import evaluate
from lit_block.segmentation.segmenter import Segmenter

GRID = (1.0, 0.75, 0.5, 0.25, 0.1, 0.0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--select", action="store_true", required=True)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--dataset", default="data/semanticseg")
    p.add_argument("--split", default="validation")
    args = p.parse_args()
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
