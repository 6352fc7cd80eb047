"""Block-attention backends. All compute the function defined by :mod:`lit_block.layout`.

| name     | where                      | how                                                        |
| -------- | -------------------------- | ---------------------------------------------------------- |
| `sdpa`   | CPU and GPU                | dense boolean mask, PyTorch SDPA; the reference            |
| `flex`   | GPU (CPU: forward only)    | FlexAttention ``BlockMask`` from one ``mask_mod``          |
| `varlen` | GPU                        | ``varlen_attn`` for blocks + lower-right causal SDPA       |
| `flash`  | GPU with flash-attn        | flash-attn varlen for blocks + bottom-right causal kernel  |
| `cudnn`  | GPU, uniform layouts       | dense cuDNN calls on block views, merged by log-sum-exp    |
| `auto`   | anywhere                   | the fastest that applies: cudnn for long uniform layouts on|
|          |                            | GPUs, else flex; sdpa on CPU                               |
"""

from __future__ import annotations

import importlib.util

import torch

from lit_block.attention.base import BlockAttention
from lit_block.attention.cudnn import CudnnBlockAttention, head_dim_supported, uniform_blocks
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
# from this many tokens on, auto prefers cudnn where the layout allows it (H200, docs/attention_notes.md): forward
# only, flex wins at 8k and cudnn from 16k; forward and backward, flex wins at 16k and cudnn at 31k and 32k
CUDNN_MIN_TOKENS_INFERENCE = 16384
CUDNN_MIN_TOKENS_TRAINING = 24576  # between the measured 16k and 31k
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


def pick_backend(name: str, layout: BlockLayout, dtype: torch.dtype | None = None, head_dim: int | None = None) -> str:
    """``resolve_backend`` for one batch: ``auto`` takes cudnn where it applies and pays, else flex on CUDA and sdpa
    elsewhere. cudnn applies to uniform layouts, 16-bit compute (``dtype`` or autocast) and head dims it supports; it
    pays from ``CUDNN_MIN_TOKENS_TRAINING`` tokens with gradients on, ``CUDNN_MIN_TOKENS_INFERENCE`` with them off."""
    device = layout.block_ids.device
    picked = resolve_backend(name, device)
    if name != "auto" or picked != "flex":
        return picked
    half = dtype in (torch.float16, torch.bfloat16) or torch.is_autocast_enabled(device.type)
    min_tokens = CUDNN_MIN_TOKENS_TRAINING if torch.is_grad_enabled() else CUDNN_MIN_TOKENS_INFERENCE
    if (half and (head_dim is None or head_dim_supported(head_dim)) and layout.seq_len >= min_tokens
            and backend_unavailable_reason("cudnn", device) is None and not isinstance(uniform_blocks(layout), str)):
        return "cudnn"
    return picked


def prepare_block_attention(layout: BlockLayout, backend: str = "sdpa", dtype: torch.dtype | None = None,
                            head_dim: int | None = None) -> BlockAttention:
    """Build backend ``backend`` (a name or ``auto``, picked with ``pick_backend``) for one batch; the result is
    called once per decoder layer."""
    return BACKENDS[pick_backend(backend, layout, dtype, head_dim)](layout)


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
