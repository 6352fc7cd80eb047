"""A text as a segmenter sees it: characters, tokens, candidate cut points, and blocks."""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass

from lit_block.candidates import candidate_starts


def encode(tokenizer, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids and character spans; ``tokenizer`` is a ``tokenizers.Tokenizer`` or a transformers tokenizer."""
    if hasattr(tokenizer, "encode_batch"):  # the Rust tokenizer itself: no transformers import needed
        enc = tokenizer.encode(text, add_special_tokens=False)
        return enc.ids, enc.offsets
    enc = tokenizer(text, return_offsets_mapping=True, add_special_tokens=False)
    return enc["input_ids"], enc["offset_mapping"]


def token_offsets(tokenizer, text: str) -> list[tuple[int, int]]:
    """Character span of each token."""
    return encode(tokenizer, text)[1]


def load_tokenizer(name_or_path: str):
    """The fastest tokenizer that counts tokens for ``name_or_path``: its ``tokenizer.json`` when there is one."""
    from pathlib import Path

    from lit_block.model_sources import not_found, resolve_model_path

    path = Path(resolve_model_path(name_or_path))
    if (path / "tokenizer.json").is_file():
        from tokenizers import Tokenizer

        return Tokenizer.from_file(str(path / "tokenizer.json"))
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path))
    except OSError as err:  # nothing local by that name: transformers would talk about reaching the hub
        if path.exists():
            raise
        raise not_found(name_or_path, err) from err


@dataclass(frozen=True)
class Block:
    start: int  # character offset, inclusive
    end: int  # character offset, exclusive
    tokens: int
    text: str


class SegmentableText:
    """``text`` with its token start offsets (one tokenizer call) and its candidate cut points.

    Positions used by planners and metrics are token indices; ``char_of`` maps a cut back to a
    character offset (the candidate's own offset when the cut came from a candidate).
    """

    def __init__(self, text: str, tokenizer, splitter: str = "sentences"):
        self.text = text
        self.token_ids, offsets = encode(tokenizer, text)
        self.token_starts = [s for s, _ in offsets]
        self.n_tokens = len(self.token_starts)
        # candidate char offsets, and the token position each maps to (first token starting at or after it)
        self.candidate_chars = candidate_starts(text, splitter)
        self._char_at: dict[int, int] = {}
        for c in self.candidate_chars:
            self._char_at.setdefault(self.token_index(c), c)

    def token_index(self, char: int) -> int:
        return bisect_left(self.token_starts, char)

    def char_of(self, token: int) -> int:
        if token in self._char_at:
            return self._char_at[token]
        return self.token_starts[token] if token < self.n_tokens else len(self.text)

    @property
    def candidate_tokens(self) -> list[int]:
        """Token positions of the candidates (0 excluded, duplicates merged)."""
        return sorted(p for p in self._char_at if 0 < p < self.n_tokens)

    def blocks(self, cuts: list[int]) -> list[Block]:
        """Blocks covering the text exactly, in order, for block starts ``cuts`` (token positions)."""
        edges = [0, *sorted(set(cuts)), self.n_tokens]
        chars = [0, *(self.char_of(c) for c in edges[1:-1]), len(self.text)]
        return [Block(a, b, t1 - t0, self.text[a:b]) for a, b, t0, t1 in zip(chars, chars[1:], edges, edges[1:])]
