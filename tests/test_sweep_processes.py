"""A sweep's processes end with it: killed (SIGKILL) or stopped (SIGTERM), it leaves no mlflow server and
no point running, its runs end KILLED, and a server a killed sweep left behind is stopped by the next."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from idle_model import IDLE_MODEL, with_tests_on_path
from lit_block.sweep import group_members, stop_stale_server
from test_sweep_compare import mlflow_client, processes_mentioning

POINT = ["fit", IDLE_MODEL,
         "--data=lightning.pytorch.demos.boring_classes.BoringDataModule", "--trainer.accelerator=cpu",
         "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false", "--trainer.limit_val_batches=0",
         "--trainer.enable_checkpointing=false", "--trainer.max_epochs=-1"]  # trains until stopped, idly


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def sweep_runs(folder: Path) -> list:
    from lit_block.tracking_store import store_lock

    with store_lock(folder / "mlflow.db"):  # the sweep may be creating the database
        client = mlflow_client(folder)
    experiment = client.get_experiment_by_name("sweeps")
    return client.search_runs([experiment.experiment_id]) if experiment else []


def children(folder: Path, status: str | None = None) -> int:
    """How many child runs the sweep has (with ``status``, if given)."""
    return sum(1 for r in sweep_runs(folder) if "mlflow.parentRunId" in r.data.tags and status in (None, r.info.status))


def start_sweep(folder: Path) -> subprocess.Popen:
    env = with_tests_on_path({k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"})  # the idle model
    env["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"  # points whose server is gone give up at once (the test's time)
    return subprocess.Popen([sys.executable, "-m", "lit_block.cli", "sweep", "sweep.yaml", "--log-dir", str(folder / "logs")],
                            cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_killed_or_stopped_sweeps_leave_no_processes_and_mark_their_runs_killed(tmp_path):
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump({
        "name": "forever", "experiment": "sweeps", "parallel": 2, "command": POINT,
        "grid": {"trainer.default_root_dir": [str(tmp_path / "a"), str(tmp_path / "b")]}}))
    pid_file = tmp_path / "logs" / "forever" / "mlflow-server.pid"
    sweep = start_sweep(tmp_path)
    try:
        wait_for(lambda: sweep.poll() is None and children(tmp_path, "RUNNING") == 2, 150, "two running points")
        assert pid_file.is_file()
        sweep.kill()  # SIGKILL: the sweep cleans nothing up; the kernel signals its children
        sweep.wait()
        wait_for(lambda: not processes_mentioning(str(tmp_path)), 30, "the server and the points to end")

        sweep = start_sweep(tmp_path)  # resumes the same parent run
        wait_for(lambda: sweep.poll() is None and children(tmp_path) == 4 and children(tmp_path, "RUNNING") == 2, 150,
                 "two new running points")
        sweep.send_signal(signal.SIGTERM)
        assert sweep.wait(timeout=90) == 128 + signal.SIGTERM
    finally:
        sweep.kill()
        output = sweep.communicate()[0]
    assert "marked KILLED" in output, output[-3000:]
    assert not processes_mentioning(str(tmp_path)) and not pid_file.exists()
    runs = sweep_runs(tmp_path)
    (parent,) = [r for r in runs if r.data.tags.get("lit_block.subcommand") == "sweep"]
    assert parent.info.status == "KILLED"
    points = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(points) == 4 and {r.info.status for r in points} == {"KILLED"}


def test_the_next_sweep_stops_a_server_a_killed_sweep_left(tmp_path):
    def fake(*words: str) -> subprocess.Popen:  # a process group whose leader's command line looks like words
        return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", *words], start_new_session=True)

    server, stranger = fake("mlflow", "server", "--port", "5123"), fake("something", "else", "5123")
    try:
        pid_file = tmp_path / "mlflow-server.pid"
        pid_file.write_text(json.dumps({"pgid": stranger.pid, "port": 5123}))
        stop_stale_server(pid_file)  # not an mlflow server: a reused process id, left alone
        assert stranger.poll() is None and not pid_file.exists()
        pid_file.write_text(json.dumps({"pgid": server.pid, "port": 5123}))
        stop_stale_server(pid_file)
        assert server.wait(timeout=15) == -signal.SIGTERM and not group_members(server.pid)
        assert not pid_file.exists()
    finally:
        for proc in (server, stranger):
            proc.kill()
            proc.wait()
