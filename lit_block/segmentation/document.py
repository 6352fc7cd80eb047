"""A text as a segmenter sees it: characters, tokens, candidate cut points, and blocks."""

from __future__ import annotations

import re
import threading
from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from functools import cached_property

from lit_block.candidates import candidate_starts


PIECE_CHARS = 16_384  # a long text is encoded in pieces of about this many characters, in parallel
# a cut right before one space or newline between two non-space characters: no pre-token crosses it for the
# pre-tokenizers below. Whitespace ends BERT's words; GPT-2's byte-level pattern ends every match at the non-space
# character and starts the next one at that whitespace (" word", or a newline's own), so the pieces' tokens are
# the whole text's
_PIECE_CUT = re.compile(r"(?<=\S)[ \n](?=\S)")


def _cuts_are_exact(tokenizer) -> bool:
    """Whether ``tokenizer`` (a ``tokenizers.Tokenizer``) encodes text cut at ``_PIECE_CUT`` as the whole text."""
    pre, norm = type(tokenizer.pre_tokenizer).__name__, type(tokenizer.normalizer).__name__
    byte_level = pre == "ByteLevel" and not tokenizer.pre_tokenizer.add_prefix_space  # a prefix space per piece
    return (byte_level or pre in ("BertPreTokenizer", "Whitespace", "WhitespaceSplit")) \
        and norm in ("NoneType", "BertNormalizer", "NFC", "NFKC", "Lowercase") \
        and tokenizer.padding is None and tokenizer.truncation is None  # pieces padded or cut alone would differ


def encode_pieces(tokenizer, text: str, piece_chars: int | None = None) -> list[tuple[int, object]]:
    """``(start, Encoding)`` of consecutive pieces of ``text`` that together tokenize exactly as the whole
    (``tokenizer``: a ``tokenizers.Tokenizer``). One ``encode_batch`` call: the pieces run on the tokenizer's
    threads, without the GIL. A text that cannot be cut exactly is one piece."""
    starts, piece_chars = [0], piece_chars or PIECE_CHARS
    if len(text) > piece_chars and _cuts_are_exact(tokenizer):
        while (cut := _PIECE_CUT.search(text, starts[-1] + piece_chars)) is not None:
            starts.append(cut.start())
    ends = starts[1:] + [len(text)]
    return list(zip(starts, tokenizer.encode_batch([text[a:b] for a, b in zip(starts, ends)], add_special_tokens=False)))


class PieceTokens:
    """The tokens of ``text`` encoded by :func:`encode_pieces` (``tokenizer``: a ``tokenizers.Tokenizer``): ids and
    start offsets as lists; a token's end and word asked of its piece's encoding one at a time (a 32k-token text's
    span tuples and word ids as Python lists cost more time, holding the GIL, than the pieces' tokenization takes on a
    GPU machine's cores)."""

    def __init__(self, tokenizer, text: str):
        self.pieces = encode_pieces(tokenizer, text)
        self.ids, self.starts, self.first = [], [], []  # first: the index of each piece's first token
        for start, enc in self.pieces:
            self.first.append(len(self.ids))
            self.ids += enc.ids
            self.starts += [a for a, _ in enc.offsets] if start == 0 else [start + a for a, _ in enc.offsets]

    def _local(self, j: int) -> tuple[int, int]:
        piece = bisect_right(self.first, j) - 1
        return piece, j - self.first[piece]

    def end(self, j: int) -> int:
        """Character offset where token ``j`` ends."""
        piece, local = self._local(j)
        start, enc = self.pieces[piece]
        return start + enc.token_to_chars(local)[1]

    def same_word(self, i: int, j: int) -> bool:
        """Whether the pre-tokenizer put tokens ``i`` and ``j`` in one word (pieces are cut between words)."""
        (p, a), (q, b) = self._local(i), self._local(j)
        if p != q:
            return False
        word = self.pieces[p][1].token_to_word(a)
        return word is not None and word == self.pieces[p][1].token_to_word(b)


def encode(tokenizer, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids and character spans; ``tokenizer`` is a ``tokenizers.Tokenizer`` or a transformers tokenizer."""
    if hasattr(tokenizer, "encode_batch"):  # the Rust tokenizer itself, in parallel pieces: no transformers import
        ids, offsets = [], []
        for start, enc in encode_pieces(tokenizer, text):
            ids += enc.ids
            offsets += [(start + a, start + b) for a, b in enc.offsets]
        return ids, offsets
    enc = tokenizer(text, return_offsets_mapping=True, add_special_tokens=False)
    return enc["input_ids"], enc["offset_mapping"]


def encode_starts(tokenizer, text: str) -> tuple[list[int], list[int]]:
    """Token ids and the character offset where each token starts (``encode`` without the span tuples)."""
    if hasattr(tokenizer, "encode_batch"):
        tokens = PieceTokens(tokenizer, text)
        return tokens.ids, tokens.starts
    ids, offsets = encode(tokenizer, text)
    return ids, [s for s, _ in offsets]


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


class _Done:
    def __init__(self, value):
        self.value = value

    def result(self):
        return self.value


class Background:
    """``fn()`` running in a daemon thread; :meth:`result` waits for it and raises what it raised."""

    def __init__(self, fn):
        self._fn, self._done, self._value, self._error = fn, False, None, None
        self._thread = threading.Thread(target=self._run, name="lit-block-tokenize", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._value = self._fn()
        except BaseException as err:  # handed to the caller of result()
            self._error = err
        self._done = True

    def result(self):
        self._thread.join()
        if not self._done:  # the thread was lost (a fork while it ran): do the work here
            self._run()
        if self._error is not None:
            raise self._error
        return self._value


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

    A long text is tokenized in a background thread while the candidates are searched (the Rust
    tokenizer releases the GIL, the sentence splitter is Python); the token attributes wait for it on
    first use.
    """

    BACKGROUND_CHARS = 20_000  # shorter texts tokenize in a few milliseconds: no thread

    def __init__(self, text: str, tokenizer, splitter: str = "sentences"):
        self.text = text

        def tokenize() -> tuple[list[int], list[int]]:
            return encode_starts(tokenizer, text)

        self._tokens = Background(tokenize) if len(text) >= self.BACKGROUND_CHARS else _Done(tokenize())
        self.candidate_chars = candidate_starts(text, splitter)

    @cached_property
    def token_ids(self) -> list[int]:
        return self._tokens.result()[0]

    @cached_property
    def token_starts(self) -> list[int]:
        """Character offset where each token starts."""
        return self._tokens.result()[1]

    @cached_property
    def n_tokens(self) -> int:
        return len(self.token_starts)

    @cached_property
    def _char_at(self) -> dict[int, int]:
        """Token position -> the first candidate char offset that maps to it (first token starting at or after it)."""
        char_at: dict[int, int] = {}
        for c in self.candidate_chars:
            char_at.setdefault(self.token_index(c), c)
        return char_at

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
