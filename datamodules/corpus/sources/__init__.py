"""Source adapters, one module per source. Each module exports ``SOURCES: list[Source]``."""

from __future__ import annotations

import importlib

from datamodules.corpus.schema import Source

# one entry per adapter module; a module may define several sources (e.g. two dictionaries)
ADAPTER_MODULES = (
    "kjv", "dictd", "fortunes", "chatterbot", "manpages", "rst_docs", "pod", "asciidoc", "licenses", "email", "python_code",
    "r_vignettes", "emacs_news", "moby_dick",
)


def _sources_of(modules: tuple[str, ...]) -> list[Source]:
    return [s for name in modules for s in importlib.import_module(f"datamodules.corpus.sources.{name}").SOURCES]


def all_sources() -> list[Source]:
    """Every training-corpus source, in a fixed order (the build is deterministic)."""
    return _sources_of(ADAPTER_MODULES)


# Held-out families: text kinds the training corpus lacks, from packages it does not use, for evaluation only. They are
# never in all_sources(), so never in the default build (the training corpus); only
# `lit-block data build --heldout` builds them, every document in the test split.
HELDOUT_MODULES = ("drama", "poetry", "history_books")


def heldout_sources() -> list[Source]:
    """The held-out families (drama, poetry, history-book), in a fixed order; none of them is in all_sources()."""
    return _sources_of(HELDOUT_MODULES)
