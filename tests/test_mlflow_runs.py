"""MLflow runs that tell the truth: string tags, one migration for commands started together, killed runs
marked KILLED, a resumed fit continuing its run, a NaN loss failing its run; one-line errors for bad
checkpoints, YAML and tracking stores. A Lightning demo model keeps each fit to a few seconds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import REPO
from idle_model import IDLE_MODEL, with_tests_on_path
from lit_block.cli import main
from lightning.pytorch.demos.boring_classes import BoringModel

BORING = ["--model=lightning.pytorch.demos.boring_classes.BoringModel",
          "--data=lightning.pytorch.demos.boring_classes.BoringDataModule", "--trainer.accelerator=cpu",
          "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false", "--trainer.limit_val_batches=1"]


class NanAtStepTwo(BoringModel):
    """A demo model whose training loss becomes NaN at the third step (global step 2)."""

    def training_step(self, batch, batch_idx):
        loss = self.step(batch)
        return {"loss": loss * float("nan") if self.global_step == 2 else loss}


class TermedBeforeTheLoop(BoringModel):
    """A demo model that starts its MLflow run and gets SIGTERM before Lightning installs its own handler."""

    def configure_model(self):
        assert self.logger.run_id  # the run is RUNNING from here on
        os.kill(os.getpid(), signal.SIGTERM)


def runs_of(folder: Path, experiment: str = "lit-block") -> list:
    """The runs of ``experiment`` in ``folder/mlflow.db``, read under the store's lock (commands may be creating it)."""
    import mlflow

    from lit_block.tracking_store import store_lock

    with store_lock(folder / "mlflow.db"):
        client = mlflow.MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    found = client.get_experiment_by_name(experiment)
    return client.search_runs([found.experiment_id]) if found else []


def lit_block(*args: str, cwd: Path, env: dict | None = None, **popen) -> subprocess.Popen:
    env = {k: v for k, v in (env or os.environ).items() if k != "MLFLOW_TRACKING_URI"}
    return subprocess.Popen([sys.executable, "-m", "lit_block.cli", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def test_tag_values_reach_mlflow_as_strings(tmp_path, monkeypatch):
    from jsonargparse import Namespace

    from lit_block.tracking import LitBlockMLFlowLogger, name_and_tag_run

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("LIT_BLOCK_MLFLOW_TAGS", '{"sweep.granularity": 64}')
    config = Namespace(class_path="lit_block.tracking.LitBlockMLFlowLogger",
                       init_args=Namespace(tags={"granularity": 128, "ratio": 0.5}, run_name=None))
    name_and_tag_run(config, "fit", "m.Model", "d.Data")
    assert config.init_args.tags["granularity"] == "128" and config.init_args.tags["sweep.granularity"] == "64"
    logger = LitBlockMLFlowLogger(tags={"granularity": 64, "flag": True})  # as a YAML interpolation gives them
    assert all(isinstance(v, str) for v in logger.tags.values()) and logger.tags["lit_block.pid"] == str(os.getpid())


@pytest.mark.parametrize("run_id", ["784617950832478981e5794998125395", "12345678901234567890123456789012", "true"])
def test_tags_that_look_like_numbers_reach_the_logger_unchanged(tmp_path, monkeypatch, run_id):
    """A sweep point's parent run id comes through jsonargparse's instantiation as LightningCLI does it: a hex id
    of digits and one "e" once became the float inf, and the point's run lost its parent."""
    from jsonargparse import ArgumentParser

    from lit_block.tracking import LitBlockMLFlowLogger, name_and_tag_run

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("LIT_BLOCK_MLFLOW_TAGS", json.dumps({"mlflow.parentRunId": run_id}))
    parser = ArgumentParser()
    parser.add_subclass_arguments(LitBlockMLFlowLogger, "logger")
    config = parser.parse_args(["--logger=lit_block.tracking.LitBlockMLFlowLogger"])
    name_and_tag_run(config.logger, "fit", "m.Model", "d.Data")
    logger = parser.instantiate_classes(config).logger
    assert logger.tags["mlflow.parentRunId"] == run_id


def test_commands_started_together_in_an_empty_folder_all_record_their_runs(tmp_path):
    script = ("import sys, time\nfrom pathlib import Path\nfrom lit_block.tracking import start_mlflow_run\n"
              "Path(f'ready-{sys.argv[1]}').touch()\n"
              "while not Path('go').exists():\n    time.sleep(0.01)\n"  # all imported first: they open the store at once
              "with start_mlflow_run('race', f'run-{sys.argv[1]}'):\n    pass\n")
    env = {**{k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", script, str(i)], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for i in range(3)]
    wait_for(lambda: len(list(tmp_path.glob("ready-*"))) == 3, 120, "the three commands to import")
    (tmp_path / "go").touch()
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], "\n".join(outputs)
    runs = runs_of(tmp_path, "race")
    assert sorted(r.info.run_name for r in runs) == ["run-0", "run-1", "run-2"]
    assert all(r.info.status == "FINISHED" for r in runs)
    assert (tmp_path / "mlflow.db.lock").is_file()


def test_fits_killed_or_terminated_end_killed_not_running(tmp_path, monkeypatch):
    forever = [*BORING, IDLE_MODEL, "--trainer.max_epochs=-1", "--trainer.enable_checkpointing=false"]
    env = with_tests_on_path(dict(os.environ))
    first = lit_block("fit", *forever, "--trainer.logger.init_args.run_name=sigkill", cwd=tmp_path, env=env)
    second = lit_block("fit", *forever, "--trainer.logger.init_args.run_name=sigterm", cwd=tmp_path, env=env)
    try:
        running = lambda: len([r for r in runs_of(tmp_path) if r.info.status == "RUNNING"]) == 2  # noqa: E731
        wait_for(lambda: first.poll() is None and second.poll() is None and running(), 120, "both fits to be RUNNING")
        first.kill()  # SIGKILL: nothing in the process can end its run
        second.send_signal(signal.SIGTERM)
        first.wait(timeout=30)
        assert second.wait(timeout=60) == 128 + signal.SIGTERM  # not 0, as Lightning alone exits
    finally:
        for proc in (first, second):
            proc.kill()
            print(proc.communicate()[0][-3000:])  # shown if the test fails
    status = {r.info.run_name: r.info.status for r in runs_of(tmp_path)}
    assert status == {"sigkill": "RUNNING", "sigterm": "KILLED"}  # SIGTERM: Lightning stops, the logger says KILLED
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert main(["compare", "--experiment", "lit-block", "--all-statuses", "--output", str(tmp_path / "out")]) == 0
    status = {r.info.run_name: r.info.status for r in runs_of(tmp_path)}
    assert status["sigkill"] == "KILLED"  # the next command found its process gone


def test_sigterm_before_the_training_loop_also_ends_the_run_killed(tmp_path):
    """Lightning handles SIGTERM only once its loop is set up; lit-block's own handler covers the start before it."""
    env = with_tests_on_path(dict(os.environ))
    fit = lit_block("fit", *BORING, f"--model={__name__}.TermedBeforeTheLoop", cwd=tmp_path, env=env)
    output = fit.communicate(timeout=120)[0]
    assert fit.returncode == 128 + signal.SIGTERM, output[-3000:]
    assert "lit-block fit: stopped by SIGTERM" in output
    assert [r.info.status for r in runs_of(tmp_path)] == ["KILLED"]


def test_a_resumed_fit_continues_its_mlflow_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    main(["fit", *BORING, "--trainer.max_steps=2", "--trainer.log_every_n_steps=1"])
    (run,) = runs_of(tmp_path)
    (ckpt,) = tmp_path.rglob("*.ckpt")
    assert torch.load(ckpt, weights_only=False)["lit_block_mlflow"]["run_id"] == run.info.run_id
    capsys.readouterr()
    main(["fit", *BORING, "--trainer.max_steps=4", f"--ckpt_path={ckpt}"])
    assert f"continuing MLflow run {run.info.run_id}" in capsys.readouterr().out
    (again,) = runs_of(tmp_path)  # no second run
    assert again.info.run_id == run.info.run_id and again.info.status == "FINISHED"


def test_a_nan_loss_stops_training_and_fails_the_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    nan_model = f"--model={__name__}.NanAtStepTwo"
    assert main(["fit", *BORING, nan_model, "--trainer.max_steps=5", "--trainer.enable_checkpointing=false"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("lit-block fit: training loss is nan at global step 2"), err
    (run,) = runs_of(tmp_path)
    assert run.info.status == "FAILED"


def test_bad_checkpoint_yaml_and_store_fail_in_one_line_naming_them(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)

    def error_line(*args: str) -> str:
        assert main(["fit", *BORING, *args]) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err, err
        return err.strip().splitlines()[-1]  # (Lightning's warnings may come before it)

    text = tmp_path / "notes.ckpt"
    text.write_text("hello, not a checkpoint\n")
    assert error_line(f"--ckpt_path={text}").startswith(f"lit-block fit: --ckpt_path {text} is not a Lightning checkpoint")
    bad = tmp_path / "bad.yaml"
    bad.write_text("trainer:\n  max_steps: 2\n  callbacks: [a\n  logger: false\n")
    assert error_line(f"--config={bad}").startswith(f"lit-block fit: --config {bad}: YAML syntax error at line 4")
    (tmp_path / "mlflow.db").write_text("this is not a database\n")
    assert f"{tmp_path / 'mlflow.db'} is not an sqlite database" in error_line("--trainer.max_steps=1")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # nothing listens on the discard port
    started = time.monotonic()
    assert "MLflow tracking server http://127.0.0.1:9 does not answer" in error_line("--trainer.max_steps=1")
    assert time.monotonic() - started < 20
