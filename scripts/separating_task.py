"""A task that separates full from block attention: associative recall whose pairs straddle block edges.

    python scripts/separating_task.py --models teacher=smollm2-135m [student=students/distill-seed0] --out task.md

Each sample lists ``--pairs`` "KEY: VALUE." lines, keys and values being distinct words of real text (the
bundled KJV chapters; every value one token of the model's tokenizer), then asks ``KEY:`` for one of them
in the global block. The model answers by its next-token distribution over the sample's values (accuracy
of the argmax, and the gold value's log-probability). The same token ids are cut into blocks two ways:

* ``within``: each pair is one block, so block attention reads key and value together;
* ``straddle``: each block ends with a key and the next begins with that key's value, so under block
  attention no value token ever sees its own key -- the induction a full-attention model uses to answer.

Full attention reads the same ids without blocks. Each layout's task gap is full attention's accuracy minus block
attention's in that layout; a student's share of it is (student - untrained) / gap. Intervals: 95%
Wilson for accuracies, bootstrap over samples for the gap and the shares.
"""

from __future__ import annotations

import argparse
import random
import re
from pathlib import Path

import torch

LAYOUTS = ("within", "straddle")


def words_of(text: str, tokenizer) -> tuple[list[str], list[str]]:
    """Distinct lowercase words of ``text``: keys (any length in tokens), and values that are one token with a space."""
    words = sorted(set(re.findall(r"\b[a-z]{4,12}\b", text)))
    one_token = [w for w in words if len(tokenizer(" " + w, add_special_tokens=False)["input_ids"]) == 1]
    return words, one_token


def make_samples(tokenizer, n: int, pairs: int, seed: int) -> list[dict]:
    """``n`` samples: pieces (token id lists: "KEY:" and " VALUE.\\n" alternating), the query, the candidates and gold."""
    text = "\n".join(p.read_text() for p in sorted((Path(__file__).resolve().parents[1] / "datamodules" / "texts").glob("*.txt")))
    keys, values = words_of(text, tokenizer)
    rng, samples = random.Random(seed), []
    encode = lambda s: tokenizer(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    for _ in range(n):
        vs = rng.sample(values, pairs)
        ks = rng.sample([k for k in keys if k not in vs], pairs)
        pieces = [encode("A list of words and the word paired with each.\n")]
        for k, v in zip(ks, vs):
            pieces += [encode(f"{k.capitalize()}:"), encode(f" {v}.\n")]
        gold = rng.randrange(pairs)
        samples.append({"pieces": pieces, "query": encode(f"{ks[gold].capitalize()}:"),
                        "candidates": [encode(" " + v)[0] for v in vs], "gold": gold})
    return samples


def block_ids_of(sample: dict, layout: str) -> list[int]:
    """Each context token's block: ``within`` puts (key, value) together, ``straddle`` (value, next key); -1 for the query."""
    ids = []
    for i, piece in enumerate(sample["pieces"]):
        # piece 0 is the heading, then key (odd) and value (even) pieces alternate
        block = (i + 1) // 2 if layout == "within" else i // 2
        ids += [block] * len(piece)
    return ids + [-1] * len(sample["query"])


@torch.no_grad()
def answer(model, sample: dict, layout: str | None) -> torch.Tensor:
    """Log-probabilities ``[pairs]`` of the candidates after the query (``layout`` None: full attention)."""
    device = next(model.parameters()).device
    ids = torch.tensor([[t for p in sample["pieces"] for t in p] + sample["query"]], device=device)
    if layout is None:
        logits = model(ids, full_attention=True).logits
    else:
        logits = model(ids, torch.tensor([block_ids_of(sample, layout)], device=device)).logits
    return logits[0, -1].float().log_softmax(-1)[sample["candidates"]]


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    p, d = k / n, 1 + z * z / n
    mid, half = (p + z * z / (2 * n)) / d, z * (p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5 / d
    return mid - half, mid + half


def bootstrap(fn, n: int, draws: int = 2000, seed: int = 0) -> tuple[float, float]:
    rng = random.Random(seed)
    values = sorted(fn([rng.randrange(n) for _ in range(n)]) for _ in range(draws))
    return values[int(0.025 * draws)], values[int(0.975 * draws)]


def evaluate(models: dict, samples: list[dict]) -> dict[tuple[str, str], list[bool]]:
    """(model, condition) -> per-sample correctness; conditions: full, and block attention in each layout."""
    correct = {}
    for name, model in models.items():
        for condition in ("full", *LAYOUTS):
            layout = None if condition == "full" else condition
            correct[name, condition] = [bool(answer(model, s, layout).argmax() == s["gold"]) for s in samples]
    return correct


def table(correct: dict, reference: str) -> str:
    """Accuracy per model and condition; for each block layout, the task gap of ``reference`` (its full attention
    minus its block attention in that layout) and each other model's share of it, with bootstrap intervals."""
    n = len(next(iter(correct.values())))
    full = correct[reference, "full"]
    mean = lambda xs, idx: sum(xs[i] for i in idx) / len(idx)  # noqa: E731
    gaps = {c: (lambda idx, base=correct[reference, c]: mean(full, idx) - mean(base, idx)) for c in LAYOUTS}
    lines = [f"task gap ({reference}: full attention - block attention, {c}): {gap(range(n)):.1%} "
             + "[{:.1%}, {:.1%}]".format(*bootstrap(gap, n)) for c, gap in gaps.items()]
    lines += ["", "| model | attention | accuracy | share of the task gap closed |", "|---|---|---|---|"]
    for (name, condition), xs in correct.items():
        a, b = wilson(sum(xs), n)
        share, gap = "", gaps.get(condition)
        if gap is not None and name != reference and gap(range(n)) > 0:
            base = correct[reference, condition]

            def closed(idx, xs=xs, gap=gap, base=base):
                g = gap(idx)
                return (mean(xs, idx) - mean(base, idx)) / g if g else 0.0
            s_lo, s_hi = bootstrap(closed, n)
            share = f"{closed(range(n)):.1%} [{s_lo:.1%}, {s_hi:.1%}]"
        lines.append(f"| {name} | {'full' if condition == 'full' else 'block, ' + condition} | "
                     f"{sum(xs) / n:.1%} [{a:.1%}, {b:.1%}] | {share} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["teacher=smollm2-135m"],
                   help="NAME=PATH (an embedded name, an exported student or any RoPE model folder); the first is the "
                        "reference whose full/block gap defines the task gap")
    p.add_argument("--samples", type=int, default=300)
    p.add_argument("--pairs", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="also write the table to this markdown file")
    args = p.parse_args(argv)
    from lit_block.model import BlockAttentionLM

    models = {}
    for spec in args.models:
        name, _, path = spec.partition("=")
        models[name] = BlockAttentionLM.from_pretrained(path or name, dtype=torch.float32).eval()
    samples = make_samples(next(iter(models.values())).tokenizer, args.samples, args.pairs, args.seed)
    result = table(evaluate(models, samples), next(iter(models)))
    header = f"{args.samples} samples of {args.pairs} pairs, seed {args.seed}; chance {1 / args.pairs:.1%}\n\n"
    print(header + result)
    if args.out:
        Path(args.out).write_text(header + result + "\n")


if __name__ == "__main__":
    main()
