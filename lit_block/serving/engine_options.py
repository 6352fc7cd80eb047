"""The serving engine's command-line options, shared by ``lit-block serve`` and ``lit-block bench serve`` (no heavy
imports: the CLI builds its parsers at start-up)."""

from __future__ import annotations

from typing import Optional  # jsonargparse reads the argument types at run time


# requests admitted a turn: on the H100 with the 8B shape (16 clients, 8 x 512-token passages) 8 gave the cached
# server's TTFT p50 a quarter below 16's at the same throughput, and 4 less throughput (docs/serve.md)
MAX_BATCH_REQUESTS = 8


def add_engine_options(p) -> None:
    """``--max-batch-requests``, ``--batch-queries``, ``--decode-kernel``, ``--fuse-pointwise`` on parser ``p``."""
    p.add_argument("--max-batch-requests", type=int, default=MAX_BATCH_REQUESTS,
                   help="requests the engine admits per turn (their block misses prefilled together, their queries "
                        "run together): more raise throughput on bursts, fewer give their first tokens sooner")
    p.add_argument("--batch-queries", type=Optional[bool], default=None,
                   help="prefill the queries of the requests admitted together in one forward, in the rows of the "
                        "decoding slab, instead of one each (default: on a GPU, off on CPU, where it measured no gain)")
    p.add_argument("--decode-kernel", choices=["auto", "sdpa", "split-key"], default="auto",
                   help="attention of the batched decoding step: SDPA, or split-key (Triton, GPUs: each row's keys "
                        "read in parallel pieces, the columns it does not see skipped, the step replayed from a CUDA "
                        "graph); auto: split-key on a CUDA device with Triton, SDPA elsewhere")
    p.add_argument("--fuse-pointwise", type=bool, default=False,
                   help="torch.compile the model's RMS norms and MLPs (dynamic shapes), fusing their element-wise "
                        "kernels: a shorter decoding step, at the cost of a few seconds of compilation in the first "
                        "forwards (lit_block.serving.pointwise_compile)")
