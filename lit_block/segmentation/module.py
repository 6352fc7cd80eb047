"""``SegmenterModule``: trains the level-conditioned segmenter on every level's labels at once.

Batches come from ``datamodules.SemanticSegDataModule``: windows of candidate units with gold
labels ``[B, U, 3]``. The sentence encoder is frozen, so unit vectors are computed once per window
and cached in memory for later epochs (and on disk under ``feature_cache_dir``, shared by every run
with the same encoder settings: a leave-one-category-out evaluation encodes the corpus once); only
the head (about 0.5M parameters) trains. The frozen encoder is not stored in checkpoints: it is
reloaded from its name, like a teacher.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F

from lit_block.segmentation.metrics import SegmentationMetrics
from lit_block.segmentation.model import NET_ARGS, SegmenterNet
from lit_block.segmentation.segmenter import LEVELS

LEVEL_NAMES = LEVELS  # coarse, middle, fine: the head's level rows, in the order every tool uses
FEATURES_VERSION = 1  # bump when SegmenterNet.unit_features computes differently: stored features then miss


class SegmenterModule(L.LightningModule):
    strict_loading = False  # checkpoints leave out the frozen encoder

    def __init__(
        self,
        encoder: str = "all-minilm-l6-v2",
        encoder_layers: int = 2,
        max_unit_tokens: int = 24,
        hidden: int = 128,
        gru_layers: int = 2,
        dropout: float = 0.1,
        learning_rate: float = 2e-3,
        weight_decay: float = 0.01,
        pos_weight: float = 2.0,
        coarse_scoring: str = "topic-shift",
        cache_unit_vectors: bool = True,
        feature_cache_dir: str | None = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.net: SegmenterNet | None = None
        self._cache: dict[tuple, torch.Tensor] = {}
        self.val_metrics = torch.nn.ModuleList([SegmentationMetrics(tolerance=1) for _ in LEVEL_NAMES])
        self.configure_model()

    def configure_model(self) -> None:
        if self.net is None:
            self.net = SegmenterNet(**{k: v for k, v in self.hparams.items() if k in NET_ARGS}, levels=len(LEVEL_NAMES))

    # ---------------------------------------------------------------- features

    def unit_features(self, unit_texts: list[str], key: tuple | None = None) -> torch.Tensor:
        """``[U, encoder_dim + N_LAYOUT]`` for one window or document (cached by ``key`` when given)."""
        if key is not None and key in self._cache:
            return self._cache[key].to(self.device)
        stored = self._stored_features_path(unit_texts)
        if stored is not None and stored.is_file():
            vectors = torch.load(stored, weights_only=True).to(self.device)
        else:
            vectors = self.net.unit_features(unit_texts).clone()  # a normal tensor: the head trains on it
            if stored is not None:  # written whole, then renamed: a killed run leaves no half file
                stored.parent.mkdir(parents=True, exist_ok=True)
                partial = stored.with_suffix(f".{os.getpid()}.partial")
                torch.save(vectors.cpu(), partial)
                partial.replace(stored)
        if key is not None and self.hparams.cache_unit_vectors:
            self._cache[key] = vectors.cpu()
        return vectors

    def _stored_features_path(self, unit_texts: list[str]) -> Path | None:
        """Where ``feature_cache_dir`` keeps these units' features: named by the encoder settings and the texts."""
        if not self.hparams.feature_cache_dir:
            return None
        h = self.hparams
        digest = hashlib.sha256(f"{h.encoder}|{h.encoder_layers}|{h.max_unit_tokens}|{FEATURES_VERSION}".encode())
        for text in unit_texts:
            digest.update(text.encode() + b"\x00")
        name = digest.hexdigest()
        return Path(h.feature_cache_dir) / name[:2] / f"{name}.pt"

    def _batch_features(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        feats = [self.unit_features(texts, (doc, starts[0])) for doc, texts, starts
                 in zip(batch["doc_id"], batch["unit_texts"], batch["unit_starts"])]
        lengths = torch.tensor([len(f) for f in feats])
        return torch.nn.utils.rnn.pad_sequence(feats, batch_first=True), lengths

    # ---------------------------------------------------------------- steps

    def _loss(self, batch: dict, logits: torch.Tensor) -> torch.Tensor:
        """Mean over levels of the weighted BCE of ``logits [L, B, U]`` (``SegmenterNet.all_level_logits``) against
        the batch's labels ``[B, U, L]``, on labelled units only."""
        mask = batch["label_mask"]
        pos_weight = torch.tensor(self.hparams.pos_weight, device=self.device)
        total = 0.0
        for level in range(len(LEVEL_NAMES)):
            target = batch["labels"][..., level].float()
            total = total + F.binary_cross_entropy_with_logits(logits[level][mask], target[mask], pos_weight=pos_weight)
        return total / len(LEVEL_NAMES)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        feats, lengths = self._batch_features(batch)
        loss = self._loss(batch, self.net.all_level_logits(feats, lengths))
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["doc_id"]))
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        feats, lengths = self._batch_features(batch)
        logits = self.net.all_level_logits(feats, lengths)
        self.log("val/loss", self._loss(batch, logits), prog_bar=True, batch_size=len(batch["doc_id"]))
        scores = self.net.scores_from_logits(logits, feats, lengths)
        for level in range(len(LEVEL_NAMES)):  # unit-level Pk / F1 at threshold 0.5, scored as inference scores
            probs = scores[level]
            for row in range(len(batch["doc_id"])):
                keep = batch["label_mask"][row]
                n = int(batch["unit_mask"][row].sum())
                ref = torch.nonzero(batch["labels"][row, :, level].bool() & keep).flatten().tolist()
                hyp = torch.nonzero((probs[row] > 0.5) & keep).flatten().tolist()
                self.val_metrics[level].update(ref, hyp, n)

    def on_validation_epoch_end(self) -> None:
        for name, metric in zip(LEVEL_NAMES, self.val_metrics):
            values = metric.compute()
            self.log(f"val/pk_{name}", values["pk"].float())
            self.log(f"val/f1_{name}", values["f1"].float())
            metric.reset()

    def configure_optimizers(self):
        return torch.optim.AdamW(self.net.head.parameters(), lr=self.hparams.learning_rate,
                                 weight_decay=self.hparams.weight_decay)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if not k.startswith("net.encoder.")}
        # the segmenter loads checkpoints weights-only, which refuses e.g. a pathlib.Path in the hyper-parameters
        for key in ("hyper_parameters", "datamodule_hyper_parameters", "callbacks"):
            if key in checkpoint:
                checkpoint[key] = plain(checkpoint[key])
        checkpoint.pop("hparams_type", None)  # an OmegaConf class object: weights-only loading refuses it


def plain(value):
    """``value`` with path-like objects as strings and containers as plain dicts, lists and tuples."""
    if isinstance(value, Mapping):  # also AttributeDict or an OmegaConf DictConfig
        return {plain(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):  # a namedtuple or a list subclass becomes a plain tuple / list
        items = [plain(v) for v in value]
        return tuple(items) if isinstance(value, tuple) else items
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value
