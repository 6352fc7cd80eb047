"""``LitBlockCLI``: the LightningCLI behind ``lit-block fit/validate/test/predict``."""

from __future__ import annotations

import signal
import sys
import threading
import warnings
import zipfile
from pathlib import Path

from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.utilities.exceptions import SIGTERMException

from callbacks.dataset_record import DatasetRecord
from callbacks.finite_loss import FiniteLossGuard
from callbacks.mlflow_run import MlflowRunInCheckpoint, checkpoint_run
from callbacks.training_monitor import TrainingMonitor
from lit_block.cli import LIGHTNING_SUBCOMMANDS
from lit_block.errors import UsageError, one_line
from lit_block.run_folder import place_outputs
from lit_block.tracking import LitBlockMLFlowLogger, MLflowSaveConfigCallback, default_tracking_uri, name_and_tag_run
from lit_block.tracking_store import ready_store

CKPT_KEYWORDS = ("last", "best", "hpc")  # ckpt_path values Lightning resolves itself


def interpolation_mode() -> str:
    """``omegaconf+`` (interpolation after all configs and overrides merge), with ``${model...}`` paths
    read from the config's root rather than the subcommand's; plain ``omegaconf`` on older jsonargparse."""
    from jsonargparse import set_parsing_settings

    try:
        set_parsing_settings(omegaconf_absolute_to_relative_paths=True)
    except TypeError:  # jsonargparse without the setting
        return "omegaconf"
    return "omegaconf+"


def model_language_model(model) -> str:
    """The language model a module config names (its tokenizer is the data's): ``teacher`` or ``model_name_or_path``."""
    args = model.get("init_args") or {}
    return args.get("teacher") or args.get("model_name_or_path") or "smollm2-135m"


def config_files(args: list[str]) -> list[str]:
    """The values of ``--config``/``-c`` on a command line (``--config X`` or ``--config=X``)."""
    found = [a.split("=", 1)[1] for a in args if a.startswith("--config=")]
    found += [b for a, b in zip(args, args[1:]) if a in ("--config", "-c")]
    return found


def check_config_files(args: list[str]) -> None:
    """Each ``--config`` file must be readable YAML; the error names the file and line (jsonargparse's
    own message names neither, and spans several lines)."""
    import yaml

    for value in config_files(args):
        path = Path(value)
        if not path.is_file():
            continue  # an inline YAML string, or a missing file that jsonargparse reports by name
        try:
            yaml.safe_load(path.read_text())
        except UnicodeDecodeError as err:
            raise UsageError(f"--config {path}: not UTF-8 text ({err.reason} at byte {err.start})") from err
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            what = " ".join(filter(None, (getattr(err, "context", None), getattr(err, "problem", None)))) or str(err)
            raise UsageError(f"--config {path}: YAML syntax error{where}: {what}") from err


def read_checkpoint(ckpt_path, weights_only: bool | None) -> dict | None:
    """The checkpoint at ``ckpt_path``, loaded (memory-mapped) to check that it is one; ``None`` for what
    Lightning resolves itself (``last``, a URL, a sharded folder without ``meta.pt``)."""
    import torch

    text = str(ckpt_path)
    if text in CKPT_KEYWORDS or text.startswith("registry") or "://" in text:
        return None
    path = Path(text)
    if path.is_dir():  # a distributed checkpoint: its non-tensor state is in meta.pt
        path = path / "meta.pt"
        if not path.is_file():
            return None
    if not path.is_file():
        raise UsageError(f"--ckpt_path {ckpt_path}: no such file")
    with open(path, "rb") as handle:
        head = handle.read(1)
    zipped = zipfile.is_zipfile(path)
    if not zipped and head != b"\x80":  # neither torch.save's zip format nor a legacy pickle (0x80 starts one)
        raise UsageError(f"--ckpt_path {ckpt_path} is not a Lightning checkpoint (not a file written by torch.save)")
    try:
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=weights_only, mmap=zipped)
        except RuntimeError:
            if not zipped:
                raise
            checkpoint = torch.load(path, map_location="cpu", weights_only=weights_only)  # a zip torch cannot map
    except Exception as err:  # a damaged file or one weights_only refuses: say which file, in one line
        raise UsageError(f"--ckpt_path {ckpt_path} cannot be loaded as a Lightning checkpoint: {one_line(err)}") from err
    if not isinstance(checkpoint, dict) or not {"state_dict", "pytorch-lightning_version"} & set(checkpoint):
        raise UsageError(f"--ckpt_path {ckpt_path} is not a Lightning checkpoint (a torch file without state_dict "
                         "or pytorch-lightning_version)")
    return checkpoint


def continue_run(logger_config, checkpoint: dict, ckpt_path) -> str | None:
    """Point an MLflow logger's config at the run that wrote ``checkpoint``, when that run is in the
    logger's store; returns the run id continued."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    run_id = checkpoint_run(checkpoint)
    if not run_id or not getattr(logger_config, "class_path", "").endswith("MLFlowLogger"):
        return None
    args = logger_config.init_args
    if args.get("run_id"):
        return None  # the user chose the run
    uri = args.get("tracking_uri") or default_tracking_uri()
    ready_store(uri)
    try:
        run = MlflowClient(uri).get_run(run_id)
    except MlflowException:  # a checkpoint from another store: a new run here
        print(f"checkpoint {ckpt_path} was written by MLflow run {run_id}, which is not in {uri}: starting a new run",
              file=sys.stderr, flush=True)
        return None
    if run.info.lifecycle_stage == "deleted":
        return None
    args.run_id = run_id
    print(f"resuming from {ckpt_path}: continuing MLflow run {run_id} ({run.info.run_name}, was {run.info.status})",
          flush=True)
    return run_id


def filter_known_warnings() -> None:
    """Silence the warnings every training run printed that ask nothing of the user; each says why."""
    # Lightning's own LightningCLI calls jsonargparse's add_instantiator, deprecated since jsonargparse 4.49: not
    # ours to change (the pin keeps Lightning 2.6 and jsonargparse < 5 together)
    warnings.filterwarnings("ignore", message=r"\s*``ArgumentParser.add_instantiator`` was deprecated")
    warnings.filterwarnings("ignore", message=r"\s*By default only one JsonargparseDeprecationWarning")
    # the frozen teacher (and the segmenter's frozen sentence encoder) stay in eval mode on purpose
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training")
    # in-process calls (the pipeline's stages, tests) pass their own args on purpose while sys.argv holds the caller's
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended to run from within Python")


class LitBlockCLI(LightningCLI):
    """LightningCLI in subclass mode: any LightningModule / LightningDataModule by ``class_path``.

    Defaults: MLflow logger (sqlite ``./mlflow.db``), the resolved config logged as an MLflow
    artifact, OmegaConf interpolation (``${...}``) resolved after every ``--config`` file and
    command-line override is merged (jsonargparse's ``omegaconf+`` mode), and the data's tokenizer
    linked to the model's language model (never repeated in YAML). Every trainer also gets
    ``FiniteLossGuard`` (a NaN loss fails the run, naming the step) and ``MlflowRunInCheckpoint``
    (``fit --ckpt_path X`` continues the MLflow run that wrote X).
    """

    def __init__(self, args: list[str] | None = None, run: bool = True):
        filter_known_warnings()
        if args is None or isinstance(args, (list, tuple)):  # not for a dict or Namespace of settings
            check_config_files(list(sys.argv[1:] if args is None else args))
        omegaconf = {"parser_mode": interpolation_mode()}
        self._run_dir: Path | None = None  # lit_block.run_folder: set once the config is parsed
        super().__init__(
            model_class=LightningModule,
            datamodule_class=LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            save_config_callback=MLflowSaveConfigCallback,
            seed_everything_default=0,  # recorded in every run's config (Lightning warned and used 0 when unset)
            save_config_kwargs={"save_to_log_dir": False, "overwrite": True},
            # callbacks here are added to those of the config, never replaced by them
            trainer_defaults={"logger": {"class_path": f"{LitBlockMLFlowLogger.__module__}.LitBlockMLFlowLogger"},
                              "callbacks": [FiniteLossGuard(), MlflowRunInCheckpoint(), TrainingMonitor(),
                                            DatasetRecord()]},
            parser_kwargs={**omegaconf, **{name: omegaconf for name in LIGHTNING_SUBCOMMANDS}},
            args=args,
            run=run,
        )

    def add_arguments_to_parser(self, parser) -> None:
        # derived, not repeated: a DataModule with a `tokenizer` gets the model's language model
        parser.link_arguments("model", "data.init_args.tokenizer", compute_fn=model_language_model)

    def _parse_ckpt_path(self) -> None:
        # LightningCLI reads the checkpoint's hyperparameters here, right after parsing: check first that it
        # is a checkpoint (a text file ends in "KeyError: 101" otherwise), and keep it for before_instantiate_classes
        subcommand = self.config.get("subcommand")
        config = self.config[subcommand] if subcommand else self.config
        self._checkpoint = None
        if config.get("ckpt_path") is not None:
            self._checkpoint = read_checkpoint(config.ckpt_path, config.get("weights_only"))
        super()._parse_ckpt_path()

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        name_and_tag_run(config.trainer.logger, self.subcommand or "run", config.model.class_path, config.data.class_path)
        if self.subcommand == "fit" and self._checkpoint is not None:  # a resumed fit continues its MLflow run
            continue_run(config.trainer.logger, self._checkpoint, config.ckpt_path)
        self._checkpoint = None  # not kept in memory while training
        self._run_dir = place_outputs(config, self.subcommand or "fit", config.get("ckpt_path"))
        if self._run_dir is not None:  # the resolved config goes into the run folder too
            self.save_config_kwargs = {**self.save_config_kwargs, "run_dir": str(self._run_dir)}

    def _run_subcommand(self, subcommand: str) -> None:
        def sigterm_outside_the_loop(signum, frame):
            # Lightning installs its SIGTERM handler only after the MLflow run has started, and composes the handler
            # it finds with its own: called through Lightning's, this does nothing (the loop stops at the next step);
            # called directly (starting up, tearing down), it stops here, so the run still ends KILLED
            if signal.getsignal(signal.SIGTERM) is sigterm_outside_the_loop:
                raise SIGTERMException

        main_thread = threading.current_thread() is threading.main_thread()  # signal handlers live in the main thread
        previous = signal.signal(signal.SIGTERM, sigterm_outside_the_loop) if main_thread else None
        try:
            super()._run_subcommand(subcommand)
        except SIGTERMException as err:  # Lightning's stop on SIGTERM exits with status 0: a stopped run is no success
            print(f"lit-block {subcommand}: stopped by SIGTERM", file=sys.stderr, flush=True)
            raise SystemExit(128 + signal.SIGTERM) from err
        finally:
            if main_thread:
                signal.signal(signal.SIGTERM, previous)

    def _report_run(self) -> None:
        logger = self.trainer.logger
        if isinstance(logger, LitBlockMLFlowLogger) and logger._run_id is not None:
            print(f"\nMLflow run {logger.run_id} in experiment {logger._experiment_name!r}")
            print(f"  browse: mlflow ui --backend-store-uri {logger._tracking_uri}")
        if self._run_dir is not None and self._run_dir.is_dir():
            print(f"  outputs: {self._run_dir}", flush=True)

    after_fit = after_validate = after_test = after_predict = _report_run
