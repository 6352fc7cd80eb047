"""Which documents of a corpus split a run reads: a category filter, categories left out, and a cap.

The built corpus lists its documents source by source, so the first N of a split hold only the first few
categories (the first 600 training documents of the 16-category build hold 6 of them). A cap therefore takes
documents from every category in turn -- the first of each category, then the second of each, and so on --
until it is reached, and keeps them in the corpus's order: a capped run sees every category the split has, each
with as many documents as the cap allows (a small category gives all it has).
"""

from __future__ import annotations

from collections import defaultdict


def balanced_indices(categories: list[str], limit: int) -> list[int]:
    """Indices (ascending) of at most ``limit`` documents, taken from each category in turn in corpus order."""
    by_category: dict[str, list[int]] = defaultdict(list)
    for i, category in enumerate(categories):
        by_category[category].append(i)
    queues = [by_category[c] for c in sorted(by_category)]
    chosen: list[int] = []
    depth = 0
    while len(chosen) < limit and any(depth < len(q) for q in queues):
        for q in queues:
            if depth < len(q) and len(chosen) < limit:
                chosen.append(q[depth])
        depth += 1
    return sorted(chosen)


def select_documents(rows, categories: list[str] | None = None, exclude: list[str] | None = None,
                     limit: int | None = None):
    """``rows`` (a ``datasets.Dataset`` with a ``category`` column) kept to ``categories``, without ``exclude``, and
    capped at ``limit`` documents spread over the categories (module doc); under the cap, unchanged."""
    # in memory: a filter's cache file would be written into the corpus folder itself
    if categories:
        rows = rows.filter(lambda r: r["category"] in categories, keep_in_memory=True)
    if exclude:
        rows = rows.filter(lambda r: r["category"] not in exclude, keep_in_memory=True)
    if limit and limit < len(rows):
        rows = rows.select(balanced_indices(rows["category"], limit))
    return rows
