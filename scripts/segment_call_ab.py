"""Time ``Segmenter.segment`` on one document, in process, for an A/B of two code trees on the same machine.

    git archive BASE lit_block | tar -x -C /tmp/base          # the code to compare against
    for i in 1 2 3; do
      PYTHONPATH=/tmp/base python scripts/segment_call_ab.py --label base$i --checkpoint CKPT --file doc32k.txt --device cuda
      python scripts/segment_call_ab.py --label head$i --checkpoint CKPT --file doc32k.txt --device cuda
    done

Prints one line per process: which tree ran, the candidate search alone, and the whole call (tokenizing beside the
candidate search, scoring, planning) at the middle and coarse levels, medians of ``--repeat`` in milliseconds, with
the block counts (the two trees must cut the same blocks). GPU host timings vary between machines by up to 2x: compare
only lines of one run, alternating trees as above.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--label", required=True)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--file", required=True, help="a UTF-8 text file (the 32k-token document)")
    p.add_argument("--encoder", help="sentence-encoder folder overriding the checkpoint's")
    p.add_argument("--tokenizer", default="smollm2-135m")
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeat", type=int, default=15)
    args = p.parse_args()

    import lit_block
    from lit_block.candidates import candidate_starts
    from lit_block.segmentation.segmenter import Segmenter

    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    text = open(args.file, encoding="utf-8").read()
    seg = Segmenter(checkpoint=args.checkpoint, encoder=args.encoder, tokenizer=args.tokenizer)
    seg.module.to(args.device)

    def median_ms(fn) -> float:
        fn(), fn()
        times = []
        for _ in range(args.repeat):
            sync()
            t = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - t)
        return statistics.median(times) * 1000

    out = {"candidates": median_ms(lambda: candidate_starts(text))}
    for level in ("middle", "coarse"):
        def whole(level=level):
            seg._doc = None  # every call from scratch
            return seg.segment(text, level)
        out[level] = median_ms(whole)
        out[f"{level} blocks"] = len(whole())
    tree = os.path.dirname(os.path.dirname(os.path.abspath(lit_block.__file__)))
    print(args.label, tree, " ".join(f"{k} {v:.1f}" for k, v in out.items()))


if __name__ == "__main__":
    main()
