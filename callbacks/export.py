"""``StudentExporter``: write the trained student where serving and ``lit-block eval-lm`` can load it.

At the end of ``fit`` the module's ``export(folder)`` runs (``BlockDistillationModule`` and
``BlockFinetuneModule`` both have one): weights, tokenizer, sink embeddings and block settings,
loadable with ``BlockAttentionLM.from_pretrained(folder)``. The folder is written atomically.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import lightning as L


class StudentExporter(L.Callback):
    def __init__(self, dirpath: str):
        self.dirpath = Path(dirpath)

    def on_fit_end(self, trainer, pl_module) -> None:
        if not hasattr(pl_module, "export"):
            raise TypeError(f"{type(pl_module).__name__} has no export(folder); StudentExporter needs one")
        if not trainer.is_global_zero:
            return
        self.dirpath.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{self.dirpath.name}-", dir=self.dirpath.parent))
        try:
            pl_module.export(str(staging))
            if self.dirpath.exists():
                shutil.rmtree(self.dirpath)
            os.replace(staging, self.dirpath)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
