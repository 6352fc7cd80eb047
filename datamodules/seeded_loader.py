"""The one way lit-block's DataModules build loaders: seeded, so every run sees the same order."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch.utils.data import DataLoader


def seeded_loader(samples: Sequence, batch_size: int, shuffle: bool, seed: int, num_workers: int,
                  collate_fn: Callable) -> DataLoader:
    return DataLoader(samples, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers,
                      generator=torch.Generator().manual_seed(seed), collate_fn=collate_fn)
