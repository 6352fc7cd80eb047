"""Block-attention backends. All compute the function defined by :mod:`lit_block.layout`.

| name     | where                      | how                                                        |
| -------- | -------------------------- | ---------------------------------------------------------- |
| `sdpa`   | CPU and GPU                | dense boolean mask, PyTorch SDPA; the reference            |
| `flex`   | GPU (CPU: forward only)    | FlexAttention ``BlockMask`` from one ``mask_mod``          |
| `varlen` | GPU                        | ``varlen_attn`` for blocks + lower-right causal SDPA       |
| `flash`  | GPU with flash-attn        | flash-attn varlen for blocks + bottom-right causal kernel  |
| `cudnn`  | GPU, blocks of one length  | dense cuDNN calls on block views, merged by log-sum-exp    |
| `auto`   | anywhere                   | the fastest that applies: cudnn for long uniform layouts on|
|          |                            | GPUs, else flex; sdpa on CPU                               |
"""

from __future__ import annotations

import importlib.util
from collections import Counter

import torch

from lit_block.attention.base import BlockAttention
from lit_block.attention.cudnn import CudnnBlockAttention, CudnnPlan, cudnn_plan, head_dim_supported
from lit_block.attention.dense import SdpaBlockAttention
from lit_block.attention.flex import FlexBlockAttention
from lit_block.attention.split import FlashBlockAttention, SplitPlan, VarlenBlockAttention
from lit_block.layout import BlockLayout

BACKENDS: dict[str, type[BlockAttention]] = {
    "sdpa": SdpaBlockAttention,
    "flex": FlexBlockAttention,
    "varlen": VarlenBlockAttention,
    "flash": FlashBlockAttention,
    "cudnn": CudnnBlockAttention,
}
# auto prefers cudnn where query heads x tokens reach this (32 heads at 8k tokens, 16 at 16k). On an H200
# (docs/attention_notes.md): alone, at 32 heads in 512-token blocks, flex is faster at 4k tokens and cudnn 2x flex from 8k;
# in the Qwen3-0.6B distillation step (16 heads), the teacher's block pass takes 28 ms on flex against 49 on cudnn at
# 8k, the same on both at 16k and 92 against 78 ms at 32k ...
CUDNN_MIN_HEAD_TOKENS = 32 * 8192
# ... and with released blocks (block dropout: one more call each), from this many tokens: alone at 32 heads flex wins
# at 8k and cudnn at 16k and 32k; in the step (16 heads) the student runs 308 ms steps on cudnn against 234 on flex at
# 8k; its forward and the step's backward take 265 against 294 ms at 16k and 598 against 720 at 32k
CUDNN_MIN_TOKENS_RELEASED = 16384
# cuDNN builds an execution plan for every new shape of each of its calls (tens of ms each, docs/attention_notes.md),
# so auto takes cudnn for a layout only once its shape has come this many times before: recurring shapes (fixed-length
# packing, benchmarks, the distillation student) get cudnn; one-off lengths stay on flex. Which blocks are released is
# not part of the shape: a released block adds one call whose shape depends only on where the block starts, so block
# dropout's random draws bring at most one new plan per block position, each built once per process
CUDNN_AFTER_SEEN = 2
_seen_shapes: Counter = Counter()  # cudnn-eligible layout shapes auto has been asked about
BACKEND_NAMES = (*BACKENDS, "auto")


def backend_unavailable_reason(name: str, device: torch.device) -> str | None:
    """Why backend ``name`` cannot run on ``device``, or None if it can."""
    if name == "sdpa":
        return None
    if device.type != "cuda":
        return f"the {name} backend needs a CUDA device (got {device.type}); use sdpa"
    if name == "flex" and importlib.util.find_spec("torch.nn.attention.flex_attention") is None:
        return "this torch has no FlexAttention"
    if name == "varlen" and importlib.util.find_spec("torch.nn.attention.varlen") is None:
        return "this torch has no torch.nn.attention.varlen (needs torch >= 2.10)"
    if name == "flash" and importlib.util.find_spec("flash_attn") is None:
        return "flash-attn is not installed (pip install 'lit-block[flash]')"
    if name == "cudnn" and not torch.backends.cudnn.is_available():
        return "cuDNN is not available to this torch"
    if name == "cudnn" and torch.cuda.get_device_capability(device) < (8, 0):
        return "cuDNN's attention kernels need an Ampere or newer GPU"
    return None


def resolve_backend(name: str, device: torch.device | str) -> str:
    """Validate ``name`` for ``device``; ``auto`` picks flex on CUDA and sdpa elsewhere."""
    device = torch.device(device)
    if name not in BACKEND_NAMES:
        raise ValueError(f"unknown attention backend {name!r}; choose one of {', '.join(BACKEND_NAMES)}")
    if name == "auto":
        return "flex" if backend_unavailable_reason("flex", device) is None else "sdpa"
    reason = backend_unavailable_reason(name, device)
    if reason:
        raise ValueError(reason)
    return name


def pick_backend(name: str, layout: BlockLayout, dtype: torch.dtype | None = None, head_dim: int | None = None,
                 heads: int = 32) -> str:
    """``resolve_backend`` for one batch: ``auto`` takes cudnn where it applies and pays, else flex on CUDA and sdpa
    elsewhere. cudnn applies to uniform layouts (released blocks included), 16-bit compute (``dtype`` or autocast) and
    head dims it supports; it pays from ``CUDNN_MIN_HEAD_TOKENS`` query heads x tokens (``heads``: the model's query
    heads; 32, the attention benchmark's, by default) and, with released blocks, ``CUDNN_MIN_TOKENS_RELEASED`` tokens,
    once the layout's shape, whichever blocks are released, has come ``CUDNN_AFTER_SEEN`` times before (each new shape
    costs cuDNN new execution plans)."""
    return _pick(name, layout, dtype, head_dim, heads)[0]


def prepare_block_attention(layout: BlockLayout, backend: str = "sdpa", dtype: torch.dtype | None = None,
                            head_dim: int | None = None, heads: int = 32) -> BlockAttention:
    """Build backend ``backend`` (a name or ``auto``, picked with ``pick_backend``) for one batch; the result is
    called once per decoder layer."""
    picked, plan = _pick(backend, layout, dtype, head_dim, heads)
    if plan is not None:  # auto read the layout's cudnn plan already: its host syncs once per batch, not twice
        return CudnnBlockAttention(layout, plan)
    return BACKENDS[picked](layout)


def _pick(name: str, layout: BlockLayout, dtype, head_dim, heads) -> tuple[str, CudnnPlan | None]:
    """``pick_backend``'s answer, with the cudnn plan where ``auto`` picked cudnn."""
    device = layout.block_ids.device
    picked = resolve_backend(name, device)
    if name != "auto" or picked != "flex":
        return picked, None
    half = dtype in (torch.float16, torch.bfloat16) or torch.is_autocast_enabled(device.type)
    if (not half or (head_dim is not None and not head_dim_supported(head_dim))
            or heads * layout.seq_len < CUDNN_MIN_HEAD_TOKENS
            or backend_unavailable_reason("cudnn", device) is not None):
        return picked, None
    plan = cudnn_plan(layout)
    if isinstance(plan, str) or (plan.released and layout.seq_len < CUDNN_MIN_TOKENS_RELEASED):
        return picked, None
    if len(_seen_shapes) > 10_000:  # a long run of ever-new shapes: forget them rather than grow
        _seen_shapes.clear()
    shape = (layout.batch_size, layout.seq_len, plan.block_len, plan.n_context, dtype, heads, head_dim,
             torch.is_grad_enabled())
    _seen_shapes[shape] += 1
    return ("cudnn", plan) if _seen_shapes[shape] > CUDNN_AFTER_SEEN else (picked, None)


__all__ = [
    "BACKENDS",
    "BACKEND_NAMES",
    "BlockAttention",
    "CudnnBlockAttention",
    "FlashBlockAttention",
    "FlexBlockAttention",
    "SdpaBlockAttention",
    "SplitPlan",
    "VarlenBlockAttention",
    "pick_backend",
    "prepare_block_attention",
    "resolve_backend",
]
