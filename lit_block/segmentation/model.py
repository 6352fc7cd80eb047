"""The lightweight segmenter: a small frozen sentence encoder for local context, a bidirectional GRU
over the document's candidate units for document context, and one boundary head conditioned on
the granularity level (coarse, middle, fine), so one model serves every granularity.

    unit texts --(MiniLM, first `encoder_layers` layers, mean-pooled)--> [U, 384]
             + layout features (line start, blank line before, heading-like, indent, length) [U, F]
             + level embedding
             --(2-layer BiGRU over the whole document)--> [U, 2h] --(linear)--> boundary logit per unit

By default the coarse level's cuts are placed by what carries over to kinds of text the segmenter never
saw: the middle level's boundary probability times the topic shift over 32 units around each unit
(``coarse_scoring="topic-shift"``; the coarse head's probabilities, reassigned in that order, keep their
count). ``"head"`` reads the coarse head alone, which learns the training categories' own coarse structure
and fails on new kinds: docs/segmenter_generalisation.md.

A 32k-token document is a thousand or two units: one encoder pass over their tokens (truncated
per unit, packed without padding) and one GRU pass, under a second on a 2-core CPU.
"""

from __future__ import annotations

import contextlib
import math
import pickle
import re
from array import array
from bisect import bisect_left

import torch
from torch import nn

from lit_block.errors import UsageError
from lit_block.model_sources import resolve_model_path
from lit_block.segmentation.document import Background, PieceTokens
from lit_block.segmentation.packed_bert import PackedBert, encoder_dtype_of, plain_tokenizer
from lit_block.segmentation.segmenter import COARSE_SCORING, LEVELS

LEVEL_INDEX = {name: i for i, name in enumerate(LEVELS)}  # the head's level embedding rows
SHIFT_UNITS = 32  # units on each side for the coarse rule's topic shift (picked on 11 leave-one-out folds)
HEADING = re.compile(r"^\s*(#+\s|=+|-{3,}|\*{3,}|[0-9]+(\.[0-9]+)*[.)]?\s|[A-Z][A-Z0-9 ,:;'-]{3,}$|\.S[HS]\b|=head|\[)")
N_LAYOUT = 9


def list_tensor(values: list, typecode: str = "q") -> torch.Tensor:
    """A flat list of Python numbers as a CPU tensor, through an ``array`` (``typecode`` ``q``: int64, ``f``: float32):
    about 7x faster than ``torch.tensor`` on a list, which reads it one object at a time (4.5 ms for 40k ids)."""
    if not values:
        return torch.empty(0, dtype=torch.int64 if typecode == "q" else torch.float32)
    return torch.frombuffer(array(typecode, values), dtype=torch.int64 if typecode == "q" else torch.float32)


def layout_features(unit_texts: list[str]) -> torch.Tensor:
    """``[U, N_LAYOUT]`` cheap structural cues of each unit (from its own text and the previous unit's end)."""
    rows = []
    previous = ""
    for text in unit_texts:
        first_line = text.split("\n", 1)[0]
        stripped = first_line.strip()
        rows.extend([
            float(previous == "" or previous.endswith("\n")),  # starts a line
            float(previous.endswith("\n\n") or previous.rstrip(" \t").endswith("\n\n")),  # after a blank line
            float(bool(HEADING.match(first_line))),  # looks like a heading / marker
            min(len(first_line) - len(first_line.lstrip()), 16) / 8.0,  # indentation
            math.log1p(len(text)) / 8.0,  # unit length
            math.log1p(len(stripped)) / 8.0,  # first-line length
            float(stripped[:1].isupper()) if stripped else 0.0,  # starts with a capital
            float(text.rstrip(" \t").endswith("\n")),  # ends a line
            float(stripped.endswith((":", "?"))),  # introduces what follows / a question
        ])
        previous = text
    return list_tensor(rows, "f").reshape(len(unit_texts), N_LAYOUT)


ROW_MULTIPLE = 256  # the last chunk's rows are padded to a multiple of this (see UnitEncoder.encode_ids)


class UnitEncoder(nn.Module):
    """A frozen sentence encoder truncated to its first ``layers`` layers; mean-pooled unit vectors.

    Each unit is encoded on its own, ``[CLS]`` + its first ``max_unit_tokens - 2`` tokens + ``[SEP]``,
    as in one tokenizer call per unit with truncation. A BERT folder with ``config.json``,
    float32 ``model.safetensors`` and ``tokenizer.json`` (the embedded all-MiniLM-L6-v2) runs as a
    :class:`PackedBert`: the same computation without importing transformers (seconds of start-up),
    reading only the layers kept, over units packed by length (no padding in the matrix products).
    Any other encoder runs through transformers' ``AutoModel``. :meth:`encode_spans` tokenizes a
    whole document once and slices each unit's tokens out of it.
    """

    def __init__(self, name_or_path: str = "all-minilm-l6-v2", layers: int = 3, max_unit_tokens: int = 32,
                 max_batch_tokens: int | None = None):
        super().__init__()
        path = resolve_model_path(name_or_path)
        self.max_unit_tokens, self.max_batch_tokens = max_unit_tokens, max_batch_tokens
        self._pending = None  # (text, its tokenization under way): see start_tokenizing
        tokenizer, self.specials = plain_tokenizer(path)  # specials: (first, last) ids around one sequence
        packed = PackedBert.load(path, layers) if self.specials is not None and max_unit_tokens >= 2 else None
        if packed is not None:
            self.tokenizer, self.encoder, self.dim = tokenizer, packed.eval().requires_grad_(False), packed.hidden
            return
        from transformers import AutoModel, AutoTokenizer

        self.specials = None
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        encoder = AutoModel.from_pretrained(path)
        encoder.encoder.layer = encoder.encoder.layer[:layers]  # BERT-style: keep the first layers
        self.encoder = encoder.eval().requires_grad_(False)
        self.dim = encoder.config.hidden_size

    def train(self, mode: bool = True):  # stays in eval mode: frozen, no dropout
        return super().train(False)

    @property
    def device(self) -> torch.device:
        return next(self.encoder.parameters()).device

    @torch.inference_mode()
    def forward(self, unit_texts: list[str], batch_size: int = 256) -> torch.Tensor:
        """``[U, dim]``: the vector of each text."""
        if self.specials is not None:
            content = self.max_unit_tokens - 2
            encodings = self.tokenizer.encode_batch(unit_texts, add_special_tokens=False)
            return self.encode_ids([e.ids[:content] for e in encodings])
        device, out = self.device, []
        for i in range(0, len(unit_texts), batch_size):
            enc = self.tokenizer(unit_texts[i : i + batch_size], padding=True, truncation=True,
                                 max_length=self.max_unit_tokens, return_tensors="pt").to(device)
            hidden = self.encoder(**enc).last_hidden_state
            mask = enc["attention_mask"][..., None].to(hidden.dtype)
            out.append((hidden * mask).sum(1) / mask.sum(1).clamp(min=1))
        return torch.cat(out) if out else torch.zeros(0, self.dim, device=device)

    def start_tokenizing(self, text: str) -> None:
        """Tokenize ``text`` in a background thread (the Rust tokenizer releases the GIL) for the next
        :meth:`encode_spans` of this same string: the caller meanwhile prepares the document."""
        if self.specials is not None:
            self._pending = (text, Background(lambda: self._tokenize(text)))

    def _tokenize(self, text: str) -> PieceTokens:
        return PieceTokens(self.tokenizer, text)  # in parallel pieces, without the GIL

    @torch.inference_mode()
    def encode_spans(self, text: str, spans: list[tuple[int, int]]) -> torch.Tensor:
        """``[U, dim]``: what ``self([text[a:b] for a, b in spans])`` gives, from one tokenization of ``text``.

        A unit takes the document's tokens that start inside it. Where a unit edge falls inside a word
        (a token crosses it, or the tokenizer's pre-tokenizer put the tokens on both sides in one word),
        the unit is tokenized on its own: its tokens would differ."""
        if self.specials is None:
            return self([text[a:b] for a, b in spans])
        pending, self._pending = self._pending, None
        tokens = pending[1].result() if pending and pending[0] is text else self._tokenize(text)
        ids, n, edges = tokens.ids, len(tokens.ids), {}

        def first_token(c: int) -> tuple[int, bool]:
            """The first token starting at or after ``c``, and whether ``c`` cuts a word (each edge once: a unit's
            end is the next one's start)."""
            if c not in edges:
                j = bisect_left(tokens.starts, c)
                edges[c] = j, 0 < j and (tokens.end(j - 1) > c or (j < n and tokens.same_word(j - 1, j)))
            return edges[c]

        content, units, alone = self.max_unit_tokens - 2, [], []
        for u, (a, b) in enumerate(spans):
            (i, cut_a), (j, cut_b) = first_token(a), first_token(b)
            if cut_a or cut_b:
                alone.append(u)
            units.append(ids[i : min(j, i + content)] if j > i else [])
        if alone:  # rare: a cut inside a word
            own = self.tokenizer.encode_batch([text[slice(*spans[u])] for u in alone], add_special_tokens=False)
            for u, e in zip(alone, own):
                units[u] = e.ids[:content]
        return self.encode_ids(units)

    @torch.inference_mode()
    def encode_ids(self, units: list[list[int]]) -> torch.Tensor:
        """``[U, dim]`` from each unit's token ids (truncated, without the special tokens; packed encoder only).

        Repeated units are encoded once. Units run sorted by length, in chunks of at most ``max_batch_tokens``
        tokens (default: 2048 on a CPU, measured fastest there: a chunk's activations stay small and their
        buffers are reused; 65536 on a GPU): the matrix products see a chunk's tokens packed without padding,
        attention runs per group of units of equal length."""
        first, last = self.specials
        device = self.device
        index: dict[tuple[int, ...], int] = {}
        unique = [index.setdefault(tuple(ids), len(index)) for ids in units]  # each unit's row among the distinct
        distinct = list(index)
        out = torch.empty(len(distinct), self.dim, device=device)
        limit = self.max_batch_tokens or (2048 if device.type == "cpu" else 65536)
        order = sorted(range(len(distinct)), key=lambda u: len(distinct[u]))
        start, workspace = 0, {}
        while start < len(order):
            end, tokens = start, 0
            while end < len(order) and (end == start or tokens + len(distinct[order[end]]) + 2 <= limit):
                tokens += len(distinct[order[end]]) + 2
                end += 1
            chunk = order[start:end]
            groups: list[list[int]] = []  # [n units, length] of each run of equal lengths
            for u in chunk:
                length = len(distinct[u]) + 2
                if groups and groups[-1][1] == length:
                    groups[-1][0] += 1
                else:
                    groups.append([1, length])
            flat = [t for u in chunk for t in (first, *distinct[u], last)]
            real = len(groups)
            # a filler unit brings the chunk to `limit` rows (the last chunk to a multiple of ROW_MULTIPLE): every full
            # chunk then has one shape, so a fresh process compiles each matrix product's kernel once (oneDNN's
            # bfloat16 kernels are built per shape) and the filler, attending only to itself, changes no real row
            pad = (-tokens) % ROW_MULTIPLE if end == len(order) else limit - tokens
            if 0 < pad <= self.encoder.position_embeddings.num_embeddings:
                groups.append([1, pad])
                flat += [last] * pad
            positions = torch.cat([torch.arange(length).repeat(count) for count, length in groups])
            hidden = self.encoder(list_tensor(flat).to(device), positions.to(device), groups, workspace)
            pooled, offset = [], 0
            for count, length in groups[:real]:  # mean over each unit's tokens (the filler left out), in float32
                pooled.append(hidden[offset : offset + count * length].view(count, length, -1).float().sum(1) / length)
                offset += count * length
            out[list_tensor(chunk).to(device)] = torch.cat(pooled)
            start = end
        return out[list_tensor(unique).to(device)] if len(distinct) < len(units) else out


def topic_shift(vectors: torch.Tensor, k: int) -> torch.Tensor:
    """``[..., U, dim] -> [..., U]``: 1 - the cosine similarity of the summed unit directions ``i-k .. i-1`` and
    ``i .. i+k-1`` for each unit ``i`` (TextTiling's cohesion on sentence vectors); 1 where a side is empty.
    All-zero rows (padding) add nothing to either sum."""
    direction = nn.functional.normalize(vectors.float(), dim=-1)
    U = direction.shape[-2]
    summed = torch.cat([torch.zeros_like(direction[..., :1, :]), direction.cumsum(-2)], dim=-2)  # [..., U+1, dim]
    i = torch.arange(U, device=vectors.device)
    before = summed[..., i, :] - summed[..., (i - k).clamp(min=0), :]
    after = summed[..., (i + k).clamp(max=U), :] - summed[..., i, :]
    return 1 - nn.functional.cosine_similarity(before, after, dim=-1)


def coarse_from_middle(middle: torch.Tensor, coarse: torch.Tensor, vectors: torch.Tensor,
                       lengths: torch.Tensor | None = None) -> torch.Tensor:
    """Coarse scores ``[B, U]``: the rule decides where, the coarse head how many.

    ``middle``, ``coarse`` ``[B, U]``: the head's middle and coarse probabilities; ``vectors [B, U, dim]`` the
    sentence vectors (zero-padded past ``lengths``). Units 1 .. length-1 are ranked by middle probability x topic
    shift over ``SHIFT_UNITS`` units (a likely middle boundary where the subject changes most), and take the coarse
    head's probabilities in that order: the highest goes to the top-ranked unit, and so on. The scores are the
    head's own values, so a threshold cuts as many blocks as the head would; only their places change. Unit 0
    and padding keep the head's values (never a boundary)."""
    U = middle.shape[-1]
    n = lengths.to(middle.device)[:, None] if lengths is not None else torch.full_like(middle[:, :1], U)
    units = torch.arange(U, device=middle.device)[None]
    inside = (units >= 1) & (units < n)
    rank_key = (middle * topic_shift(vectors, SHIFT_UNITS)).masked_fill(~inside, -math.inf)
    order = rank_key.sort(dim=-1, descending=True, stable=True).indices  # the rule's ranking; outside units last
    values = coarse.masked_fill(~inside, -math.inf).sort(-1, descending=True).values  # the head's, outside last
    return torch.where(inside, torch.empty_like(coarse).scatter_(-1, order, values), coarse)


class SegmenterHead(nn.Module):
    """Level-conditioned BiGRU over unit features -> one boundary logit per unit."""

    def __init__(self, in_dim: int, hidden: int = 128, layers: int = 2, levels: int = 3, dropout: float = 0.1):
        super().__init__()
        self.proj = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Dropout(dropout))
        self.level = nn.Embedding(levels, hidden)
        self.gru = nn.GRU(hidden, hidden, num_layers=layers, batch_first=True, bidirectional=True,
                          dropout=dropout if layers > 1 else 0.0)
        self.out = nn.Linear(2 * hidden, 1)

    def forward(self, features: torch.Tensor, level: int | torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """``features [B, U, in_dim]``, ``level`` int or ``[B]``, ``lengths [B]`` (real units per row)
        -> logits ``[B, U]`` (boundary before each unit; padded units' logits are unspecified)."""
        B, U, _ = features.shape
        level = torch.as_tensor(level, device=features.device).expand(B)
        x = self.proj(features) + self.level(level)[:, None, :]
        if lengths is not None:  # packed: the backward direction must not read padding first
            x = nn.utils.rnn.pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
            y = nn.utils.rnn.pad_packed_sequence(self.gru(x)[0], batch_first=True, total_length=U)[0]
        else:
            y = self.gru(x)[0]
        return self.out(y).squeeze(-1)


NET_ARGS = ("encoder", "encoder_layers", "max_unit_tokens", "hidden", "gru_layers", "dropout", "coarse_scoring")


class SegmenterNet(nn.Module):
    """Encoder + head: everything inference needs, loadable from a checkpoint without Lightning."""

    def __init__(self, encoder: str = "all-minilm-l6-v2", encoder_layers: int = 2, max_unit_tokens: int = 24,
                 hidden: int = 128, gru_layers: int = 2, dropout: float = 0.1, levels: int = 3,
                 coarse_scoring: str = "topic-shift"):
        super().__init__()
        if coarse_scoring not in COARSE_SCORING:
            raise UsageError(f"coarse_scoring must be one of {', '.join(COARSE_SCORING)}, got {coarse_scoring!r}")
        self.coarse_scoring = coarse_scoring
        self.encoder = UnitEncoder(encoder, encoder_layers, max_unit_tokens)
        self.head = SegmenterHead(self.encoder.dim + N_LAYOUT, hidden, gru_layers, levels, dropout)

    @torch.inference_mode()
    def unit_features(self, unit_texts: list[str], document: str | None = None,
                      spans: list[tuple[int, int]] | None = None) -> torch.Tensor:
        """``[U, encoder_dim + N_LAYOUT]``: sentence vectors and layout cues of each unit.

        Given the ``document`` the units were cut from and their character ``spans`` in it
        (``unit_texts[i] == document[a:b]``), the encoder tokenizes the document once instead of each unit."""
        device = next(self.head.parameters()).device
        vectors = self.encoder.encode_spans(document, spans) if document is not None else self.encoder(unit_texts)
        return torch.cat([vectors.float(), layout_features(unit_texts).to(device)], dim=-1)

    def all_level_logits(self, features: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """``features [B, U, F]`` -> logits ``[L, B, U]`` of every level, from one head call on a batch of ``L * B``
        rows: the GRU's sequential steps run once for all levels, not once per level (a whole fit: 1.5x on 2 cores)."""
        B, levels = features.shape[0], self.head.level.num_embeddings
        rows = torch.arange(levels, device=features.device).repeat_interleave(B)  # level of each stacked row
        stacked_lengths = None if lengths is None else lengths.repeat(levels)
        return self.head(features.repeat(levels, 1, 1), rows, stacked_lengths).reshape(levels, B, -1)

    def scores_from_logits(self, logits: torch.Tensor, features: torch.Tensor,
                           lengths: torch.Tensor | None = None) -> torch.Tensor:
        """``all_level_logits`` -> ``[L, B, U]`` boundary scores as ``level_probabilities`` gives them."""
        scores = torch.sigmoid(logits)
        if self.coarse_scoring == "topic-shift":
            c, m = LEVEL_INDEX["coarse"], LEVEL_INDEX["middle"]
            coarse = coarse_from_middle(scores[m], scores[c], features[..., : self.encoder.dim], lengths)
            scores = torch.cat([scores[:c], coarse[None], scores[c + 1:]])
        return scores

    def level_probabilities(self, features: torch.Tensor, level: int, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """``features [B, U, F]`` (padded past ``lengths``) -> ``[B, U]`` boundary scores in [0, 1] of ``level``
        (0 coarse, 1 middle, 2 fine): the head's probability, or for coarse the ``coarse_scoring`` rule."""
        if level == LEVEL_INDEX["coarse"] and self.coarse_scoring == "topic-shift":
            # the coarse and middle heads in one batch: the GRU's steps run once for both (3.2 ms a pass on a GPU)
            B = features.shape[0]
            levels = torch.tensor([level] * B + [LEVEL_INDEX["middle"]] * B, device=features.device)
            both_lengths = None if lengths is None else lengths.repeat(2)
            both = torch.sigmoid(self.head(features.repeat(2, 1, 1), levels, both_lengths))
            return coarse_from_middle(both[B:], both[:B], features[..., : self.encoder.dim], lengths)
        return torch.sigmoid(self.head(features, level, lengths))

    @torch.inference_mode()
    def boundary_probabilities(self, features: torch.Tensor, level: int) -> torch.Tensor:
        """``[U]`` probability that a block starts at each unit (the first unit's value is meaningless).

        On a CPU the GRU runs on one thread: its thousands of steps are tiny products that more threads
        only slow down (each step waits for every thread, and for seconds when other work holds a core)."""
        self.eval()
        with _threads(1) if features.device.type == "cpu" else contextlib.nullcontext():
            return self.level_probabilities(features[None], level)[0].cpu()

    @classmethod
    def from_checkpoint(cls, path: str, map_location: str = "cpu", encoder: str | None = None,
                        coarse_scoring: str | None = None, encoder_dtype: str = "float32") -> SegmenterNet:
        """Rebuild from a ``SegmenterModule`` checkpoint. The frozen encoder is loaded by the name the
        checkpoint recorded, or from ``encoder`` (a folder with the same weights, e.g. on a machine
        without the embedded package); ``coarse_scoring`` overrides the recorded rule (older checkpoints
        have none: the default applies, it needs no trained weights); ``encoder_dtype`` is the frozen encoder's
        (:func:`~lit_block.segmentation.packed_bert.encoder_dtype_of`; the head stays float32). Loaded weights-only: a checkpoint is never allowed to run
        code."""
        ckpt = _load_checkpoint(path, map_location)
        hparams, state = ckpt.get("hyper_parameters"), ckpt.get("state_dict")
        if not isinstance(hparams, dict) or not isinstance(state, dict):
            raise UsageError(f"{path} is not a lit-block segmenter checkpoint (no hyper_parameters / state_dict)")
        args = {k: v for k, v in hparams.items() if k in NET_ARGS}
        overrides = {k: v for k, v in (("encoder", encoder), ("coarse_scoring", coarse_scoring)) if v}
        net = cls(**{**args, **overrides})
        head = {k.removeprefix("net.head."): v for k, v in state.items() if k.startswith("net.head.")}
        if not head:
            raise UsageError(f"{path} holds no segmenter head weights (keys net.head.*)")
        try:
            net.head.load_state_dict(head)
        except RuntimeError as err:  # missing / unexpected keys or shapes that do not match its hyper_parameters
            raise UsageError(f"{path}: the segmenter head weights do not fit its hyper_parameters: {_flat(err)}") from err
        net.encoder.encoder.to(encoder_dtype_of(encoder_dtype, map_location))
        return net.eval()



@contextlib.contextmanager
def _threads(n: int):
    """torch's intra-op threads set to ``n`` inside the block (process-wide), restored after it."""
    before = torch.get_num_threads()
    if n >= before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _load_checkpoint(path: str, map_location: str = "cpu") -> dict:
    """A checkpoint's top-level dict, loaded weights-only (tensors and plain values; no code runs).

    Anything that is not such a file is a :class:`UsageError` naming ``path``; a missing or unreadable
    file stays an ``OSError`` (its message names the path).
    """
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except OSError:  # missing file, a folder, no permission: already an expected error naming the path
        raise
    except pickle.UnpicklingError as err:  # weights-only refusal, or bytes that are no pickle at all
        raise UsageError(f"{path} is not a lit-block segmenter checkpoint, or holds objects that weights-only "
                         f"loading refuses ({_refusal_reason(err)})") from err
    except Exception as err:  # text or a damaged file: the unpickler fails anywhere (KeyError, EOFError, RuntimeError ...)
        detail = f"{type(err).__name__}: {_flat(err)[:200]}".rstrip(": ")  # an empty file's EOFError has no message
        raise UsageError(f"{path} is not a lit-block segmenter checkpoint ({detail})") from err
    if not isinstance(ckpt, dict):
        raise UsageError(f"{path} is not a lit-block segmenter checkpoint (it holds a {type(ckpt).__name__}, not a dict)")
    return ckpt


def _refusal_reason(err: pickle.UnpicklingError) -> str:
    """The specific part of torch's weights-only message (e.g. the refused global), without its boilerplate."""
    paragraphs = [p.strip() for p in str(err).split("\n\n") if p.strip()]
    # torch's message: a generic first paragraph, the reason, then a pointer to the docs
    specific = [p for p in paragraphs[1:] if not p.startswith("Check the documentation")]
    return _flat(" ".join(specific) if specific else err)[:300]


def _flat(message) -> str:
    """A message (or an error's) on one line."""
    return " ".join(str(message).split())
