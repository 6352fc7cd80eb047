"""``StudentExporter``: write the trained student where serving and ``lit-block eval-lm`` can load it.

At the end of ``fit`` the module's ``export(folder)`` runs (``BlockDistillationModule`` and
``BlockFinetuneModule`` both have one): weights, tokenizer, sink embeddings and block settings,
loadable with ``BlockAttentionLM.from_pretrained(folder)``. The folder is written through
``lit_block.output_dir``: atomically, and never over a folder lit-block did not write unless
``overwrite`` (checked when fit starts, so a long run does not end in a refusal).
"""

from __future__ import annotations

from pathlib import Path

import lightning as L

from lit_block.model import CONFIG_FILE
from lit_block.output_dir import check_output, output_dir


class StudentExporter(L.Callback):
    def __init__(self, dirpath: str, overwrite: bool = False):
        self.dirpath = Path(dirpath)
        self.overwrite = overwrite

    def on_fit_start(self, trainer, pl_module) -> None:
        if not hasattr(pl_module, "export"):
            raise TypeError(f"{type(pl_module).__name__} has no export(folder); StudentExporter needs one")
        check_output(self.dirpath, self.overwrite, option="StudentExporter dirpath", signature=CONFIG_FILE)

    def on_fit_end(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero:
            return
        with output_dir(self.dirpath, self.overwrite, command="fit (StudentExporter)",
                        option="StudentExporter dirpath", signature=CONFIG_FILE) as staging:
            pl_module.export(str(staging))
