"""MLflow as lit-block's default logger: sqlite tracking, artifacts beside it, config as artifact.

A run started by ``lit-block sweep`` learns where it belongs from the environment, so every
subcommand (LightningCLI or not) nests under the sweep's parent run without extra arguments:
``LIT_BLOCK_MLFLOW_EXPERIMENT`` (the sweep's experiment), ``LIT_BLOCK_MLFLOW_RUN_NAME`` and
``LIT_BLOCK_MLFLOW_TAGS`` (a JSON object; ``mlflow.parentRunId`` among them nests the run).

Every command opens the store through :func:`tracking_uri` (``lit_block.tracking_store.ready_store``), which

* creates and migrates a sqlite database once, under a file lock (``mlflow.db.lock`` beside it),
  so commands started together never migrate it twice (MLflow itself does not lock);
* refuses, in one line naming it, a file that is not an sqlite database or an ``http://`` server
  that does not answer its ``/health`` (and caps MLflow's HTTP retries and timeout, which would
  otherwise wait minutes);
* marks ``KILLED`` the runs left ``RUNNING`` by lit-block processes of this host that are gone
  (each run records its process in the tags ``lit_block.pid`` and ``lit_block.host``).

Tag and param values are strings everywhere: MLflow's REST store rejects ints and floats.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from lit_block.errors import UsageError
from lit_block.tracking_store import HOST_TAG, PID_TAG, ready_store

DEFAULT_EXPERIMENT = "lit-block"


def default_tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI`` if set, else a sqlite database ``./mlflow.db`` (absolute path); opens nothing."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path('mlflow.db').resolve()}"


def tracking_uri(create: bool = True) -> str:
    """The default store's URI, ready for use (see :func:`ready_store`)."""
    uri = default_tracking_uri()
    ready_store(uri, create=create)
    return uri


def default_artifact_location(tracking_uri: str) -> str | None:
    """Artifacts of a sqlite store go to ``mlartifacts/`` beside the database file."""
    if tracking_uri.startswith("sqlite:///"):
        return str(Path(tracking_uri.removeprefix("sqlite:///")).parent / "mlartifacts")
    return None


def as_strings(values: dict[str, Any] | None) -> dict[str, str]:
    """Tag or param values as strings: MLflow's REST store rejects any other type (sqlite accepts them)."""
    return {str(k): str(v) for k, v in (values or {}).items()}


def process_tags() -> dict[str, str]:
    """The tags every lit-block run gets: the process running it (so a later command can tell whether it is
    still alive) and the code it ran (:func:`source_tags`)."""
    return {PID_TAG: str(os.getpid()), HOST_TAG: socket.gethostname(), **source_tags()}


@functools.cache
def source_tags() -> dict[str, str]:
    """The code a run ran: lit-block's version and, in a git checkout, its commit (MLflow's own tag, shown in
    the UI) and whether the working tree had uncommitted changes."""
    import subprocess

    import lit_block

    tags = {"lit_block.version": lit_block.__version__}
    root = Path(lit_block.__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10).stdout.strip()
        if commit:
            changes = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                     capture_output=True, text=True, timeout=10).stdout
            tags.update({"mlflow.source.git.commit": commit, "lit_block.git_dirty": str(bool(changes.strip()))})
    except (OSError, subprocess.SubprocessError):  # no git, or not a checkout: the version alone
        pass
    return tags


# MLflow 3's UI opens an experiment of this kind on its runs (training) view, not the empty GenAI traces view
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")


def get_or_create_experiment(client, name: str, artifact_location: str | None) -> str:
    """The id of experiment ``name``, created if missing; safe when commands create it at the same time."""
    from mlflow.exceptions import MlflowException

    for _ in range(2):  # a second look when another process created it between our look and our create
        experiment = client.get_experiment_by_name(name)
        if experiment is not None:
            if experiment.lifecycle_stage == "deleted":
                raise UsageError(f"MLflow experiment {name!r} is deleted; restore it (mlflow experiments restore "
                                 f"--experiment-id {experiment.experiment_id}) or choose another name")
            if EXPERIMENT_KIND[0] not in experiment.tags:  # made by an older lit-block or by hand
                client.set_experiment_tag(experiment.experiment_id, *EXPERIMENT_KIND)
            return experiment.experiment_id
        try:
            return client.create_experiment(name, artifact_location=artifact_location, tags=dict([EXPERIMENT_KIND]))
        except MlflowException as err:
            if err.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
    raise UsageError(f"MLflow experiment {name!r} could not be created or found")


class Terminated(SystemExit):
    """SIGTERM as an exception (exit status 143), so that open runs end KILLED on the way out."""


@contextmanager
def interrupts_as_exceptions() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` and SIGINT ``KeyboardInterrupt`` (once: a
    second signal during the clean-up that follows is ignored). Only in the main thread."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)  # let the clean-up run to its end
        if signum == signal.SIGTERM:
            raise Terminated(128 + signum)
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def was_interrupted() -> bool:
    """Whether the exception being handled is an interrupt (Ctrl-C, SIGTERM, Lightning's SIGTERMException)."""
    return isinstance(sys.exc_info()[1], (KeyboardInterrupt, Terminated, SIGTERMException))


class LitBlockMLFlowLogger(MLFlowLogger):
    """``MLFlowLogger`` whose defaults are lit-block's: sqlite store, named runs, tags (as strings, with
    the process that runs the run), and an interrupted run ending ``KILLED`` rather than ``FAILED``.
    Given ``run_id`` (a resumed fit), it continues that run: status ``RUNNING`` again, this process's tags."""

    def __init__(
        self,
        experiment_name: str = DEFAULT_EXPERIMENT,
        run_name: str | None = None,
        tracking_uri: str | None = None,
        # not Any: jsonargparse reads an Any-typed string as YAML, so a run id of digits and one "e" became a float
        # (inf) and a sweep point lost its parent; a number from a YAML config is still accepted, and made a string
        tags: dict[str, str | int | float | bool] | None = None,
        artifact_location: str | None = None,
        log_model: bool = False,
        run_id: str | None = None,
    ):
        tracking_uri = tracking_uri or default_tracking_uri()
        ready_store(tracking_uri)  # before MLFlowLogger opens it: created under the lock, checked
        super().__init__(
            experiment_name=experiment_name,
            run_name=run_name,
            tracking_uri=tracking_uri,
            tags={**as_strings(tags), **process_tags()},
            artifact_location=artifact_location or default_artifact_location(tracking_uri),
            log_model=log_model,
            run_id=run_id,
        )
        self._resumed = run_id is not None

    @property
    @rank_zero_experiment
    def experiment(self):
        if not self._initialized:
            if self._resumed:  # the run of a checkpoint: running again, in this process
                self._mlflow_client.update_run(self._run_id, status="RUNNING")
                for key, value in process_tags().items():
                    self._mlflow_client.set_tag(self._run_id, key, value)
            elif self._experiment_id is None:  # found or created here, safe against a concurrent create
                self._experiment_id = get_or_create_experiment(self._mlflow_client, self._experiment_name,
                                                               self._artifact_location)
        return super().experiment

    @rank_zero_only
    def log_hyperparams(self, params) -> None:
        if not self._resumed:
            return super().log_hyperparams(params)
        # MLflow refuses to change a logged param: a resumed run logs the new ones and keeps the first values
        from lightning.fabric.utilities.logger import _convert_params, _flatten_dict

        logged = self.experiment.get_run(self.run_id).data.params
        flat = _flatten_dict(_convert_params(params))
        changed = sorted(k for k, v in flat.items() if k in logged and logged[k] != str(v)[:250])
        if changed:
            print(f"MLflow run {self.run_id} keeps its first values of the params {changed}; this resumed fit "
                  "changed them", file=sys.stderr, flush=True)
        super().log_hyperparams({k: v for k, v in flat.items() if k not in logged})

    @rank_zero_only
    def finalize(self, status: str = "success") -> None:
        if status == "failed" and was_interrupted():  # Ctrl-C or SIGTERM, not a failure of the run
            status = "KILLED"
        super().finalize(status)


def sweep_context() -> dict[str, Any]:
    """What a sweep asked of this run through the environment: ``experiment``, ``run_name``, ``tags``."""
    tags = os.environ.get("LIT_BLOCK_MLFLOW_TAGS")
    try:
        tags = json.loads(tags) if tags else {}
    except json.JSONDecodeError as err:
        raise UsageError(f"LIT_BLOCK_MLFLOW_TAGS is not a JSON object: {tags!r} ({err})") from err
    if not isinstance(tags, dict):
        raise UsageError(f"LIT_BLOCK_MLFLOW_TAGS is not a JSON object: {tags!r}")
    return {"experiment": os.environ.get("LIT_BLOCK_MLFLOW_EXPERIMENT"), "run_name": os.environ.get("LIT_BLOCK_MLFLOW_RUN_NAME"),
            "tags": as_strings(tags)}


def name_and_tag_run(logger_config: Any, subcommand: str, model_class: str, data_class: str) -> None:
    """Fill an MLflow logger's config (a jsonargparse namespace) with a run name and tags, in place."""
    if not hasattr(logger_config, "class_path") or not logger_config.class_path.endswith("MLFlowLogger"):
        return
    args = logger_config.init_args
    model, data = model_class.rsplit(".", 1)[-1], data_class.rsplit(".", 1)[-1]
    sweep = sweep_context()
    if sweep["experiment"]:
        args.experiment_name = sweep["experiment"]
    if sweep["run_name"]:
        args.run_name = sweep["run_name"]
    if not args.get("run_name"):
        args.run_name = f"{subcommand}-{model}-{time.strftime('%Y%m%d-%H%M%S')}"
    tags = {"lit_block.subcommand": subcommand, "lit_block.model": model, "lit_block.data": data}
    # strings: a YAML tag such as `granularity: ${data.init_args.granularity}` resolves to an int
    args.tags = as_strings({**tags, **(args.get("tags") or {}), **sweep["tags"]})


class MLflowSaveConfigCallback(SaveConfigCallback):
    """Logs the resolved config of the run as the MLflow artifact ``config.yaml``, and writes it into the run
    folder (``run_dir``, see ``lit_block.run_folder``) when there is one."""

    def __init__(self, *args, run_dir: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.run_dir = run_dir

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        config = self.parser.dump(self.config, skip_none=False)
        for logger in trainer.loggers:
            if isinstance(logger, MLFlowLogger):
                logger.experiment.log_text(logger.run_id, config, "config.yaml")
        if self.run_dir and trainer.is_global_zero:
            from lit_block.output_dir import write_text_atomic

            Path(self.run_dir).mkdir(parents=True, exist_ok=True)
            write_text_atomic(Path(self.run_dir) / "config.yaml", config)


def metric_key(name: str) -> str:
    """A table row name as an MLflow metric prefix: ``"teacher, full attention"`` -> ``teacher_full_attention``."""
    return "_".join("".join(c if c.isalnum() or c in "-." else " " for c in name).split())


@contextmanager
def start_mlflow_run(experiment: str, run_name: str):
    """An MLflow run (a context manager yielding the active run) in ``experiment`` on lit-block's default
    store, for commands that log without a Trainer (``eval-seg``, ``eval-lm``). It ends FINISHED, FAILED
    on an error, KILLED on Ctrl-C or SIGTERM."""
    import mlflow

    sweep = sweep_context()
    experiment = sweep["experiment"] or experiment
    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    experiment_id = get_or_create_experiment(mlflow.MlflowClient(uri), experiment, default_artifact_location(uri))
    run = mlflow.start_run(experiment_id=experiment_id, run_name=sweep["run_name"] or run_name,
                           tags={**sweep["tags"], **process_tags()})
    status = "FAILED"
    try:
        with interrupts_as_exceptions():
            yield run
        status = "FINISHED"
    except BaseException:
        status = "KILLED" if was_interrupted() else "FAILED"
        raise
    finally:
        mlflow.end_run(status)
