"""Where each category of a segmentation corpus puts its gold boundaries, by kind of candidate unit.

The segmenter scores the units of the ``sentences`` splitter (``lit_block.candidates``). Each unit after the first is
one of four kinds:
- ``line``: it starts a line, and the previous line does not carry its sentence on;
- ``after-heading``: a ``line`` unit right after one short line without end punctuation (``planner.heading_like``:
  a heading such as ``Genesis 2``; also a short unpunctuated dialogue turn or list item, which look the same);
- ``line-mid``: it starts a line that carries the previous line's sentence on (``planner.starts_mid_sentence``),
  as hard-wrapped prose and verse do;
- ``inline``: it starts inside a line (a sentence start found by Punkt).
Separator units (no letter or digit) are left out: ``planner.close_at_separators`` handles them.

For every category and level the script prints how many units of each kind there are and the share that are gold
boundaries there, and beside it the share in all the other categories together: what a leave-one-out fold trains
on. A category whose order of kinds (by gold share) is the reverse of its fold's training data asks its fold to
rank units against everything that fold saw.

    python scripts/unit_conventions.py --dataset data/semanticseg --levels fine
    python scripts/unit_conventions.py --dataset data/heldout-families --trained-on data/semanticseg
"""

from __future__ import annotations

import argparse
import collections

KINDS = ("line", "after-heading", "line-mid", "inline")
LEVELS = ("coarse", "middle", "fine")


def first_visible(text: str, offset: int) -> int:
    """The first non-space character at or after ``offset``: a gold boundary and a unit start that differ only in
    the whitespace between them are the same cut."""
    while offset < len(text) and text[offset].isspace():
        offset += 1
    return offset


def unit_kinds(text: str) -> list[tuple[int, str | None]]:
    """(start offset, kind) of every unit after the first; kind None for separator units."""
    from lit_block.candidates import candidate_starts
    from lit_block.segmentation.planner import LINE_BREAKS, heading_like, is_separator, starts_mid_sentence

    starts = candidate_starts(text)
    units = [text[a:b] for a, b in zip(starts, starts[1:] + [len(text)])]
    out = []
    for i in range(1, len(units)):
        previous = units[i - 1]
        if is_separator(units[i]):
            kind = None
        elif previous and previous[-1] in LINE_BREAKS:
            if starts_mid_sentence(previous, units[i]):
                kind = "line-mid"
            else:
                kind = "after-heading" if heading_like(previous) else "line"
        else:
            kind = "inline"
        out.append((starts[i], kind))
    return out


def count(rows) -> dict[str, collections.Counter]:
    """Per category: units of each kind, and (kind, level) -> how many of them are gold boundaries at that level.
    ``rows`` are dicts with ``text``, ``category`` and ``boundaries_<level>`` (character offsets)."""
    counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for row in rows:
        text, c = row["text"], counts[row["category"]]
        gold = {lv: {first_visible(text, b) for b in row[f"boundaries_{lv}"]} for lv in LEVELS}
        for start, kind in unit_kinds(text):
            if kind is None:
                continue
            c[kind] += 1
            at = first_visible(text, start)
            for lv in LEVELS:
                c[kind, lv] += at in gold[lv]
    return counts


def share(counter: collections.Counter, kind: str, level: str) -> float | None:
    return counter[kind, level] / counter[kind] if counter[kind] else None


def training_counts(counts: dict[str, collections.Counter], category: str,
                    trained_on: collections.Counter | None = None) -> collections.Counter:
    """What a segmenter scored on ``category`` was trained on: the other categories together (a leave-one-out fold),
    or ``trained_on``, the counts of another corpus summed over its categories."""
    if trained_on is not None:
        return trained_on
    return sum((c for k, c in counts.items() if k != category), collections.Counter())


def reversed_pairs(counts: dict[str, collections.Counter], category: str, level: str, margin: float = 0.01,
                   trained_on: collections.Counter | None = None) -> list[tuple[str, str]]:
    """Pairs of kinds (a, b) that ``category`` ranks a above b by gold share while its training data
    (``training_counts``) ranks b above a, each by more than ``margin``: the segmenter learns the opposite order."""
    rest, here = training_counts(counts, category, trained_on), counts[category]
    pairs = []
    for a in KINDS:
        for b in KINDS:
            sa, sb, ra, rb = share(here, a, level), share(here, b, level), share(rest, a, level), share(rest, b, level)
            if None not in (sa, sb, ra, rb) and sa - sb > margin and rb - ra > margin:
                pairs.append((a, b))
    return pairs


def table(counts: dict[str, collections.Counter], level: str, trained_on: collections.Counter | None = None) -> str:
    def cell(c, kind):
        s = share(c, kind, level)
        return "-" if s is None else f"{s:.1%}"

    beside = "all the others" if trained_on is None else "the training corpus"
    lines = [f"{level} level: share of units that are gold boundaries, this category ({beside}) (units here)", "",
             "| category | " + " | ".join(KINDS) + " | order against its training data |",
             "|---|" + "---|" * (len(KINDS) + 1)]
    for category in sorted(counts):
        rest, here = training_counts(counts, category, trained_on), counts[category]
        cells = [f"{cell(here, k)} ({cell(rest, k)}) ({here[k]:,})" for k in KINDS]
        against = ", ".join(f"{a} > {b}" for a, b in reversed_pairs(counts, category, level, trained_on=trained_on))
        lines.append(f"| {category} | " + " | ".join(cells) + f" | {against or '-'} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="data/semanticseg", help="a corpus folder (`lit-block data build`)")
    p.add_argument("--trained-on", help="the corpus a segmenter scored on --dataset was trained on (held-out "
                   "families: data/semanticseg); without it each category is set against the others (leave-one-out)")
    p.add_argument("--levels", nargs="+", default=list(LEVELS), choices=LEVELS)
    args = p.parse_args()
    from datasets import load_from_disk

    def load(path):
        corpus = load_from_disk(path)
        return count(row for split in corpus for row in corpus[split])

    counts = load(args.dataset)
    trained_on = sum(load(args.trained_on).values(), collections.Counter()) if args.trained_on else None
    for level in args.levels:
        print(table(counts, level, trained_on), end="\n\n")


if __name__ == "__main__":
    main()
