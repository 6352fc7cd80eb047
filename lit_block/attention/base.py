"""What every attention backend is: a callable prepared once per batch from a layout.

A backend's constructor does the per-batch work (a dense mask, a ``BlockMask``, segment offsets)
once; every decoder layer then calls it with its own queries, keys and values.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from lit_block.layout import BlockLayout


class BlockAttention(ABC):
    """Block attention for one batch. Shapes follow transformers' attention interface."""

    def __init__(self, layout: BlockLayout):
        self.layout = layout

    @abstractmethod
    def __call__(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        scaling: float | None = None,
        dropout: float = 0.0,
    ) -> torch.Tensor:
        """Attend under the layout.

        Args:
            query: ``[B, H, T, D]``.
            key, value: ``[B, H_kv, T, D]`` (``H`` a multiple of ``H_kv``: grouped-query attention).
            scaling: softmax scale (default ``D ** -0.5``).
            dropout: attention dropout probability (training only).

        Returns:
            ``[B, T, H, D]``; rows of padding tokens are unspecified.
        """

    @staticmethod
    def _no_dropout(name: str, dropout: float) -> None:
        if dropout > 0:
            raise ValueError(f"the {name} block-attention backend has no attention dropout (got {dropout}); use sdpa")


def half_precision_inputs(name: str, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Half-precision inputs for the flash and cuDNN kernels: under autocast, cast to its dtype (autocast does not cover
    ``varlen_attn`` or flash-attn, and RoPE in fp32 turns bf16 projections back into fp32); otherwise refuse fp32."""
    q = tensors[0]
    if q.dtype in (torch.float16, torch.bfloat16) or q.device.type != "cuda":
        return tensors
    if torch.is_autocast_enabled(q.device.type):
        dtype = torch.get_autocast_dtype(q.device.type)
        return tuple(t.to(dtype) for t in tensors)
    raise ValueError(f"attn_backend={name!r} runs half-precision kernels, which need bfloat16 or float16 inputs; got "
                     f"{q.dtype}: load the model in bfloat16, train under bf16 autocast, or use 'sdpa' or 'flex'")
