"""Moving cached keys to another position: RoPE rotations compose, ``R(offset + p) = R(offset) R(p)``.

A block prefilled alone holds keys rotated for local positions ``0 .. L-1``. Placed at ``offset``
in a prompt, its keys must be those of positions ``offset .. offset+L-1``: one more rotation by
``offset`` gives exactly that, because rotary embeddings rotate each channel pair by an angle
linear in the position. Values carry no position and are reused as they are.

This holds when the angle is ``position * inv_freq`` with fixed ``inv_freq``: transformers' rope
types ``default``, ``linear``, ``llama3`` and ``yarn`` (yarn's attention factor scales cos and sin
once, in the cached key; the re-rotation here is a pure rotation, so it is not applied twice).
Types whose frequencies depend on the sequence length (``dynamic``, ``longrope``) give keys that a
rotation cannot move, and are refused.
"""

from __future__ import annotations

import torch
from torch import nn

from lit_block.host_copies import to_device
from lit_block.serving.rope_kernel import can_place_blocks, place_blocks

EXACT_ROPE_TYPES = ("default", "linear", "llama3", "yarn")


def rope_type(config) -> str:
    """The rope type of a transformers config (``default`` when the config names none)."""
    params = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    return params.get("rope_type", params.get("type", "default")) if isinstance(params, dict) else "default"


def find_rotary_embedding(model: nn.Module) -> nn.Module:
    """The model's rotary-embedding module (the one holding ``inv_freq``)."""
    for module in model.modules():
        if "rotary" in type(module).__name__.lower() and hasattr(module, "inv_freq"):
            return module
    raise ValueError(f"{type(model).__name__} has no rotary embedding with inv_freq; cached keys cannot be moved")


def _rotated(keys: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """``keys [..., head_dim]`` rotated by angles whose ``cos``/``sin`` (full ``head_dim``) broadcast against them;
    products in float32."""
    k = keys.float()
    half = k.shape[-1] // 2
    rotated_half = torch.cat([-k[..., half:], k[..., :half]], dim=-1)  # transformers' rotate_half
    return (k * cos + rotated_half * sin).to(keys.dtype)


class KeyRerotator:
    """Rotates cached keys ``[..., L, head_dim]`` by a position offset, with the model's own frequencies."""

    def __init__(self, model: nn.Module, config):
        kind = rope_type(config)
        if kind not in EXACT_ROPE_TYPES:
            raise ValueError(
                f"rope type {kind!r} is not supported by the block KV store: its frequencies depend on the sequence "
                f"length, so a block's cached keys cannot be moved exactly (supported: {', '.join(EXACT_ROPE_TYPES)})"
            )
        rotary = find_rotary_embedding(model)
        # [head_dim / 2], scaling (linear, llama3, yarn) included; a copy, so that a change to the model's shows
        self.inv_freq = rotary.inv_freq.detach().to(torch.float32, copy=True)

    def cos_sin(self, offsets: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """``cos, sin [n, head_dim / 2]`` (float32) of rotations by ``n`` position offsets, one angle per channel
        pair; angles in float64."""
        angle = to_device(offsets, device).double()[:, None] * self.inv_freq.to(device, torch.float64)[None]
        return angle.cos().float(), angle.sin().float()

    def rotate(self, keys: torch.Tensor, offsets: int | torch.Tensor) -> torch.Tensor:
        """``keys [..., L, head_dim]`` rotated as if each position were ``offsets`` further on (an int, or a ``[L]``
        tensor of per-position offsets); same dtype as ``keys``."""
        offsets = torch.as_tensor(offsets)
        if offsets.dim() == 0:
            if int(offsets) == 0:
                return keys
            offsets = offsets.expand(keys.shape[-2])
        cos, sin = self.cos_sin(offsets, keys.device)  # [L, head_dim / 2]
        return _rotated(keys, torch.cat([cos, cos], -1), torch.cat([sin, sin], -1))

    def place_blocks(self, dst: torch.Tensor, blocks: list[torch.Tensor], starts: list[int]) -> None:
        """Write position-major block keys ``blocks[i] [L_i, ..., head_dim]`` (local positions) into ``dst [P, ...,
        head_dim]`` from position ``starts[i]`` on, each moved there: one Triton pass on CUDA (``rope_kernel``),
        a concatenation and the torch formula elsewhere."""
        lengths = [b.shape[0] for b in blocks]
        offsets = torch.repeat_interleave(torch.tensor(starts), torch.tensor(lengths))  # each position's block offset
        cos, sin = self.cos_sin(offsets, dst.device)  # [P, head_dim / 2]
        if can_place_blocks(dst, blocks):
            place_blocks(dst, blocks, starts, cos, sin)
            return
        shape = (len(offsets),) + (1,) * (dst.dim() - 2) + (dst.shape[-1],)  # broadcast over the middle dims
        cos, sin = torch.cat([cos, cos], -1).view(shape), torch.cat([sin, sin], -1).view(shape)
        dst[: len(offsets)].copy_(_rotated(torch.cat(blocks), cos, sin))
