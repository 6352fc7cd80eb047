"""How many blocks the trained segmenter cuts at its default threshold, against the gold count, on text it never saw.

Pk and WindowDiff in ``eval-seg`` give every method the gold block count (``target_tokens``), so they say where the
cuts fall, not how many a user gets from ``lit-block segment --granularity LEVEL`` (threshold 0.5). This prints, per
level, the ratio (cuts + 1) / (gold blocks) over documents (median and quartiles): each leave-one-out fold on its
left-out category's documents (``--folds``: ``<category>.ckpt`` files or an ``eval-seg --leave-one-out`` output),
and a full segmenter (``--full``) on the validation split (categories it trained on) and the held-out families.

    python scripts/threshold_counts.py --folds F --full checkpoints/segmenter/segmenter.ckpt
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

LEVELS = ("coarse", "middle", "fine")


def count_ratios(segmenter, rows, threshold: float = 0.5) -> dict[str, list[float]]:
    """Per level, (blocks cut at ``threshold``) / (gold blocks) for each document with a gold boundary there."""
    ratios: dict[str, list[float]] = {lv: [] for lv in LEVELS}
    for row in rows:
        doc = segmenter.prepare(row["text"])
        for level in LEVELS:
            gold = {doc.token_index(c) for c in row[f"boundaries_{level}"]} - {0, doc.n_tokens}
            if gold:
                ratios[level].append((len(segmenter.cut(doc, level, threshold=threshold)) + 1) / (len(gold) + 1))
    return ratios


def spread(values: list[float]) -> str:
    """``median [lower quartile, upper quartile]`` of ratios; ``-`` for none."""
    if not values:
        return "-"
    low, mid, high = statistics.quantiles(values, n=4) if len(values) > 1 else values * 3
    return f"{mid:.2f} [{low:.2f}, {high:.2f}]"


def table(found: dict[str, dict[str, list[float]]]) -> str:
    lines = ["| documents | " + " | ".join(LEVELS) + " |", "|---|" + "---|" * len(LEVELS)]
    lines += [f"| {name} | " + " | ".join(spread(r[lv]) for lv in LEVELS) + " |" for name, r in found.items()]
    return "\n".join(lines)


def main() -> None:
    from datasets import load_from_disk

    from lit_block.segmentation.evaluation import fold_checkpoints, pick_documents
    from lit_block.segmentation.segmenter import Segmenter

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--folds", type=Path, help="leave-one-out fold checkpoints")
    p.add_argument("--full", help="a segmenter trained on every category")
    p.add_argument("--dataset", default="data/semanticseg")
    p.add_argument("--heldout", default="data/heldout-families")
    p.add_argument("--per-category", type=int, default=10)
    args = p.parse_args()
    if not args.folds and not args.full:
        p.error("give --folds, --full or both")
    data = load_from_disk(args.dataset)
    found: dict[str, dict[str, list[float]]] = {}
    if args.folds:
        rows = [r for split in data for r in data[split]]
        pooled: dict[str, list[float]] = {lv: [] for lv in LEVELS}
        for category, ckpt in sorted(fold_checkpoints(args.folds).items()):
            picked = pick_documents([r for r in rows if r["category"] == category], args.per_category)
            found[f"fold: {category}"] = ratios = count_ratios(Segmenter("segmenter", str(ckpt)), picked)
            for lv in LEVELS:
                pooled[lv] += ratios[lv]
        found["folds pooled"] = pooled
    if args.full:
        full = Segmenter("segmenter", args.full)
        found["full: validation split"] = count_ratios(full, pick_documents(list(data["validation"]),
                                                                            args.per_category))
        heldout = load_from_disk(args.heldout)
        for family in sorted({r["category"] for split in heldout.values() for r in split}):
            found[f"full: {family}"] = count_ratios(full, [r for split in heldout.values() for r in split
                                                           if r["category"] == family])
    print("blocks cut at threshold 0.5 / gold blocks, median [quartiles] over documents\n")
    print(table(found))


if __name__ == "__main__":
    main()
