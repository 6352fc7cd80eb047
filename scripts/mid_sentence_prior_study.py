"""Select a mid-sentence prior for the segmenter (docs/results/segmenter_mid_sentence_prior_2026-12-06.md).

A block that starts on a line carrying on the previous line's sentence cuts that sentence in two
(``planner.starts_mid_sentence``). ``Segmenter(mid_sentence_weight=w)`` multiplies such units' probabilities by ``w``
at every level. Selection: the full segmenter checkpoint on the corpus's validation split (every category, never
trained on), every level, cut as ``eval-seg`` cuts (the gold number of blocks per document), one encoding per document
for the whole grid. Prints pooled Pk and WindowDiff per level and weight; the registered choice is the weight with the
lowest mean over levels of pooled Pk (ties: the larger weight).

    python scripts/mid_sentence_prior_study.py --checkpoint checkpoints/segmenter/segmenter.ckpt

Confirmation: ``lit-block eval-seg --leave-one-out ... --mid-sentence-weight W`` on the folds, compared with
``python scripts/fine_line_prior_study.py --compare BASE NEW`` (pooled left-out documents, paired intervals).
"""

from __future__ import annotations

import argparse

from lit_block.segmentation.metrics import window_errors
from lit_block.segmentation.segmenter import LEVELS, Segmenter

GRID = (1.0, 0.5, 0.25, 0.1, 0.0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--dataset", default="data/semanticseg")
    p.add_argument("--split", default="validation")
    args = p.parse_args()
    from datasets import load_from_disk

    rows = list(load_from_disk(args.dataset)[args.split])
    print(f"{len(rows)} documents of the {args.split} split, {len({r['category'] for r in rows})} categories")
    seg = Segmenter("segmenter", args.checkpoint)
    errors = {(w, level): [0, 0, 0] for w in GRID for level in LEVELS}  # Pk errors, WindowDiff errors, windows
    for row in rows:
        doc = seg.prepare(row["text"])  # the segmenter keeps this document's unit features across the grid
        for level in LEVELS:
            gold = sorted({doc.token_index(c) for c in row[f"boundaries_{level}"]} - {0, doc.n_tokens})
            target = doc.n_tokens / (len(gold) + 1)
            for w in GRID:
                seg.mid_sentence_weight = w
                hyp = seg.cut(doc, level, target_tokens=target)
                for i, e in enumerate(window_errors(gold, hyp, doc.n_tokens)):
                    errors[w, level][i] += e
    print("| mid-sentence weight | " + " | ".join(f"{lv} Pk / WD" for lv in LEVELS) + " | mean Pk |\n|---|---|---|---|---|")
    mean = {}
    for w in GRID:
        pk = [errors[w, lv][0] / max(errors[w, lv][2], 1) for lv in LEVELS]
        wd = [errors[w, lv][1] / max(errors[w, lv][2], 1) for lv in LEVELS]
        mean[w] = sum(pk) / len(pk)
        print(f"| {w} | " + " | ".join(f"{a:.4f} / {b:.4f}" for a, b in zip(pk, wd)) + f" | {mean[w]:.4f} |", flush=True)
    best = min(GRID, key=lambda w: (mean[w], -w))
    print(f"\nregistered choice: {best}")


if __name__ == "__main__":
    main()
