"""The lightweight segmenter: a small frozen sentence encoder for local context, a bidirectional GRU
over the document's candidate units for document context, and one boundary head conditioned on
the granularity level (coarse, middle, fine), so one model serves every granularity.

    unit texts --(MiniLM, first `encoder_layers` layers, mean-pooled)--> [U, 384]
             + layout features (line start, blank line before, heading-like, indent, length) [U, F]
             + level embedding
             --(2-layer BiGRU over the whole document)--> [U, 2h] --(linear)--> boundary logit per unit

A 32k-token document is a few thousand units: one encoder pass over its tokens (truncated per
unit) and one GRU pass, a few seconds on a 2-core CPU.
"""

from __future__ import annotations

import math
import pickle
import re

import torch
from torch import nn

from lit_block.errors import UsageError
from lit_block.model_sources import resolve_model_path

HEADING = re.compile(r"^\s*(#+\s|=+|-{3,}|\*{3,}|[0-9]+(\.[0-9]+)*[.)]?\s|[A-Z][A-Z0-9 ,:;'-]{3,}$|\.S[HS]\b|=head|\[)")
N_LAYOUT = 9


def layout_features(unit_texts: list[str]) -> torch.Tensor:
    """``[U, N_LAYOUT]`` cheap structural cues of each unit (from its own text and the previous unit's end)."""
    rows = []
    previous = ""
    for text in unit_texts:
        first_line = text.split("\n", 1)[0]
        stripped = first_line.strip()
        rows.append([
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
    return torch.tensor(rows, dtype=torch.float32).reshape(len(unit_texts), N_LAYOUT)


class UnitEncoder(nn.Module):
    """A frozen sentence encoder truncated to its first ``layers`` layers; mean-pooled unit vectors."""

    def __init__(self, name_or_path: str = "all-minilm-l6-v2", layers: int = 3, max_unit_tokens: int = 32):
        super().__init__()
        from transformers import AutoModel, AutoTokenizer

        path = resolve_model_path(name_or_path)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        encoder = AutoModel.from_pretrained(path)
        encoder.encoder.layer = encoder.encoder.layer[:layers]  # BERT-style: keep the first layers
        self.encoder = encoder.eval().requires_grad_(False)
        self.max_unit_tokens = max_unit_tokens
        self.dim = encoder.config.hidden_size

    def train(self, mode: bool = True):  # stays in eval mode: frozen, no dropout
        return super().train(False)

    @torch.inference_mode()
    def forward(self, unit_texts: list[str], batch_size: int = 256) -> torch.Tensor:
        device = next(self.encoder.parameters()).device
        out = []
        for i in range(0, len(unit_texts), batch_size):
            enc = self.tokenizer(unit_texts[i : i + batch_size], padding=True, truncation=True,
                                 max_length=self.max_unit_tokens, return_tensors="pt").to(device)
            hidden = self.encoder(**enc).last_hidden_state
            mask = enc["attention_mask"][..., None].to(hidden.dtype)
            out.append((hidden * mask).sum(1) / mask.sum(1).clamp(min=1))
        return torch.cat(out) if out else torch.zeros(0, self.dim, device=device)


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


NET_ARGS = ("encoder", "encoder_layers", "max_unit_tokens", "hidden", "gru_layers", "dropout")


class SegmenterNet(nn.Module):
    """Encoder + head: everything inference needs, loadable from a checkpoint without Lightning."""

    def __init__(self, encoder: str = "all-minilm-l6-v2", encoder_layers: int = 2, max_unit_tokens: int = 24,
                 hidden: int = 128, gru_layers: int = 2, dropout: float = 0.1, levels: int = 3):
        super().__init__()
        self.encoder = UnitEncoder(encoder, encoder_layers, max_unit_tokens)
        self.head = SegmenterHead(self.encoder.dim + N_LAYOUT, hidden, gru_layers, levels, dropout)

    @torch.inference_mode()
    def unit_features(self, unit_texts: list[str]) -> torch.Tensor:
        """``[U, encoder_dim + N_LAYOUT]``: sentence vectors and layout cues of each unit."""
        device = next(self.head.parameters()).device
        return torch.cat([self.encoder(unit_texts).float(), layout_features(unit_texts).to(device)], dim=-1)

    @torch.inference_mode()
    def boundary_probabilities(self, features: torch.Tensor, level: int) -> torch.Tensor:
        """``[U]`` probability that a block starts at each unit (the first unit's value is meaningless)."""
        self.eval()
        return torch.sigmoid(self.head(features[None], level))[0].cpu()

    @classmethod
    def from_checkpoint(cls, path: str, map_location: str = "cpu", encoder: str | None = None) -> SegmenterNet:
        """Rebuild from a ``SegmenterModule`` checkpoint. The frozen encoder is loaded by the name the
        checkpoint recorded, or from ``encoder`` (a folder with the same weights, e.g. on a machine
        without the embedded package). Loaded weights-only: a checkpoint is never allowed to run code."""
        ckpt = _load_checkpoint(path, map_location)
        hparams, state = ckpt.get("hyper_parameters"), ckpt.get("state_dict")
        if not isinstance(hparams, dict) or not isinstance(state, dict):
            raise UsageError(f"{path} is not a lit-block segmenter checkpoint (no hyper_parameters / state_dict)")
        args = {k: v for k, v in hparams.items() if k in NET_ARGS}
        net = cls(**{**args, **({"encoder": encoder} if encoder else {})})
        head = {k.removeprefix("net.head."): v for k, v in state.items() if k.startswith("net.head.")}
        if not head:
            raise UsageError(f"{path} holds no segmenter head weights (keys net.head.*)")
        try:
            net.head.load_state_dict(head)
        except RuntimeError as err:  # missing / unexpected keys or shapes that do not match its hyper_parameters
            raise UsageError(f"{path}: the segmenter head weights do not fit its hyper_parameters: {_flat(err)}") from err
        return net.eval()


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
