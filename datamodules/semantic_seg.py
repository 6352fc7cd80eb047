"""``SemanticSegDataModule``: documents as candidate units with gold boundary labels per level.

Each sample is a window of a document's candidate units (see ``lit_block.candidates``):

    unit_texts   the text of each unit (a unit runs from one candidate start to the next)
    labels       [U, 3] int: 1 where a coarse / middle / fine gold segment starts at the unit
    label_mask   [U] bool: which units' labels count (a document's or window's first unit does not)

Long documents are cut into windows of ``max_units`` units that overlap by one unit, so every
boundary is labelled exactly once and nothing is truncated away.

``synthetic_documents`` adds training samples that join runs of units from 2 to 4 documents of
different categories: where one source ends and another begins is a boundary at every level,
whatever the two sources are, which teaches topic and register shift rather than one corpus's
layout. ``exclude_categories`` leaves categories out of every split (leave-one-category-out).
"""

from __future__ import annotations

import random
from bisect import bisect_left
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader

from datamodules.corpus.schema import LEVELS
from datamodules.dataset_identity import DatasetIdentity, corpus_identity
from datamodules.document_selection import select_documents
from datamodules.seeded_loader import seeded_loader
from lit_block.candidates import candidate_starts
from lit_block.errors import check_number


def document_units(row: dict, splitter: str) -> tuple[list[int], torch.Tensor, int]:
    """Candidate starts of a document, their gold labels ``[U, 3]``, and how many gold boundaries no candidate hits."""
    starts = candidate_starts(row["text"], splitter)
    labels = torch.zeros(len(starts), len(LEVELS), dtype=torch.long)
    missed = 0
    for level, name in enumerate(LEVELS):
        for offset in row[f"boundaries_{name}"]:
            i = bisect_left(starts, offset)
            if i < len(starts) and starts[i] == offset:
                labels[i, level] = 1
            elif level == len(LEVELS) - 1:
                missed += 1  # counted once, at the finest level
    return starts, labels, missed


def windows(row: dict, splitter: str, max_units: int) -> list[dict]:
    """Samples for one document: windows of at most ``max_units`` units, overlapping by one."""
    if max_units < 2:
        raise ValueError(f"max_units must be >= 2, got {max_units}")
    starts, labels, _ = document_units(row, splitter)
    text = row["text"]
    ends = starts[1:] + [len(text)]
    out = []
    step = max_units - 1
    for w0 in range(0, max(len(starts) - 1, 1), step):
        w1 = min(w0 + max_units, len(starts))
        mask = torch.ones(w1 - w0, dtype=torch.bool)
        mask[0] = False  # the window's first unit has no left context here (and doc start is no boundary)
        out.append({
            "doc_id": row["id"],
            "category": row["category"],
            "unit_starts": starts[w0:w1],
            "unit_texts": [text[a:b] for a, b in zip(starts[w0:w1], ends[w0:w1])],
            "labels": labels[w0:w1],
            "label_mask": mask,
        })
        if w1 == len(starts):
            break
    return out


def joined_windows(windows_: list[dict], count: int, max_units: int, seed: int) -> list[dict]:
    """``count`` samples, each runs of units from 2-4 windows of different categories, joined in order.

    A join is a gold boundary at every level (coarse implies middle and fine); labels inside a run are the
    run's own. Deterministic for a seed, so the segmenter's feature cache stays valid across epochs.
    """
    by_category: dict[str, list[dict]] = {}
    for w in windows_:
        if len(w["unit_texts"]) >= 4:
            by_category.setdefault(w["category"], []).append(w)
    if len(by_category) < 2 or count <= 0:
        return []
    rng, out = random.Random(seed), []
    for i in range(count):
        pieces = rng.randint(2, min(4, len(by_category)))
        texts, labels, mask = [], [], []
        for j, category in enumerate(rng.sample(sorted(by_category), pieces)):
            w = rng.choice(by_category[category])
            n = len(w["unit_texts"])
            length = rng.randint(min(4, n), max(min(n, max_units // pieces), min(4, n)))
            start = rng.randint(0, n - length)
            piece_labels = w["labels"][start:start + length].clone()
            piece_mask = w["label_mask"][start:start + length].clone()
            piece_mask[0] = j > 0  # the join is labelled; the sample's first unit has no left context
            piece_labels[0] = 1 if j > 0 else piece_labels[0]
            texts += w["unit_texts"][start:start + length]
            labels.append(piece_labels)
            mask.append(piece_mask)
        out.append({"doc_id": f"joined-{seed}-{i}", "category": "joined", "unit_starts": list(range(len(texts))),
                    "unit_texts": texts, "labels": torch.cat(labels), "label_mask": torch.cat(mask)})
    return out


def collate_units(samples: list[dict]) -> dict:
    """Pad labels to ``[B, U_max, 3]``; texts stay lists (the segmenter tokenizes them itself)."""
    U = max(len(s["unit_texts"]) for s in samples)
    labels = torch.zeros(len(samples), U, len(LEVELS), dtype=torch.long)
    label_mask = torch.zeros(len(samples), U, dtype=torch.bool)
    unit_mask = torch.zeros(len(samples), U, dtype=torch.bool)
    for i, s in enumerate(samples):
        n = len(s["unit_texts"])
        labels[i, :n], label_mask[i, :n], unit_mask[i, :n] = s["labels"], s["label_mask"], True
    return {
        "doc_id": [s["doc_id"] for s in samples],
        "category": [s["category"] for s in samples],
        "unit_texts": [s["unit_texts"] for s in samples],
        "unit_starts": [s["unit_starts"] for s in samples],
        "labels": labels,
        "label_mask": label_mask,
        "unit_mask": unit_mask,
    }


class SemanticSegDataModule(L.LightningDataModule):
    """Serves the corpus built by ``lit-block data build`` (or any dataset in its schema) to a segmenter."""

    def __init__(
        self,
        dataset_path: str = "data/semanticseg",
        splitter: str = "sentences",
        max_units: int = 256,
        batch_size: int = 4,
        num_workers: int = 0,
        categories: list[str] | None = None,
        exclude_categories: list[str] | None = None,
        max_documents: int | None = None,
        synthetic_documents: int = 0,
        seed: int = 0,
    ):
        super().__init__()
        check_number("synthetic_documents", synthetic_documents, low=0, integer=True)
        self.save_hyperparameters()
        self.samples: dict[str, list[dict]] = {}

    def dataset_identity(self) -> DatasetIdentity:
        """The corpus this module reads (recorded on the MLflow run by ``callbacks.DatasetRecord``)."""
        return corpus_identity(self.hparams.dataset_path)

    def setup(self, stage: str | None = None) -> None:
        if self.samples:
            return
        from datasets import load_from_disk

        path = Path(self.hparams.dataset_path)
        if not path.is_dir():
            raise FileNotFoundError(f"no dataset at {path}: build one with `lit-block data build --output {path}`")
        data = load_from_disk(str(path))
        for split in data:
            h = self.hparams
            rows = select_documents(data[split], h.categories, h.exclude_categories, h.max_documents)
            self.samples[split] = [w for row in rows for w in windows(row, self.hparams.splitter, self.hparams.max_units)]
        if "train" in self.samples:  # joins of unrelated documents: training only, scores stay on real documents
            self.samples["train"] += joined_windows(self.samples["train"], self.hparams.synthetic_documents,
                                                    self.hparams.max_units, self.hparams.seed)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        if split not in self.samples:
            raise KeyError(f"the dataset at {self.hparams.dataset_path} has no {split!r} split")
        h = self.hparams
        return seeded_loader(self.samples[split], h.batch_size, shuffle, h.seed, h.num_workers, collate_units)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("validation", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
