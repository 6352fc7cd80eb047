"""lit-block: block attention for causal LMs, as reproducible Lightning experiments.

The public names below load on first use (PEP 562), so the ``lit-block`` command starts fast.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "GLOBAL_BLOCK": "lit_block.layout",
    "BlockLayout": "lit_block.layout",
    "layout_from_tokens": "lit_block.layout",
    "pack_sample": "lit_block.layout",
    "pack_tokens": "lit_block.layout",
    "BlockAttentionLM": "lit_block.model",
}
__all__ = list(_EXPORTS)
__version__ = "0.1.0"


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'lit_block' has no attribute {name!r}")
