"""Segmentation speed: the trained segmenter and each baseline on the same long document.

    lit-block bench segment --checkpoint checkpoints/segmenter/segmenter.ckpt --tokens 32768

The document is real text: test-split documents of the corpus concatenated up to ``--tokens``
tokens (or a file given with ``--file``). Each method's time covers scoring and planning blocks
(``granularity middle``); "prepare" (one tokenization and candidate search, shared by all
methods) is timed once. Ratios are against the ``fixed`` baseline in the same run.
"""

from __future__ import annotations

import statistics
import time

import torch

from lit_block.segmentation.document import token_offsets
from lit_block.segmentation.segmenter import METHODS, Segmenter


def long_text(dataset: str, tokens: int, tokenizer) -> str:
    from datasets import load_from_disk

    parts, total = [], 0
    for row in load_from_disk(dataset)["test"]:
        parts.append(row["text"])
        total += row["n_tokens"]
        if total >= tokens:
            break
    offsets = token_offsets(tokenizer, "".join(parts))
    return "".join(parts)[: offsets[min(tokens, len(offsets)) - 1][1]]


def build_parser():
    from lit_block.command_line import command_parser

    p = command_parser("lit-block bench segment", __doc__)
    p.add_argument("--checkpoint", help="trained segmenter (without it only the baselines run)")
    p.add_argument("--dataset", default="data/semanticseg", help="corpus folder whose documents are timed")
    p.add_argument("--file", help="a UTF-8 text file instead of corpus documents")
    p.add_argument("--tokens", type=int, default=32768, help="document length timed (tokens)")
    p.add_argument("--repeat", type=int, default=3, help="timed runs (median reported)")
    p.add_argument("--device", default="cpu", help="where the segmenter runs")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS, help="methods timed")
    p.add_argument("--tokenizer", default="smollm2-135m", help="tokenizer name or folder")
    p.add_argument("--encoder", help="sentence-encoder folder overriding the checkpoint's (segmenter, semantic)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    methods = [m for m in args.methods if m != "segmenter" or args.checkpoint]
    if "fixed" not in methods:
        methods.append("fixed")  # the ratio baseline
    extra = {"semantic_encoder": args.encoder, "encoder": args.encoder} if args.encoder else {}
    segs = {m: Segmenter(m, args.checkpoint if m == "segmenter" else None, tokenizer=args.tokenizer, **extra)
            for m in methods}
    tokenizer = segs["fixed"].tokenizer
    text = open(args.file, encoding="utf-8").read() if args.file else long_text(args.dataset, args.tokens, tokenizer)
    if "segmenter" in segs and args.device != "cpu":
        segs["segmenter"].module.to(args.device)
    if "semantic" in segs and args.device != "cpu":
        segs["semantic"]._embedder.to(args.device)
    t0 = time.perf_counter()
    doc = segs["fixed"].prepare(text)
    prepare = time.perf_counter() - t0
    rows = []
    for name, seg in segs.items():
        seg.cut(doc, "middle")  # warm-up: loads models, compiles nothing, fills no cache that later runs reuse
        times = []
        for _ in range(args.repeat):
            seg._doc = None  # drop per-document memo: every run scores from scratch
            if args.device == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            blocks = seg.cut(doc, "middle")
            if args.device == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
        rows.append((name, statistics.median(times), len(blocks) + 1))
    base = dict((n, t) for n, t, _ in rows)["fixed"]
    print(f"\n{doc.n_tokens} tokens, {len(doc.candidate_chars)} candidate units, device {args.device}, "
          f"torch threads {torch.get_num_threads()}; prepare (tokenize + candidates) {prepare:.2f} s\n")
    print("| method | seconds (median) | prepare + method | x fixed | blocks |\n|---|---|---|---|---|")
    for name, t, n in rows:
        print(f"| {name} | {t:.3f} | {prepare + t:.2f} | {t / base:.1f}x | {n} |")
    return 0
