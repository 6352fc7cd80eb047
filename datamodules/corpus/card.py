"""The dataset card written next to the data: counts, token totals, boundary statistics, a length plot."""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path

from datamodules.corpus.packing import SPLITS
from datamodules.corpus.schema import LEVELS


def category_table(rows: list[dict]) -> str:
    """Markdown: documents and tokens per category and split."""
    counts: dict[str, dict[str, list[int]]] = defaultdict(lambda: {s: [0, 0] for s in SPLITS})
    for r in rows:
        counts[r["category"]][r["split"]][0] += 1
        counts[r["category"]][r["split"]][1] += r["n_tokens"]
    head = "| category | " + " | ".join(f"{s} docs | {s} tokens" for s in SPLITS) + " | total docs | total tokens |"
    lines = [head, "|" + "---|" * (2 * len(SPLITS) + 3)]
    totals = {s: [0, 0] for s in SPLITS}
    for cat in sorted(counts):
        cells = []
        for s in SPLITS:
            d, t = counts[cat][s]
            totals[s][0] += d
            totals[s][1] += t
            cells.append(f"{d} | {t:,}")
        docs = sum(counts[cat][s][0] for s in SPLITS)
        toks = sum(counts[cat][s][1] for s in SPLITS)
        lines.append(f"| {cat} | " + " | ".join(cells) + f" | {docs} | {toks:,} |")
    all_docs = sum(v[0] for v in totals.values())
    all_toks = sum(v[1] for v in totals.values())
    lines.append("| **all** | " + " | ".join(f"{totals[s][0]} | {totals[s][1]:,}" for s in SPLITS)
                 + f" | {all_docs} | {all_toks:,} |")
    return "\n".join(lines)


def boundary_table(rows: list[dict]) -> str:
    """Markdown: per category and level, boundaries per document and mean segment length in tokens."""
    lines = ["| category | " + " | ".join(f"{lv} bounds/doc | {lv} tokens/segment" for lv in LEVELS) + " |",
             "|" + "---|" * (2 * len(LEVELS) + 1)]
    by_cat: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_cat[r["category"]].append(r)
    for cat in sorted(by_cat):
        cells = []
        for lv in LEVELS:
            per_doc = statistics.mean(len(r[f"boundaries_{lv}"]) for r in by_cat[cat])
            sizes = [n for r in by_cat[cat] for n in r[f"segment_tokens_{lv}"]]
            cells.append(f"{per_doc:.1f} | {statistics.mean(sizes):.0f}")
        lines.append(f"| {cat} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_lengths(rows: list[dict], path: Path) -> None:
    """Box plot of document length (tokens, log scale) per category."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    by_cat: dict[str, list[int]] = defaultdict(list)
    for r in rows:
        by_cat[r["category"]].append(r["n_tokens"])
    cats = sorted(by_cat)
    fig, ax = plt.subplots(figsize=(max(6, 0.7 * len(cats) + 2), 4))
    ax.boxplot([by_cat[c] for c in cats], tick_labels=cats)
    ax.set_yscale("log")
    ax.set_ylabel("document length (tokens)")
    ax.set_title("Document length per category")
    plt.setp(ax.get_xticklabels(), rotation=45, ha="right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_card(rows: list[dict], reports: list, out: Path, fingerprint: str) -> None:
    plot_lengths(rows, out / "length_distribution.png")
    sources = ["| source | category | packages | license | raw docs | docs | tokens | skipped |", "|---|---|---|---|---|---|---|---|"]
    first = {r["source"]: r for r in reversed(rows)}
    for rep in reports:
        pk = ", ".join(first[rep.name]["packages"]) if rep.name in first else "-"
        lic = first[rep.name]["license"] if rep.name in first else "-"
        skipped = rep.error or ", ".join(f"{k}: {v}" for k, v in sorted(rep.skipped.items())) or "-"
        sources.append(f"| {rep.name} | {rep.category} | {pk} | {lic} | {rep.raw_documents} | {rep.documents} | "
                       f"{rep.tokens:,} | {skipped} |")
    card = f"""# SemanticSeg-style corpus (lit-block build)

Long real documents with human-made boundaries at three levels (coarse, middle, fine), stored as
character offsets (`boundaries_<level>`: where a segment of that level starts, 0 excluded) and
token counts (`segment_tokens_<level>`). Splits are by source document: all windows of one source
document are in one split. Content fingerprint: `{fingerprint}`.

## Documents and tokens per category and split

{category_table(rows)}

## Boundaries per level

{boundary_table(rows)}

## Document length per category

![length distribution](length_distribution.png)

## Sources

{chr(10).join(sources)}
"""
    (out / "README.md").write_text(card)
