"""``lit-block segment FILE``: cut a UTF-8 text into blocks with any method.

    lit-block segment book.txt --method segmenter --checkpoint seg.ckpt --granularity middle
    cat notes.md | lit-block segment - --method regex --granularity 256 --max-block-tokens 400 --format text

JSON output: ``{"blocks": [{"start": char, "end": char, "tokens": n, "text": ...}]}``; the blocks
cover the input exactly, in order. Empty or binary input, a missing checkpoint or bad options
exit with status 2 and a message that names the problem.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import json
import os
import sys

from lit_block.candidates import SPLITTERS
from lit_block.errors import UsageError
from lit_block.segmentation.segmenter import (COARSE_SCORING, LEVEL_TOKENS, METHODS, Segmenter, add_inference_options,
                                              inference_options, parse_granularity)


class InputError(UsageError):
    """Input the segmenter cannot read: the message names the file and the problem."""


def read_input(path: str) -> str:
    name = "standard input" if path == "-" else path
    try:
        data = sys.stdin.buffer.read() if path == "-" else open(path, "rb").read()
    except OSError as err:
        raise InputError(f"{name}: {err.strerror.lower() if err.strerror else err}") from err
    nul = data.find(b"\x00")
    if nul >= 0:
        raise InputError(f"{name}: binary input (NUL byte at {nul}); give a UTF-8 text file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise InputError(f"{name}: not UTF-8 text (undecodable byte at {err.start})") from None
    if not text.strip():
        raise InputError(f"{name}: empty input, nothing to segment")
    return text


def default_max_block_tokens(granularity: str | int, min_block_tokens: int, given: int | None) -> int | None:
    """The maximum the user gave (0: none), else 4 x the granularity's block size: a segmenter that finds no
    boundary must not return one block of the whole document."""
    if given is not None:
        return given or None
    size = granularity if isinstance(granularity, int) else LEVEL_TOKENS[granularity]
    return max(4 * size, 2 * min_block_tokens)


def build_parser():
    from lit_block.command_line import command_parser

    p = command_parser("lit-block segment", __doc__)
    p.add_argument("file", help="a UTF-8 text file, or - for standard input")
    p.add_argument("--method", default="segmenter", choices=METHODS, help="the trained segmenter or a baseline")
    p.add_argument("--checkpoint", help="trained segmenter checkpoint (for --method segmenter)")
    p.add_argument("--granularity", default="middle", help="coarse, middle, fine, or a target block size in tokens")
    p.add_argument("--threshold", type=float, default=0.5, help="segmenter boundary probability to cut at")
    p.add_argument("--coarse-scoring", default=None, choices=COARSE_SCORING,
                   help="where the segmenter cuts coarse blocks: topic-shift (default; by middle probability x "
                        "topic shift) or head")
    add_inference_options(p)
    p.add_argument("--min-block-tokens", type=int, default=0, help="smallest block (tokens); shorter ones merge")
    p.add_argument("--max-block-tokens", type=int, default=None,
                   help="hard maximum block size (default: 4 x the granularity's block size, e.g. 1024 for middle; "
                        "0 for none)")
    p.add_argument("--max-depth", type=int, default=8, help="recursion depth for splitting over-long blocks")
    p.add_argument("--tokenizer", default="smollm2-135m", help="tokenizer that counts block tokens")
    p.add_argument("--splitter", default="sentences", choices=SPLITTERS, help="candidate cut points (see lit_block.candidates)")
    p.add_argument("--format", default="json", choices=("json", "text"),
                   help="json: blocks with offsets and token counts; text: each block under an === block N === line")
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    _no_progress_bars()
    granularity = parse_granularity(args.granularity)  # errors are reported by the command's top level (status 2)
    for module in startup_modules(args.method, args.splitter):  # the rest of start-up, before any work
        with contextlib.suppress(ImportError):  # a missing one fails where it is used, with its own message
            importlib.import_module(module)
    gc.freeze()  # what the imports made lives on: each collection would walk torch's objects again (50 ms each)
    try:
        text = read_input(args.file)
        segmenter = Segmenter(args.method, args.checkpoint, args.tokenizer, args.splitter,
                              coarse_scoring=args.coarse_scoring, **inference_options(args))
        blocks = segmenter.segment(text, granularity, args.threshold, args.min_block_tokens,
                                   default_max_block_tokens(granularity, args.min_block_tokens, args.max_block_tokens),
                                   args.max_depth)
        try:
            _write(blocks, args.format)
        except BrokenPipeError:  # e.g. piped into `head`
            sys.stderr.close()
    finally:
        gc.unfreeze()  # in-process callers (tests) keep a collector that sees everything
    return 0


def startup_modules(method: str, splitter: str = "sentences") -> list[str]:
    """What ``lit-block segment`` imports besides its own command modules before it reads the input: its start-up
    (``lit-block bench segment`` times it apart from the segmentation). torch only for the methods that need it."""
    modules = ["tokenizers"] + (["punkt"] if splitter == "sentences" else [])
    if method in ("segmenter", "semantic"):
        modules += ["lit_block.segmentation.model", "safetensors.torch"]  # torch
    return modules


def _no_progress_bars() -> None:
    """No weight-loading bars around the output, without importing transformers for it (a second or more of
    start-up): the embedded encoder loads without it; a tokenizer or encoder that needs it reads the setting."""
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    elif "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    else:
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def _write(blocks, fmt: str) -> None:
    if fmt == "json":
        json.dump({"blocks": [b.__dict__ for b in blocks]}, sys.stdout, ensure_ascii=False)
        sys.stdout.write("\n")
    else:
        for i, b in enumerate(blocks):
            sys.stdout.write(f"=== block {i} (chars {b.start}-{b.end}, {b.tokens} tokens) ===\n{b.text}")
            if not b.text.endswith("\n"):
                sys.stdout.write("\n")
