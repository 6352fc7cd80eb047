"""Source adapters, one module per source. Each module exports ``SOURCES: list[Source]``."""

from __future__ import annotations

import importlib

from datamodules.corpus.schema import Source

# one entry per adapter module; a module may define several sources (e.g. two dictionaries)
ADAPTER_MODULES = (
    "kjv", "dictd", "fortunes", "chatterbot", "manpages", "rst_docs", "pod", "asciidoc", "licenses", "email", "python_code",
)


def all_sources() -> list[Source]:
    """Every source, in a fixed order (the build is deterministic)."""
    sources: list[Source] = []
    for name in ADAPTER_MODULES:
        sources.extend(importlib.import_module(f"datamodules.corpus.sources.{name}").SOURCES)
    return sources
