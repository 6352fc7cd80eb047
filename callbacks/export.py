"""``StudentExporter``: write the trained student where serving and ``lit-block eval-lm`` can load it.

At the end of ``fit`` the module's ``export(folder)`` runs (``BlockDistillationModule`` and
``BlockFinetuneModule`` both have one): weights, tokenizer, sink embeddings and block settings,
loadable with ``BlockAttentionLM.from_pretrained(folder)``. The folder is written through
``lit_block.output_dir``: atomically, and never over a folder lit-block did not write unless
``overwrite`` (checked when fit starts, so a long run does not end in a refusal).

With an MLflow logger, the written folder is then logged on the training run as an MLflow 3 *logged
model* named ``student`` (its source run is the training run, its params the module's settings, the
teacher among them), listed among the run's outputs, and the run gets the tag ``lit_block.student``
with the model's URI, ``models:/<model id>``. Download it with
``mlflow.artifacts.download_artifacts("models:/<model id>", dst_path=...)``: the folder it gives loads
with ``BlockAttentionLM.from_pretrained``. A tracking server too old for logged models gets the folder
as run artifacts under ``student/`` instead (tag ``runs:/<run id>/student``).
"""

from __future__ import annotations

import os
import secrets
import shutil
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.loggers import MLFlowLogger

from lit_block.model import CONFIG_FILE
from lit_block.output_dir import MARKER, check_output, output_dir

STUDENT_TAG = "lit_block.student"  # run tag: where the run's exported student is in MLflow
MODEL_NAME = "student"
MODEL_TYPE = "lit-block-student"


class StudentExporter(L.Callback):
    """Export the student to ``dirpath`` when fit ends (global rank zero only).

    ``overwrite``: replace a folder at ``dirpath`` that lit-block did not write.
    ``log_to_mlflow``: also log the exported folder on the trainer's MLflow run(s) (each ``MLFlowLogger``
    among the trainer's loggers) as a logged model, tagging the run ``lit_block.student`` with its URI
    (see the module's docstring). A failure to log warns and never fails the fit; the local folder is
    written either way. Without an MLflow logger this does nothing.
    """

    def __init__(self, dirpath: str, overwrite: bool = False, log_to_mlflow: bool = True):
        self.dirpath = Path(dirpath)
        self.overwrite = overwrite
        self.log_to_mlflow = log_to_mlflow

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
        if not self.log_to_mlflow:
            return
        for logger in trainer.loggers:
            if isinstance(logger, MLFlowLogger):
                self._log(logger, pl_module, trainer.global_step)

    def _log(self, logger: MLFlowLogger, pl_module, step: int) -> None:
        """Log the exported folder on ``logger``'s run; warns instead of raising (a record is worth no failed fit)."""
        run_id = logger._run_id
        try:
            run_id = logger.run_id  # opens the store: inside the try
            with _model_files(self.dirpath) as files:
                uri = log_student(logger.experiment, logger.experiment_id, run_id, files,
                                  params=student_params(pl_module), step=step,
                                  tags={"lit_block.local_path": str(self.dirpath.resolve())})
        except Exception as err:  # noqa: BLE001 - any failure of the store, the artifacts or the network
            warnings.warn(f"StudentExporter: the student exported to {self.dirpath} was not logged on MLflow run "
                          f"{run_id} ({type(err).__name__}: {err}); the local export is complete", stacklevel=2)
        else:
            print(f"student logged on MLflow run {run_id}: {uri}", flush=True)


def log_student(client, experiment_id: str, run_id: str, folder: Path, params: dict[str, str], step: int = 0,
                tags: dict[str, str] | None = None) -> str:
    """Log ``folder`` as the logged model ``student`` of run ``run_id`` (or, on a store without logged models,
    as the run's artifacts ``student/``), tag the run ``lit_block.student`` with its URI, and return that URI."""
    from mlflow.entities import LoggedModelOutput, LoggedModelStatus
    from mlflow.exceptions import MlflowException

    try:
        model = client.create_logged_model(experiment_id=experiment_id, name=MODEL_NAME, source_run_id=run_id,
                                           params=params, tags=tags, model_type=MODEL_TYPE)
    except MlflowException as err:
        if err.error_code not in ("ENDPOINT_NOT_FOUND", "NOT_IMPLEMENTED", "FEATURE_DISABLED"):
            raise
        client.log_artifacts(run_id, str(folder), MODEL_NAME)  # a server older than MLflow 3
        uri = f"runs:/{run_id}/{MODEL_NAME}"
    else:
        try:
            client.log_model_artifacts(model.model_id, str(folder))
            client.log_outputs(run_id, [LoggedModelOutput(model.model_id, step=step)])
        except BaseException:
            try:
                client.finalize_logged_model(model.model_id, LoggedModelStatus.FAILED)
            except Exception:  # noqa: BLE001 - the first error is the one to report
                pass
            raise
        client.finalize_logged_model(model.model_id, LoggedModelStatus.READY)
        uri = f"models:/{model.model_id}"
    client.set_tag(run_id, STUDENT_TAG, uri)
    return uri


def student_params(pl_module) -> dict[str, str]:
    """The module's plain settings (teacher or base model, sinks, LoRA, losses...) as logged-model params."""
    params = {"module": type(pl_module).__name__}
    for key, value in dict(getattr(pl_module, "hparams", {}) or {}).items():
        if value is None or isinstance(value, (str, int, float, bool)):
            params[str(key)] = str(value)[:6000]
    return params


@contextmanager
def _model_files(folder: Path) -> Iterator[Path]:
    """A folder holding the export's files less lit-block's output marker (a downloaded copy is the model, not a
    lit-block output folder): hard links beside the export, copies where links are refused. Its name is a
    staging folder's, so ``output_dir`` removes it beside the next export if this process is killed meanwhile."""
    if not (folder / MARKER).exists():
        yield folder
        return
    links = folder.with_name(f".{folder.name}.staging-{os.getpid()}-{secrets.token_hex(4)}")

    def link(src: str, dst: str) -> Any:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)
        return dst

    try:
        shutil.copytree(folder, links, copy_function=link, ignore=shutil.ignore_patterns(MARKER))
        yield links
    finally:
        shutil.rmtree(links, ignore_errors=True)
