"""Where should coarse cuts go on kinds of text the segmenter never saw? Candidate rules scored on leave-one-out folds.

Pre-registered on 2026-12-06, before any fold of the run it reads was scored:
- **Folds**: those of `lit-block eval-seg --leave-one-out experiments/segmenter/segmenter.yaml --dataset
  data/semanticseg --per-category 10 --output eval-seg/loo-2026-12-06 --extra=--data.init_args.max_documents=200
  --extra=--trainer.max_epochs=4` (every fold trained on 200 documents a split drawn from all 15 other categories,
  4 epochs, seed 0: the budget of the 2026-12-05 folds). Each fold is scored on the same 10 documents of its
  left-out category as that run.
- **Selection**: the first eight categories in alphabetical order (academic, code, conversation, dictionary, email,
  encyclopedia, faq, howto). **Confirmation**: the other eight, scored only after the choice.
- **Candidates** (ranking keys per unit; as in `eval-seg`, every method gets the gold average block size, so only
  the ranking matters): the shipped rule (middle probability x topic shift over 32 units), the coarse head alone, the
  middle probability x the mean of the shifts over 1, 8 and 32 units (the semantic baseline's one-unit distance
  wins coarse in four failing folds), the middle probability x the shift over 8 units, and the shipped rule x
  (0.5 + the coarse head's probability).
- **Choice**: the candidate with the lowest pooled coarse Pk over the selection folds' documents, adopted only if it
  is also lower than the shipped rule on the confirmation folds, with the paired bootstrap interval over those
  documents below zero. Otherwise the shipped rule stays.

    python scripts/coarse_rule_study.py --folds eval-seg/loo-2026-12-06/folds --dataset data/semanticseg
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from lit_block.quality import bootstrap_ratio_interval
from lit_block.segmentation.evaluation import pick_documents
from lit_block.segmentation.metrics import window_errors
from lit_block.segmentation.model import LEVEL_INDEX, SHIFT_UNITS, topic_shift
from lit_block.segmentation.planner import plan_blocks
from lit_block.segmentation.segmenter import Segmenter

SELECTION = ("academic", "code", "conversation", "dictionary", "email", "encyclopedia", "faq", "howto")


def candidate_keys(net, features: torch.Tensor) -> dict[str, torch.Tensor]:
    """``features [U, F]`` -> each candidate's ranking key ``[U]`` (higher: cut first)."""
    with torch.inference_mode():
        coarse = torch.sigmoid(net.head(features[None], LEVEL_INDEX["coarse"]))[0]
        middle = torch.sigmoid(net.head(features[None], LEVEL_INDEX["middle"]))[0]
        vectors = features[:, : net.encoder.dim]
        shift = {k: topic_shift(vectors, k) for k in (1, 8, SHIFT_UNITS)}
    rule = middle * shift[SHIFT_UNITS]
    return {"shipped rule": rule, "coarse head": coarse, "middle x shifts 1+8+32": middle * (shift[1] + shift[8] + shift[32]) / 3,
            "middle x shift 8": middle * shift[8], "shipped rule x (0.5 + head)": rule * (0.5 + coarse)}


def score_fold(seg: Segmenter, rows: list[dict]) -> dict[str, list[list[int]]]:
    """Per candidate, each document's ``[Pk errors, WindowDiff errors, windows]`` at the coarse level."""
    out: dict[str, list[list[int]]] = {}
    for row in rows:
        doc = seg.prepare(row["text"])
        units = doc.candidate_chars
        spans = list(zip(units, units[1:] + [len(doc.text)]))
        features = seg.module.unit_features([doc.text[a:b] for a, b in spans], doc.text, spans)
        gold = sorted({doc.token_index(c) for c in row["boundaries_coarse"]} - {0, doc.n_tokens})
        target = doc.n_tokens / (len(gold) + 1)
        for name, key in candidate_keys(seg.module, features).items():
            scores = {doc.token_index(c): float(v) for c, v in zip(units[1:], key[1:])
                      if 0 < doc.token_index(c) < doc.n_tokens}
            hyp = plan_blocks(doc.n_tokens, scores, target_tokens=target)
            if name == "shipped rule" and seg.module.coarse_scoring == "topic-shift":  # the study scores what ships
                assert hyp == seg.cut(doc, "coarse", target_tokens=target), "the shipped rule's cuts differ from eval-seg's"
            out.setdefault(name, []).append(list(window_errors(gold, hyp, doc.n_tokens)))
    return out


def pooled(docs: list[list[int]]) -> float:
    return sum(d[0] for d in docs) / max(sum(d[2] for d in docs), 1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--folds", default="eval-seg/loo-2026-12-06/folds")
    p.add_argument("--dataset", default="data/semanticseg")
    p.add_argument("--per-category", type=int, default=10)
    p.add_argument("--out", default=None, help="JSON of every candidate's per-document errors per fold")
    args = p.parse_args()
    from datasets import load_from_disk

    data = load_from_disk(args.dataset)
    rows = [r for split in data for r in data[split]]
    results: dict[str, dict[str, list[list[int]]]] = {}
    for fold in sorted(Path(args.folds).iterdir()):
        done = fold / "fold.json"
        if not done.is_file():
            continue
        seg = Segmenter("segmenter", json.loads(done.read_text())["checkpoint"], separator_units="free")  # as registered
        results[fold.name] = score_fold(seg, pick_documents([r for r in rows if r["category"] == fold.name],
                                                            args.per_category))
        print(fold.name, {n: round(pooled(d), 3) for n, d in results[fold.name].items()}, flush=True)
    for part, folds in (("selection", [f for f in results if f in SELECTION]),
                        ("confirmation", [f for f in results if f not in SELECTION])):
        if not folds:
            continue
        print(f"\n{part} ({len(folds)} folds: {', '.join(folds)}): pooled coarse Pk, minus the shipped rule [95% paired]")
        base = [d for f in folds for d in results[f]["shipped rule"]]
        for name in results[folds[0]]:
            docs = [d for f in folds for d in results[f][name]]
            low, high = bootstrap_ratio_interval([a[0] - b[0] for a, b in zip(docs, base)], [a[2] for a in docs])
            print(f"  {name:32s} {pooled(docs):.3f}  {pooled(docs) - pooled(base):+.3f} [{low:+.3f}, {high:+.3f}]  "
                  f"mean over folds {sum(pooled(results[f][name]) for f in folds) / len(folds):.3f}")
    if args.out:
        Path(args.out).write_text(json.dumps(results))


if __name__ == "__main__":
    main()
