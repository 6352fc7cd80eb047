"""``lit-block sweep``: one lit-block command over a grid (or list) of config values, tracked in MLflow.

    lit-block sweep experiments/sweeps/granularity.yaml               # sequential, resumes if interrupted
    lit-block sweep experiments/sweeps/granularity.yaml --parallel 2  # workers against a local mlflow server

A sweep file names the command every point runs and the values to sweep::

    name: granularity            # the parent run's name
    experiment: sweeps           # MLflow experiment of the parent and its children
    command: [validate, --config, experiments/distill/references.yaml]
    grid:                        # every combination; or `points:`, a list of {key: value} maps
      data.init_args.granularity: [64, 128, 256]

Each point runs ``lit-block <command> --<key>=<value> ...`` in its own process, as an MLflow child
run of one parent run (tag ``mlflow.parentRunId``), tagged ``sweep.<key>`` with its values. Run
again, the same sweep file finds its parent run and skips the points that already finished.
With ``--parallel N`` the points run N at a time against an ``mlflow server`` that the command
starts on 127.0.0.1 (many writers on one sqlite file would lock) and stops at the end.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path


@dataclass(frozen=True)
class SweepSpec:
    """A parsed sweep file. ``points`` holds every point as ``{config key: value}``."""

    name: str
    experiment: str
    command: tuple[str, ...]
    points: tuple[dict, ...]
    parallel: int = 1
    source: str = ""  # the file it came from (for messages)
    extra: tuple[str, ...] = field(default=())  # arguments appended to every point (e.g. from the command line)

    @property
    def digest(self) -> str:
        """Identifies the sweep across restarts: same command and points -> same parent run."""
        body = json.dumps([self.command, self.points, self.extra], sort_keys=True, default=str)
        return hashlib.sha256(body.encode()).hexdigest()[:16]


def point_digest(point: dict) -> str:
    return hashlib.sha256(json.dumps(point, sort_keys=True, default=str).encode()).hexdigest()[:16]


def load_spec(path: str | Path) -> SweepSpec:
    """Read and check a sweep file; every problem names the file and the key."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"sweep file not found: {path}")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: a sweep file is a mapping with name, command and grid or points")
    unknown = set(raw) - {"name", "experiment", "command", "grid", "points", "parallel"}
    if unknown:
        raise ValueError(f"{path}: unknown keys {sorted(unknown)}; expected name, experiment, command, grid or points, parallel")
    for key in ("name", "command"):
        if not raw.get(key):
            raise ValueError(f"{path}: missing key {key!r}")
    command = raw["command"]
    if isinstance(command, str):
        command = command.split()
    if not isinstance(command, list) or not all(isinstance(c, (str, int, float)) for c in command):
        raise ValueError(f"{path}: 'command' must be a list of arguments, got {command!r}")
    if ("grid" in raw) == ("points" in raw):
        raise ValueError(f"{path}: give exactly one of 'grid' (values per key) or 'points' (a list of maps)")
    if "grid" in raw:
        grid = raw["grid"]
        if not isinstance(grid, dict) or not grid or not all(isinstance(v, list) and v for v in grid.values()):
            raise ValueError(f"{path}: 'grid' maps each config key to a non-empty list of values, got {grid!r}")
        points = [dict(zip(grid, combo)) for combo in itertools.product(*grid.values())]
    else:
        points = raw["points"]
        if not isinstance(points, list) or not points or not all(isinstance(p, dict) and p for p in points):
            raise ValueError(f"{path}: 'points' must be a non-empty list of {{key: value}} maps")
    parallel = raw.get("parallel", 1)
    if not isinstance(parallel, int) or parallel < 1:
        raise ValueError(f"{path}: 'parallel' must be a positive integer, got {parallel!r}")
    return SweepSpec(name=str(raw["name"]), experiment=str(raw.get("experiment", "sweeps")),
                     command=tuple(str(c) for c in command), points=tuple(points), parallel=parallel, source=str(path))


def point_args(spec: SweepSpec, point: dict) -> list[str]:
    """The lit-block arguments of one point: the command, the point's values, then the extra arguments."""
    values = [f"--{key}={json.dumps(v) if isinstance(v, (list, dict)) else v}" for key, v in point.items()]
    return [*spec.command, *values, *spec.extra]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalMlflowServer:
    """``mlflow server`` on 127.0.0.1 over the sqlite store, for parallel writers; stopped on exit."""

    def __init__(self, backend_uri: str, artifact_root: str, log: Path):
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_uri, "--default-artifact-root",
               artifact_root, "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"]
        self.log = open(log, "w")
        self.process = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)

    def __enter__(self) -> LocalMlflowServer:
        import urllib.request

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mlflow server exited with {self.process.returncode}; see {self.log.name}")
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2):
                    return self
            except OSError:
                time.sleep(0.5)
        self.__exit__()
        raise RuntimeError(f"mlflow server did not answer on {self.uri} within 60 s; see {self.log.name}")

    def __exit__(self, *exc) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


def find_or_create_parent(client, experiment_id: str, spec: SweepSpec, restart: bool) -> tuple[str, bool]:
    """The sweep's parent run (found by name and digest unless ``restart``), and whether it was found."""
    if not restart:
        found = client.search_runs([experiment_id], filter_string=(
            f"tags.`lit_block.sweep` = '{spec.name}' and tags.`lit_block.sweep_digest` = '{spec.digest}'"))
        if found:
            return found[0].info.run_id, True
    run = client.create_run(experiment_id, run_name=spec.name, tags={
        "lit_block.sweep": spec.name, "lit_block.sweep_digest": spec.digest, "lit_block.subcommand": "sweep"})
    client.log_param(run.info.run_id, "command", " ".join(spec.command)[:250])
    client.log_param(run.info.run_id, "points", len(spec.points))
    client.log_text(run.info.run_id, json.dumps({"command": spec.command, "points": spec.points, "extra": spec.extra},
                                                indent=1, default=str), "sweep.json")
    return run.info.run_id, False


def child_runs(client, experiment_id: str, parent_id: str) -> list:
    return client.search_runs([experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}'")


def finished_points(client, experiment_id: str, parent_id: str) -> set[str]:
    """Digests of the points with a finished child run; children left running by an interrupt are marked KILLED."""
    done = set()
    for run in child_runs(client, experiment_id, parent_id):
        if run.info.status == "FINISHED":
            done.add(run.data.tags.get("sweep.point"))
        elif run.info.status == "RUNNING":
            client.set_terminated(run.info.run_id, "KILLED")
    return done


def launch_point(spec: SweepSpec, index: int, point: dict, parent_id: str, tracking_uri: str, log: Path):
    """Start one point as ``python -m lit_block.cli ...`` with its MLflow placement in the environment."""
    tags = {"mlflow.parentRunId": parent_id, "lit_block.sweep": spec.name, "sweep.point": point_digest(point),
            **{f"sweep.{k}": json.dumps(v) if isinstance(v, (list, dict)) else str(v) for k, v in point.items()}}
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, "LIT_BLOCK_MLFLOW_EXPERIMENT": spec.experiment,
           "LIT_BLOCK_MLFLOW_RUN_NAME": f"{spec.name}-{index:02d}", "LIT_BLOCK_MLFLOW_TAGS": json.dumps(tags)}
    handle = open(log, "w")
    cmd = [sys.executable, "-m", "lit_block.cli", *point_args(spec, point)]
    handle.write(" ".join(cmd) + "\n\n")
    handle.flush()
    return subprocess.Popen(cmd, env=env, stdout=handle, stderr=subprocess.STDOUT), handle


def run_points(spec: SweepSpec, todo: list[tuple[int, dict]], parent_id: str, tracking_uri: str, log_dir: Path,
               parallel: int) -> dict[int, int]:
    """Run the points, ``parallel`` at a time, with a progress bar; returns each point's exit status."""
    from tqdm import tqdm

    pending, running, status = list(todo), [], {}
    with tqdm(total=len(todo), desc=f"sweep {spec.name}", unit="point") as bar:
        while pending or running:
            while pending and len(running) < parallel:
                index, point = pending.pop(0)
                proc, handle = launch_point(spec, index, point, parent_id, tracking_uri, log_dir / f"{index:02d}.log")
                running.append((index, point, proc, handle))
            time.sleep(0.5)
            for item in list(running):
                index, point, proc, handle = item
                if proc.poll() is None:
                    continue
                running.remove(item)
                handle.close()
                status[index] = proc.returncode
                bar.update(1)
                if proc.returncode:
                    tail = (log_dir / f"{index:02d}.log").read_text()[-2000:]
                    tqdm.write(f"point {index} {point} failed (exit {proc.returncode}); log {log_dir / f'{index:02d}.log'}:\n{tail}")
    return status


def summary(client, experiment_id: str, parent_id: str, spec: SweepSpec, metrics: list[str] | None) -> str:
    """A markdown table of the sweep's child runs: swept values, status and metrics."""
    runs = sorted(child_runs(client, experiment_id, parent_id), key=lambda r: r.info.run_name or "")
    keys = list(spec.points[0])
    names = metrics or sorted({m for r in runs for m in r.data.metrics})[:6]
    lines = ["| run | " + " | ".join(keys) + " | status | " + " | ".join(names) + " |", "|---" * (len(keys) + len(names) + 2) + "|"]
    for r in runs:
        values = [r.data.tags.get(f"sweep.{k}", "-") for k in keys]
        figures = [f"{r.data.metrics[m]:.4g}" if m in r.data.metrics else "-" for m in names]
        lines.append(f"| {r.info.run_name} | " + " | ".join(values) + f" | {r.info.status} | " + " | ".join(figures) + " |")
    return "\n".join(lines)


def run_sweep(spec: SweepSpec, parallel: int | None = None, restart: bool = False, max_points: int | None = None,
              metrics: list[str] | None = None, log_root: str = "sweeps") -> tuple[str, bool]:
    """Run (or resume) a sweep; returns the parent run id and whether every point finished."""
    import mlflow

    from lit_block.tracking import default_artifact_location, default_tracking_uri

    uri = default_tracking_uri()
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(spec.experiment)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(
        spec.experiment, artifact_location=default_artifact_location(uri))
    parent_id, resumed = find_or_create_parent(client, experiment_id, spec, restart)
    done = finished_points(client, experiment_id, parent_id) if resumed else set()
    points = list(enumerate(spec.points))[:max_points]
    todo = [(i, p) for i, p in points if point_digest(p) not in done]
    print(f"sweep {spec.name!r}: {len(points)} points, {len(points) - len(todo)} already finished "
          f"({'resumed' if resumed else 'new'} parent run {parent_id} in experiment {spec.experiment!r})", flush=True)
    log_dir = Path(log_root) / spec.name
    log_dir.mkdir(parents=True, exist_ok=True)
    workers = parallel or spec.parallel
    if workers > 1 and uri.startswith("sqlite:"):
        artifacts = default_artifact_location(uri) or str(Path("mlartifacts").resolve())
        with LocalMlflowServer(uri, artifacts, log_dir / "mlflow-server.log") as server:
            status = run_points(spec, todo, parent_id, server.uri, log_dir, workers)
    else:
        status = run_points(spec, todo, parent_id, uri, log_dir, workers)
    ok = all(code == 0 for code in status.values())
    client.set_terminated(parent_id, "FINISHED" if ok else "FAILED")
    print("\n" + summary(client, experiment_id, parent_id, spec, metrics), flush=True)
    return parent_id, ok


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="lit-block sweep", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("spec", help="a sweep file (experiments/sweeps/*.yaml)")
    p.add_argument("--parallel", type=int, default=None, help="points at a time (default: the file's, else 1)")
    p.add_argument("--restart", action="store_true", help="start a new parent run instead of resuming")
    p.add_argument("--max-points", type=int, default=None, help="run only the first N points")
    p.add_argument("--extra", action="append", default=[], help="an argument appended to every point, as --extra=--key=value")
    p.add_argument("--metrics", nargs="*", default=None, help="metrics in the summary table")
    p.add_argument("--log-dir", default="sweeps", help="where each point's output is kept (<log-dir>/<name>/NN.log)")
    args = p.parse_args(argv)
    try:
        spec = load_spec(args.spec)
    except (FileNotFoundError, ValueError) as err:
        print(f"lit-block sweep: {err}", file=sys.stderr)
        return 2
    if args.extra:
        spec = replace(spec, extra=tuple(args.extra))
    parent, ok = run_sweep(spec, args.parallel, args.restart, args.max_points, args.metrics, args.log_dir)
    print(f"\ncompare: lit-block compare --experiment {spec.experiment} --parent {parent}")
    return 0 if ok else 1
