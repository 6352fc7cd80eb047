"""Sentence splitters for the ``sentences`` candidates, measured on the corpus (docs/sentence_splitting.md).

    python scripts/measure_sentence_splitters.py --dataset data/semanticseg
    python scripts/measure_sentence_splitters.py --dataset data/semanticseg --show 30  # + disagreements to judge

Every variant yields the same kind of candidates as ``candidate_starts(text, "sentences")``: every
non-blank line start, plus the sentence starts its splitter finds *inside* a line (a start with only
whitespace before it on its line is a line start already and is dropped). Per category and overall:

    recall      gold boundaries (finest level, which holds the coarser ones) that are candidates,
                exact offset (what ``document_units`` labels)
    recall~     the same, a candidate counting when only whitespace lies between it and the gold offset
    cand/1k     candidates per 1,000 tokens (the row's ``n_tokens``); fewer at equal recall is better
    in-line/1k  the part of them inside lines: the sentence splitter's own cuts
    prec        candidates (offset 0 excluded) that are a gold boundary: the corpus's finest level is
                paragraph / verse / turn / statement, there is no sentence-level gold
    abbr        in-line cuts right after a word of ABBREVIATIONS (never a sentence end there): known false cuts
    chars/s     throughput of the whole candidate computation, one pass over the documents

Variants: ``regex`` (``sentences-regex``: the end-punctuation-space-capital pattern, the ``sentences``
splitter before Punkt), ``punkt`` (what ``sentences`` is now: see ``lit_block.candidates``), and the
alternatives measured against them: Punkt's English model as published (lower-case starts allowed),
with the curated non-breaking prefixes, untrained (no model), trained on the corpus's train split, and
nupunkt's default model. ``--show N`` prints N random cuts where ``regex`` and ``punkt`` disagree, each
way, with context, for judging by hand.
"""

from __future__ import annotations

import argparse
import random
import re
import time
from bisect import bisect_right
from collections import defaultdict

from lit_block.candidates import SENTENCE_CAPITAL, candidate_starts

# words after which a period never ends an English sentence (a stricter list than any model's: no "etc.",
# "No.", "Inc." or initials, which can end one)
ABBREVIATIONS = frozenset("e.g. i.e. cf. vs. viz. mr. mrs. ms. dr. prof. fig. eq. approx. resp. incl. w.r.t.".split())
_WORD_BEFORE = re.compile(r"(\S+)\s+$")


def _line_starts(text: str) -> list[int]:
    """Start offset of every line as ``str.splitlines`` cuts them (the splitters' notion of a line)."""
    starts, offset = [], 0
    for line in text.splitlines(keepends=True):
        starts.append(offset)
        offset += len(line)
    return starts


def _with_lines(text: str, sentence_starts) -> list[int]:
    """``lines`` candidates plus the sentence starts that have non-whitespace before them on their line."""
    lines = _line_starts(text)
    out = set(candidate_starts(text, "lines"))
    for s in sentence_starts:
        if 0 < s < len(text) and text[lines[bisect_right(lines, s) - 1]:s].strip():
            out.add(s)
    return sorted(out)


def _punkt_variant(params, capital_only: bool):
    import punkt

    tokenizer = punkt.PunktSentenceTokenizer(params)

    def starts(text: str) -> list[int]:
        found = (a for a, _ in tokenizer.span_tokenize(text))
        return _with_lines(text, (a for a in found if not capital_only or SENTENCE_CAPITAL.match(text, a)))

    return starts


def _nupunkt_variant():
    import nupunkt

    def starts(text: str) -> list[int]:
        spans = nupunkt.sent_spans(text)  # contiguous spans: the whitespace between sentences opens the next one
        firsts = (a + len(text[a:b]) - len(text[a:b].lstrip()) for a, b in spans)
        return _with_lines(text, firsts)

    return starts


def variants(train_texts: list[str]) -> dict:
    import punkt

    english = punkt.load_model("english")
    out = {
        "regex": lambda t: candidate_starts(t, "sentences-regex"),
        "punkt": lambda t: candidate_starts(t, "sentences"),
        "punkt-en (as published)": _punkt_variant(english, capital_only=False),
        "punkt-en, capital starts": _punkt_variant(english, capital_only=True),
        "punkt-en+prefixes": _punkt_variant(punkt.with_nonbreaking_prefixes(english, "english"), capital_only=False),
        "punkt-untrained": _punkt_variant(punkt.PunktParameters(), capital_only=False),
    }
    if train_texts:
        out["punkt-corpus (trained on train)"] = _punkt_variant(punkt.train("\n".join(train_texts)), capital_only=False)
    try:
        out["nupunkt"] = _nupunkt_variant()
    except ImportError:
        pass
    return out


def measure(rows: list[dict], fn) -> tuple[dict, dict[int, list[int]]]:
    """Per-category counters (key "all" too) and every document's candidates."""
    stats = defaultdict(lambda: defaultdict(float))
    cands = {}
    for i, row in enumerate(rows):
        text = row["text"]
        t0 = time.perf_counter()
        c = fn(text)
        dt = time.perf_counter() - t0
        cands[i] = c
        cset = set(c)
        lines = set(_line_starts(text))
        gold = row["boundaries_fine"]
        hit = sum(g in cset for g in gold)
        near = 0
        for g in gold:  # the nearest candidate on either side, only whitespace between it and g
            j = bisect_right(c, g)
            near += any(not text[min(x, g):max(x, g)].strip() for x in c[max(j - 1, 0):j + 1])
        inline = [x for x in c if x not in lines]
        abbr = 0
        for x in inline:
            m = _WORD_BEFORE.search(text, max(0, x - 40), x)
            abbr += bool(m and m.group(1).strip("\"')]").lower() in ABBREVIATIONS)
        gold_set = set(gold)
        for key in (row["category"], "all"):
            s = stats[key]
            s["docs"] += 1
            s["tokens"] += row["n_tokens"]
            s["chars"] += len(text)
            s["gold"] += len(gold)
            s["hit"] += hit
            s["near"] += near
            s["cands"] += len([x for x in c if x])
            s["gold_cands"] += sum(x in gold_set for x in c)
            s["inline"] += len(inline)
            s["abbr"] += abbr
            s["seconds"] += dt
    return stats, cands


def _fmt_row(name: str, s: dict) -> str:
    k = s["tokens"] / 1000
    return (f"| {name} | {s['hit'] / max(s['gold'], 1):.4f} | {s['near'] / max(s['gold'], 1):.4f} | "
            f"{s['cands'] / k:.1f} | {s['inline'] / k:.1f} | {s['gold_cands'] / max(s['cands'], 1):.3f} | "
            f"{int(s['abbr'])} | {s['chars'] / max(s['seconds'], 1e-9) / 1e6:.2f}M |")


HEADER = ("| {first} | recall | recall~ | cand/1k | in-line/1k | prec | abbr | chars/s |\n"
          "|---|---|---|---|---|---|---|---|")


def _context(text: str, x: int) -> str:
    return (text[max(0, x - 50):x] + " ‖ " + text[x:x + 40]).replace("\n", "⏎")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default="data/semanticseg")
    p.add_argument("--max-docs", type=int, default=None, help="the first N documents only (all splits)")
    p.add_argument("--no-train", action="store_true", help="skip the corpus-trained Punkt variant")
    p.add_argument("--train-chars", type=int, default=4_000_000, help="train-split text the corpus-trained Punkt reads")
    p.add_argument("--show", type=int, default=0, help="print N random regex-only and N punkt-only cuts")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    from datasets import concatenate_datasets, load_from_disk

    data = load_from_disk(args.dataset)
    rows = list(concatenate_datasets([data[s] for s in data]))
    if args.max_docs:
        rows = rows[: args.max_docs]
    train, budget = [], args.train_chars
    for row in ([] if args.no_train or "train" not in data else data["train"]):
        if budget <= 0:
            break
        train.append(row["text"][:budget])
        budget -= len(train[-1])
    n_tokens, n_chars = sum(r["n_tokens"] for r in rows), sum(len(r["text"]) for r in rows)
    print(f"{len(rows)} documents, {n_tokens:,} tokens, {n_chars:,} chars\n")

    results, all_cands = {}, {}
    for name, fn in variants(train).items():
        results[name], all_cands[name] = measure(rows, fn)

    print(HEADER.format(first="splitter (all categories)"))
    for name, stats in results.items():
        print(_fmt_row(name, stats["all"]))
    print()
    print(HEADER.format(first="category / splitter"))
    for cat in sorted(k for k in results["regex"] if k != "all"):
        for name in ("regex", "punkt"):
            print(_fmt_row(f"{cat} / {name}", results[name][cat]))

    if args.show:
        rng = random.Random(args.seed)
        only = {"regex only": [], "punkt only": []}
        for i, row in enumerate(rows):
            a, b = set(all_cands["regex"][i]), set(all_cands["punkt"][i])
            only["regex only"] += [(i, x) for x in sorted(a - b)]
            only["punkt only"] += [(i, x) for x in sorted(b - a)]
        for label, cuts in only.items():
            print(f"\n{label}: {len(cuts)} cuts; {min(args.show, len(cuts))} at random")
            for i, x in sorted(rng.sample(cuts, min(args.show, len(cuts)))):
                print(f"  [{rows[i]['category']}] {_context(rows[i]['text'], x)}")


if __name__ == "__main__":
    main()
