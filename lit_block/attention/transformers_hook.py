"""Block attention inside any transformers model, through its own extension points.

We register one attention implementation, ``lit_block``, with ``AttentionInterface`` (the function
each decoder layer calls) and ``AttentionMaskInterface`` (the mask the model builds). A forward
call that passes ``block_attention=<BlockAttention>`` (a kwarg transformers forwards to every
layer) runs under block attention; a call without it is plain causal SDPA with HF's own mask, so
the same weights serve as the full-attention teacher. ``cached_prefix=True`` marks new tokens run
over a cache they see in full (the global block over assembled block caches, and decoding): lower-
right causal attention, with GQA keys left unexpanded. ``key_mask=<[B, S] or [B, T, S] bool>`` marks
new tokens run over a slab of padded caches, one row per answer (the batched decoding step of
``lit_block.serving.decode_batch``, the batched query prefill there too):
each new token sees that row's unmasked keys, again without expanding GQA keys. No model source is patched.
"""

from __future__ import annotations

import importlib.util

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.attention.bias import causal_lower_right
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from lit_block.attention.base import BlockAttention

ATTN_IMPLEMENTATION = "lit_block"
DECODE_KERNELS = ("sdpa", "split-key")  # padded_rows_attention's kernels for one new token per row


def resolve_decode_kernel(kernel: str, device: str) -> str:
    """``auto``: split-key on a CUDA device with Triton (on an H100, +12-24% serving throughput over SDPA and its
    decode step replayed from a CUDA graph, docs/serve.md), SDPA elsewhere; another name is returned as given."""
    if kernel != "auto":
        return kernel
    return "split-key" if decode_kernel_problem("split-key", device) is None else "sdpa"


def decode_kernel_problem(kernel: str, device: str) -> str | None:
    """Why ``kernel`` cannot run the decode step on ``device`` (None: it can), for a start-up error."""
    if kernel == "split-key" and not device.startswith("cuda"):
        return f"split-key is a Triton kernel for CUDA devices, not {device}"
    if kernel == "split-key" and importlib.util.find_spec("triton") is None:
        return "split-key needs Triton, which is not installed"
    return None

# Masked SDPA without cuDNN: cuDNN builds a graph for every new shape (about 1.4 ms of host time per call on an
# H100), and a decode step's key length grows by one each step, so it rebuilt one per layer per step (66.7 ms for a
# 16-row step of the 8B shape, 24.5 ms without it).
_NO_CUDNN = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


def block_or_causal_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    block_attention: BlockAttention | None = None,
    cached_prefix: bool = False,
    key_mask: torch.Tensor | None = None,
    decode_kernel: str = "sdpa",
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """transformers' attention signature: ``query [B, H, T, D]`` -> ``([B, T, H, D], None)``."""
    if key_mask is not None:
        return padded_rows_attention(query, key, value, key_mask, scaling, decode_kernel), None
    if cached_prefix:
        # row i of the T new tokens sees every cached key and new keys 0..i: lower-right causal, which flash runs
        # natively on CUDA (HF's mask would force a masked kernel and expand the GQA keys over the whole cache)
        bias = causal_lower_right(query.shape[2], key.shape[2])
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=bias, dropout_p=dropout, scale=scaling,
                                             enable_gqa=query.shape[1] != key.shape[1])
        return out.transpose(1, 2).contiguous(), None
    if block_attention is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    if key.shape[2] != query.shape[2]:
        raise ValueError(
            "block attention got a KV cache in the forward pass; use lit_block's block KV store for cached prompts"
        )
    window = kwargs.get("sliding_window")
    if window is not None and query.shape[2] > window:
        raise ValueError(f"sliding-window layers (window {window}) are not supported under block attention")
    return block_attention(query, key, value, scaling=scaling, dropout=dropout), None


def padded_rows_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, key_mask: torch.Tensor,
                          scaling: float | None = None, decode_kernel: str = "sdpa") -> torch.Tensor:
    """Each row's new tokens over its own keys: ``query [B, H, T, D]``, ``key``/``value [B, Hkv, S, D]``, ``key_mask``
    ``[B, T, S]`` (True: that new token sees that key), or ``[B, S]`` when ``T == 1`` -> ``[B, T, H, D]``.

    HF's masked SDPA path would repeat every KV head over its query group (4x the slab's bytes for Llama-3's 32/8
    heads, written and read again each layer). Here each KV head's query heads enter SDPA as that head's query
    rows (the mask, not row order, says what each sees), so SDPA's own kernels read the slab once and expand
    nothing. Every new token must see at least one key.

    ``decode_kernel="split-key"``: one new token per row runs ``split_key_attention`` (Triton), which cuts each row's
    keys into pieces read in parallel and skips the columns it does not see; SDPA gives one thread block to each (row,
    KV head)."""
    if decode_kernel not in DECODE_KERNELS:
        raise ValueError(f"decode_kernel {decode_kernel!r}: expected one of {', '.join(DECODE_KERNELS)}")
    batch, heads, steps, dim = query.shape
    kv_heads, group = key.shape[1], heads // key.shape[1]
    given = tuple(key_mask.shape)
    if key_mask.dim() == 2:
        key_mask = key_mask[:, None, :]
    if key_mask.shape[:2] != (batch, steps):
        raise ValueError(f"key_mask {given} does not match {batch} rows of {steps} new tokens")
    if decode_kernel == "split-key" and steps == 1:
        from lit_block.attention.split_key_decode import split_key_attention  # Triton: imported where it runs

        return split_key_attention(query, key, value, key_mask[:, 0], scaling)
    # head h uses KV head h // group, as repeat_kv; its T tokens become rows g * T + t of that KV head's query
    grouped = query.reshape(batch, kv_heads, group * steps, dim)
    mask = key_mask[:, None]  # [B, 1, T, S]; with one token it broadcasts over the group's rows
    if steps > 1 and group > 1:
        mask = mask.repeat(1, 1, group, 1)  # row g * T + t sees what token t sees
    with sdpa_kernel(_NO_CUDNN):
        out = F.scaled_dot_product_attention(grouped, key, value, attn_mask=mask, scale=scaling)
    return out.reshape(batch, heads, steps, dim).transpose(1, 2).contiguous()


def register_block_attention() -> str:
    """Register ``lit_block`` with transformers (idempotent) and return its name."""
    AttentionInterface.register(ATTN_IMPLEMENTATION, block_or_causal_attention)
    AttentionMaskInterface.register(ATTN_IMPLEMENTATION, sdpa_mask)
    return ATTN_IMPLEMENTATION
