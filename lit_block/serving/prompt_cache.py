"""A transformers KV cache with room reserved up front, so appending never copies what is cached.

transformers' ``DynamicLayer`` concatenates on every update, which copies the whole cache each time:
at 32k cached positions that is gigabytes per step for an 8B model. ``PreallocatedLayer`` holds a
buffer of ``capacity`` positions; an update writes the new keys and values in place and hands the
attention a view of the filled part.
"""

from __future__ import annotations

import functools
import inspect

import torch
from transformers.cache_utils import Cache, DynamicLayer


class PreallocatedLayer(DynamicLayer):
    """One decoder layer's cache: ``[batch, kv_heads, capacity, head_dim]`` buffers, filled up to ``length``."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, length: int = 0):
        super().__init__()
        self.buffer_keys, self.buffer_values = keys, values
        self.length = length
        self.dtype, self.device = keys.dtype, keys.device
        self.is_initialized = True
        self._expose()

    @property
    def capacity(self) -> int:
        return self.buffer_keys.shape[-2]

    def _expose(self) -> None:
        self.keys = self.buffer_keys[..., : self.length, :]
        self.values = self.buffer_values[..., : self.length, :]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        n = key_states.shape[-2]
        if self.length + n > self.capacity:
            raise ValueError(f"the prompt cache holds {self.capacity} positions; {self.length} used, {n} more asked")
        self.buffer_keys[..., self.length : self.length + n, :] = key_states
        self.buffer_values[..., self.length : self.length + n, :] = value_states
        self.length += n
        self._expose()
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length


class SlabLayer(DynamicLayer):
    """One decoder layer of a decode slab (``lit_block.serving.decode_batch``): ``[rows, kv_heads, capacity,
    head_dim]`` buffers in which row ``r``'s new token ``t`` writes its key at column ``columns[r, t]`` (a device
    tensor), and the attention sees the first ``width`` columns (under the step's key mask). With ``width`` the
    capacity, nothing a decoding step passes is a Python number that changes: one CUDA graph replays every step."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, columns: torch.Tensor, width: int):
        super().__init__()
        self.buffer_keys, self.buffer_values, self.columns, self.width = keys, values, columns, width
        self.keys, self.values = keys[:, :, :width], values[:, :, :width]
        self.dtype, self.device = keys.dtype, keys.device
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        rows, tokens = self.columns.shape
        index = self.columns.view(rows, 1, tokens, 1).expand_as(key_states)  # [rows, kv_heads, tokens, head_dim]
        self.buffer_keys.scatter_(2, index, key_states)
        self.buffer_values.scatter_(2, index, value_states)
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.width - 1  # transformers' masks then span the width (the attention reads the key mask instead)


def slab_cache(keys: torch.Tensor, values: torch.Tensor, columns: torch.Tensor, width: int) -> Cache:
    """A cache over a slab's ``[layers, rows, kv_heads, capacity, head_dim]`` buffers, ``columns [rows, tokens]``
    (see ``SlabLayer``)."""
    return Cache(layers=[SlabLayer(k, v, columns, width) for k, v in zip(keys, values)])


class PositionMajorCache(Cache):
    """A preallocated cache over two ``[capacity, layers, kv_heads, head_dim]`` buffers (keys, values), whose layers
    are views of them: an assembled prompt (blocks placed at their offsets, ``BlockKVStore.assemble``) is one tensor,
    so it moves into a decode slab's row in one copy instead of one per layer."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, length: int):
        super().__init__(layers=[PreallocatedLayer(keys[:, i].permute(1, 0, 2)[None], values[:, i].permute(1, 0, 2)[None],
                                                   length) for i in range(keys.shape[1])])
        self.keys_buffer, self.values_buffer = keys, values


def cache_keyword(module: torch.nn.Module, cache: Cache) -> dict[str, Cache]:
    """The keyword argument that hands ``cache`` to a transformers model's forward: ``cache`` where the forward takes
    it (by transformers 5.24; 5.17 knows only the old name), ``past_key_values`` otherwise (deprecated, removed in 5.40)."""
    return {"cache" if _takes_cache(type(module)) else "past_key_values": cache}


@functools.cache
def _takes_cache(cls: type) -> bool:
    return "cache" in inspect.signature(cls.forward).parameters  # follows the deprecation wrapper to the real forward
