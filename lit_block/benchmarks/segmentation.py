"""Segmentation speed: the trained segmenter and each baseline on the same long document.

    lit-block bench segment --checkpoint checkpoints/segmenter/segmenter.ckpt --tokens 32768

The document is real text: test-split documents of the corpus concatenated up to ``--tokens``
tokens (or a file given with ``--file``). Each method's time covers scoring and planning blocks
(``granularity middle`` with the command's default limits, models loaded); "prepare" (one
tokenization and candidate search, shared by all methods) is timed apart. Ratios are against the
``fixed`` baseline in the same run.

The last columns time the command itself, ``lit-block segment FILE --method M --granularity middle``,
in fresh processes (median of ``--e2e-repeat``) on the CPU, and subtract its start-up: a process that
starts Python and imports what the command imports before it reads its input (torch only for the
methods that need it), timed the same way in the same run. What is left is loading the models,
tokenizing, finding candidates, scoring, planning and writing the blocks.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch

from lit_block.segmentation.cli import default_max_block_tokens
from lit_block.segmentation.document import token_offsets
from lit_block.segmentation.planner import BlockLimits
from lit_block.segmentation.segmenter import ENCODER_DTYPE_HELP, ENCODER_DTYPES, LEVELS, METHODS, Segmenter

TORCH_METHODS = ("segmenter", "semantic")


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
    p.add_argument("--device", default="cpu", help="where the segmenter and the semantic baseline run")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS, help="methods timed")
    p.add_argument("--tokenizer", default="smollm2-135m", help="tokenizer name or folder")
    p.add_argument("--granularity", default="middle", choices=LEVELS, help="the level every method cuts at")
    p.add_argument("--encoder", help="sentence-encoder folder overriding the checkpoint's (segmenter, semantic)")
    p.add_argument("--encoder-dtype", default="auto", choices=ENCODER_DTYPES, help=ENCODER_DTYPE_HELP)
    p.add_argument("--e2e-repeat", type=int, default=3,
                   help="fresh `lit-block segment` processes per method (and start-up processes) timed on the CPU, "
                        "median reported; 0: none")
    return p


def _synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _median_seconds(fn, repeat: int, device: str) -> float:
    """Median wall seconds of ``fn()`` over ``repeat`` calls after one warm-up, the device synchronised around each."""
    fn()
    times = []
    for _ in range(max(1, repeat)):
        _synchronize(device)
        t = time.perf_counter()
        fn()
        _synchronize(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _wall(command: list[str]) -> float:
    """Seconds one process takes, start to exit (its output discarded; a failure is an error)."""
    t = time.perf_counter()
    done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - t
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return seconds


def segment_command(path: str, method: str, checkpoint: str | None, tokenizer: str,
                    granularity: str = "middle", encoder_dtype: str = "auto") -> list[str]:
    """``lit-block segment`` as the bench runs it (the same module the ``lit-block`` script runs)."""
    return [sys.executable, "-m", "lit_block.cli", "segment", path, "--method", method, "--granularity", granularity,
            "--tokenizer", tokenizer,
            *(["--checkpoint", checkpoint, "--encoder-dtype", encoder_dtype] if method == "segmenter" else [])]


def startup_command(method: str) -> list[str]:
    """A process that imports what ``lit-block segment --method METHOD`` imports before it reads its input."""
    from lit_block.segmentation.cli import startup_modules

    modules = ["lit_block.cli", "lit_block.command_line", "lit_block.segmentation.cli", *startup_modules(method)]
    return [sys.executable, "-c", "import " + ", ".join(modules)]


def end_to_end(text: str, methods: list[str], checkpoint: str | None, tokenizer: str, repeat: int, granularity: str = "middle",
               encoder_dtype: str = "auto") -> tuple[dict[str, float], dict[bool, float], dict[str, float]]:
    """Median wall seconds of the command per method, of the start-up with and without torch, and their difference."""
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "document.txt")
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        walls: dict[str, list[float]] = {m: [] for m in methods}
        startup: dict[bool, list[float]] = {False: [], True: []}
        kinds = {m in TORCH_METHODS for m in methods}
        for _ in range(repeat):  # interleaved: a slower stretch of a shared machine touches every figure alike
            for needs_torch in sorted(kinds):
                startup[needs_torch].append(_wall(startup_command("segmenter" if needs_torch else "fixed")))
            for m in methods:
                walls[m].append(_wall(segment_command(path, m, checkpoint, tokenizer, granularity, encoder_dtype)))
    wall = {m: statistics.median(v) for m, v in walls.items()}
    start = {k: statistics.median(v) for k, v in startup.items() if v}
    return wall, start, {m: wall[m] - start[m in TORCH_METHODS] for m in methods}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    methods = [m for m in args.methods if m != "segmenter" or args.checkpoint]
    if "fixed" not in methods:
        methods.append("fixed")  # the ratio baseline
    extra = {"semantic_encoder": args.encoder, "encoder": args.encoder} if args.encoder else {}
    segs = {m: Segmenter(m, args.checkpoint if m == "segmenter" else None, tokenizer=args.tokenizer,
                         encoder_dtype=args.encoder_dtype, **extra) for m in methods}
    tokenizer = segs["fixed"].tokenizer
    text = open(args.file, encoding="utf-8").read() if args.file else long_text(args.dataset, args.tokens, tokenizer)
    if "segmenter" in segs and args.device != "cpu":
        segs["segmenter"].module.to(args.device)
    if "semantic" in segs and args.device != "cpu":
        segs["semantic"]._embedder.to(args.device)
    prepares = []
    for _ in range(max(1, args.repeat)):
        t0 = time.perf_counter()
        doc = segs["fixed"].prepare(text)
        doc.candidate_tokens  # waits for the tokenization (it runs beside the candidate search) and maps candidates
        prepares.append(time.perf_counter() - t0)
    prepare = statistics.median(prepares)
    level = args.granularity
    limits = BlockLimits(max_block_tokens=default_max_block_tokens(level, 0, None))  # as `lit-block segment`
    rows = []
    for name, seg in segs.items():
        def cut_once(seg=seg):
            seg._doc = None  # drop per-document memo: every run scores from scratch
            return seg.cut(doc, level, limits=limits)
        rows.append((name, _median_seconds(cut_once, args.repeat, args.device), len(cut_once()) + 1))
    whole = None  # the segmenter's whole call in this process: tokenizing beside the candidate search, as the command
    if "segmenter" in segs:
        def segment_once(seg=segs["segmenter"]):
            seg._doc = None
            return seg.segment(text, level, max_block_tokens=limits.max_block_tokens)
        whole = _median_seconds(segment_once, args.repeat, args.device)
    wall = start = beyond = {}
    e2e_methods = [m for m in methods if not (args.encoder and m in TORCH_METHODS)]  # the command takes no --encoder
    if args.e2e_repeat > 0:
        wall, start, beyond = end_to_end(text, e2e_methods, args.checkpoint, args.tokenizer, args.e2e_repeat, level,
                                         args.encoder_dtype)
    base = dict((n, t) for n, t, _ in rows)["fixed"]
    encoder = (f"segmenter encoder {next(segs['segmenter'].module.encoder.parameters()).dtype}; "
               if "segmenter" in segs else "")
    print(f"\n{doc.n_tokens} tokens, {len(doc.candidate_chars)} candidate units, {len(text)} characters; device "
          f"{args.device}, torch threads {torch.get_num_threads()}, {os.cpu_count()} CPUs; {encoder}"
          f"prepare (tokenize + candidates) {prepare:.3f} s (median of {len(prepares)})")
    if whole is not None:
        print(f"segmenter, whole call in this process (`Segmenter.segment`: tokenize, candidates, scoring, planning; "
              f"device {args.device}): {whole:.3f} s (median of {max(1, args.repeat)})")
    if start:
        print("start-up (Python + the command's imports, median of "
              f"{args.e2e_repeat} processes): " + ", ".join(f"{s:.2f} s {'with' if k else 'without'} torch"
                                                           for k, s in sorted(start.items())))
    print("\n| method | seconds (median) | prepare + method | x fixed | blocks | `lit-block segment` wall (CPU) "
          "| beyond start-up |\n|---|---|---|---|---|---|---|")
    for name, t, n in rows:
        e2e = f"{wall[name]:.2f} s | {beyond[name]:.2f} s" if name in wall else "- | -"
        print(f"| {name} | {t:.3f} | {prepare + t:.3f} | {t / base:.1f}x | {n} | {e2e} |")
    if wall:
        command = segment_command("DOC", "METHOD", args.checkpoint and "CKPT", args.tokenizer, level, args.encoder_dtype)
        print(f"\nend to end: `{' '.join(command[1:])}` (--checkpoint for the segmenter), median of "
              f"{args.e2e_repeat} processes each, minus the start-up of the same kind")
    return 0
