"""Where a ``lit-block fit/validate/test`` run writes: one predictable folder per run.

    runs/<experiment>/<run name>/
        config.yaml      the fully resolved config (also the MLflow artifact config.yaml)
        checkpoints/     Lightning's checkpoints (a ModelCheckpoint without a dirpath writes here)
        student/         the exported student, for modules with an ``export(folder)`` (fit only; not yet under
                         FSDP2, whose sharded weights would first have to be gathered)

The root is ``--trainer.default_root_dir`` (default ``runs``); the experiment and run name are the
MLflow logger's. A resumed fit (``--ckpt_path runs/x/y/checkpoints/last.ckpt``) writes into the run
folder its checkpoint came from. The folder is recorded on the MLflow run (tag ``lit_block.run_dir``)
and printed at the end. Paths a config sets explicitly (a ModelCheckpoint's ``dirpath``, a
``StudentExporter``) are kept.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

from jsonargparse import Namespace

RUNS_ROOT = "runs"
RUN_DIR_TAG = "lit_block.run_dir"
CHECKPOINT = "lightning.pytorch.callbacks.ModelCheckpoint"
EXPORTER = "callbacks.StudentExporter"


def _safe(name: str) -> str:
    """A run or experiment name as one folder name."""
    return re.sub(r"[^\w.=+-]+", "_", str(name)).strip("_") or "run"


def _has_export(class_path: str) -> bool:
    module, _, name = class_path.rpartition(".")
    try:
        return callable(getattr(getattr(importlib.import_module(module), name), "export", None))
    except (ImportError, AttributeError):
        return False


def run_dir_of(config, ckpt_path=None) -> Path | None:
    """The run folder a config will write to (``None`` without an MLflow logger naming the run)."""
    logger = config.trainer.get("logger")
    if not getattr(logger, "class_path", "").endswith("MLFlowLogger"):
        return None
    if ckpt_path and Path(str(ckpt_path)).parent.name == "checkpoints":  # resumed: the folder it came from
        return Path(str(ckpt_path)).resolve().parent.parent
    root = Path(config.trainer.get("default_root_dir") or RUNS_ROOT)
    args = logger.init_args
    return (root / _safe(args.get("experiment_name") or "lit-block") / _safe(args.get("run_name") or "run")).resolve()


def place_outputs(config, subcommand: str, ckpt_path=None) -> Path | None:
    """Point the config's outputs into the run folder (in place, before classes are built); returns it."""
    run_dir = run_dir_of(config, ckpt_path)
    if run_dir is None:
        return None
    trainer = config.trainer
    trainer.default_root_dir = str(run_dir)
    callbacks = list(trainer.get("callbacks") or [])
    checkpoints = [c for c in callbacks if getattr(c, "class_path", "").endswith("ModelCheckpoint")]
    for callback in checkpoints:
        if callback.init_args.get("dirpath") is None:
            callback.init_args.dirpath = str(run_dir / "checkpoints")
    if subcommand == "fit" and trainer.get("enable_checkpointing") is not False and not checkpoints:
        # last.ckpt only, replaced as training goes: one model's worth of disk, and a path to resume from
        callbacks.append(Namespace(class_path=CHECKPOINT, init_args=Namespace(
            dirpath=str(run_dir / "checkpoints"), save_last=True, save_top_k=0)))
    exporters = [c for c in callbacks if getattr(c, "class_path", "").endswith("StudentExporter")]
    strategy = str(getattr(trainer.get("strategy"), "class_path", trainer.get("strategy")))
    sharded = any(word in strategy for word in ("FSDP", "ModelParallel", "fsdp"))  # export would need a gather
    if subcommand == "fit" and not exporters and not sharded and _has_export(config.model.class_path):
        callbacks.append(Namespace(class_path=EXPORTER, init_args=Namespace(dirpath=str(run_dir / "student"),
                                                                            overwrite=False)))
    trainer.callbacks = callbacks
    logger_args = trainer.logger.init_args
    logger_args.tags = {**(logger_args.get("tags") or {}), RUN_DIR_TAG: str(run_dir)}
    return run_dir
