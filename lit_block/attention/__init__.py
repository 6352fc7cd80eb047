"""Block-attention backends. All compute the function defined by :mod:`lit_block.layout`.

| name     | where                      | how                                                        |
| -------- | -------------------------- | ---------------------------------------------------------- |
| `sdpa`   | CPU and GPU                | dense boolean mask, PyTorch SDPA; the reference            |
| `flex`   | GPU (CPU: forward only)    | FlexAttention ``BlockMask`` from one ``mask_mod``          |
| `varlen` | GPU                        | ``varlen_attn`` for blocks + lower-right causal SDPA       |
| `flash`  | GPU with flash-attn        | flash-attn varlen for blocks + bottom-right causal kernel  |
| `auto`   | anywhere                   | the best available for the device                          |
"""

from __future__ import annotations

import importlib.util

import torch

from lit_block.attention.base import BlockAttention
from lit_block.attention.dense import SdpaBlockAttention
from lit_block.attention.flex import FlexBlockAttention
from lit_block.attention.split import FlashBlockAttention, SplitPlan, VarlenBlockAttention
from lit_block.layout import BlockLayout

BACKENDS: dict[str, type[BlockAttention]] = {
    "sdpa": SdpaBlockAttention,
    "flex": FlexBlockAttention,
    "varlen": VarlenBlockAttention,
    "flash": FlashBlockAttention,
}
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


def prepare_block_attention(layout: BlockLayout, backend: str = "sdpa") -> BlockAttention:
    """Build backend ``backend`` for one batch; the result is called once per decoder layer."""
    return BACKENDS[resolve_backend(backend, layout.block_ids.device)](layout)


__all__ = [
    "BACKENDS",
    "BACKEND_NAMES",
    "BlockAttention",
    "FlashBlockAttention",
    "FlexBlockAttention",
    "SdpaBlockAttention",
    "SplitPlan",
    "VarlenBlockAttention",
    "prepare_block_attention",
    "resolve_backend",
]
