"""``lit-block bench NAME``: benchmarks that print a table (speed figures are ratios to a baseline run alongside)."""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    from lit_block.benchmarks import attention, distill_step, segmentation, ttft

    benches = {"attention": attention.main, "segment": segmentation.main, "ttft": ttft.main,
               "distill": distill_step.main}
    if not argv or argv[0] not in benches:
        print(f"usage: lit-block bench {{{','.join(benches)}}} [options]", file=sys.stderr)
        return 2
    return benches[argv[0]](argv[1:])
