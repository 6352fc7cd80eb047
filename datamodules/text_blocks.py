"""Long real text cut into fixed-size context blocks plus a global block (the continuation).

Each document is tokenized whole and windowed into samples of ``sample_tokens``: the first
``sample_tokens - global_tokens`` tokens become context blocks of ``block_tokens`` each, the rest
is the global block, whose tokens (all but its first) are scored. With no files given, the
public-domain KJV excerpts shipped in ``datamodules/texts/`` are used.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader

from datamodules.dataset_identity import DatasetIdentity, files_identity
from datamodules.seeded_loader import seeded_loader
from lit_block.errors import UsageError, check_number
from lit_block.layout import pack_tokens

BUNDLED_TEXTS = Path(__file__).parent / "texts"
# kept for independent checks of the project: never trained or evaluated on (by package, or Debian changelogs)
RESERVED = re.compile(r"janeaustenr|r-cran-tm\b|(^|/)changelog(\.Debian)?(\.gz)?$", re.IGNORECASE)


def check_not_reserved(path: Path) -> None:
    if RESERVED.search(path.resolve().as_posix()):
        raise UsageError(f"{path}: reserved for independent checks (r-cran-janeaustenr, r-cran-tm, Debian changelogs); "
                         "lit-block never trains or evaluates on it")


def expand_text_files(paths: list[str] | None) -> list[Path]:
    """Files named directly, or every ``*.txt`` in a named folder; the bundled texts when empty. Reserved
    texts (:data:`RESERVED`) are refused."""
    if not paths:
        return sorted(BUNDLED_TEXTS.glob("*.txt"))
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files.extend(sorted(p.glob("*.txt")))
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"text file or folder not found: {p}")
    if not files:
        raise FileNotFoundError(f"no *.txt files in {paths}")
    for f in files:
        check_not_reserved(f)
    return files


def window_blocks(tokens: list[int], sample_tokens: int, block_tokens: int, global_tokens: int) -> list[dict]:
    """Cut one document's tokens into packed samples (dicts of ``input_ids``, ``block_ids``, ``target_mask``)."""
    samples = []
    for start in range(0, len(tokens), sample_tokens):
        window = tokens[start : start + sample_tokens]
        if len(window) < global_tokens + block_tokens:  # too short for one block and a full global block
            break
        split = len(window) - global_tokens
        context = [window[i : min(i + block_tokens, split)] for i in range(0, split, block_tokens)]
        ids, blocks = pack_tokens(context, window[split:])
        target = [False] * (split + 1) + [True] * (global_tokens - 1)  # G's tokens after its first
        samples.append({"input_ids": ids, "block_ids": blocks, "target_mask": target})
    return samples


def collate_packed(samples: list[dict], pad_token_id: int = 0) -> dict[str, torch.Tensor]:
    """Right-pad packed samples into ``[B, S]`` tensors (padding: block -1, mask 0, not a target)."""
    S = max(len(s["input_ids"]) for s in samples)
    out = {
        "input_ids": torch.full((len(samples), S), pad_token_id, dtype=torch.long),
        "block_ids": torch.full((len(samples), S), -1, dtype=torch.long),
        "attention_mask": torch.zeros(len(samples), S, dtype=torch.long),
        "target_mask": torch.zeros(len(samples), S, dtype=torch.bool),
    }
    for i, s in enumerate(samples):
        n = len(s["input_ids"])
        out["input_ids"][i, :n] = torch.tensor(s["input_ids"])
        out["block_ids"][i, :n] = torch.tensor(s["block_ids"])
        out["attention_mask"][i, :n] = 1
        out["target_mask"][i, :n] = torch.tensor(s["target_mask"])
    return out


class TextBlocksDataModule(L.LightningDataModule):
    """Fixed-size blocks over plain-text files; train and validation files are given separately."""

    def __init__(
        self,
        train_files: list[str] | None = None,
        val_files: list[str] | None = None,
        tokenizer: str = "smollm2-135m",
        sample_tokens: int = 1024,
        block_tokens: int = 128,
        global_tokens: int = 256,
        batch_size: int = 1,
        num_workers: int = 0,
        max_samples: int | None = None,
        seed: int = 0,
    ):
        super().__init__()
        check_number("sample_tokens", sample_tokens, low=2, integer=True)
        check_number("global_tokens", global_tokens, low=1, high=sample_tokens - 1, integer=True)
        check_number("block_tokens", block_tokens, low=1, integer=True)
        check_number("batch_size", batch_size, low=1, integer=True)
        check_number("num_workers", num_workers, low=0, integer=True)
        self.save_hyperparameters()
        self.splits: dict[str, list[dict]] = {}
        self.pad_token_id = 0

    def _samples(self, files: list[Path], tokenizer) -> list[dict]:
        h = self.hparams
        samples = []
        for f in files:
            text = f.read_text(encoding="utf-8")
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            samples.extend(window_blocks(ids, h.sample_tokens, h.block_tokens, h.global_tokens))
        if not samples:
            raise ValueError(f"no sample of {h.sample_tokens} tokens fits in {[str(f) for f in files]}")
        return samples[: h.max_samples] if h.max_samples else samples

    def dataset_identity(self) -> DatasetIdentity:
        """The text files this module reads (recorded on the MLflow run by ``callbacks.DatasetRecord``)."""
        h = self.hparams
        return files_identity(expand_text_files(h.train_files) + expand_text_files(h.val_files))

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        from transformers import AutoTokenizer

        from lit_block.model_sources import resolve_model_path

        tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(self.hparams.tokenizer))
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.splits["train"] = self._samples(expand_text_files(self.hparams.train_files), tokenizer)
        self.splits["val"] = self._samples(expand_text_files(self.hparams.val_files), tokenizer)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        h = self.hparams
        return seeded_loader(self.splits[split], h.batch_size, shuffle, h.seed, h.num_workers,
                             functools.partial(collate_packed, pad_token_id=self.pad_token_id))

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)
