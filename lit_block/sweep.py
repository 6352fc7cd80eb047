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

The points and the server end with the sweep: each runs in its own process group, which the sweep
stops on its way out (Ctrl-C or SIGTERM: the points get SIGTERM, then SIGKILL after a grace
period; the parent run ends KILLED), and on Linux each gets SIGTERM from the kernel when the sweep
dies, even by SIGKILL. The server's process group is written to ``<log-dir>/<name>/mlflow-server.pid``,
so that a server left by a killed sweep is stopped by the next one.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from lit_block.child_processes import cmdline, group_members, start_group, stop_group


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


def point_name(spec: SweepSpec, point: dict) -> str:
    """A child run's name: the sweep's and the swept values, each under its key's last part
    (``granularity: granularity=64``), so the MLflow UI's run list says what each run is."""
    values = " ".join(f"{key.rsplit('.', 1)[-1]}={json.dumps(v) if isinstance(v, (list, dict)) else v}"
                      for key, v in point.items())
    return f"{spec.name}: {values}"[:250]


def point_args(spec: SweepSpec, point: dict) -> list[str]:
    """The lit-block arguments of one point: the command, the point's values, then the extra arguments."""
    values = [f"--{key}={json.dumps(v) if isinstance(v, (list, dict)) else v}" for key, v in point.items()]
    return [*spec.command, *values, *spec.extra]


# ---------------------------------------------------------------- the local mlflow server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_stale_server(pid_file: Path) -> None:
    """Stop the ``mlflow server`` that a killed sweep left running (its process group is in ``pid_file``)."""
    try:
        record = json.loads(pid_file.read_text())
        pgid, port = int(record["pgid"]), str(record["port"])
    except FileNotFoundError:
        return
    except (OSError, ValueError, KeyError, TypeError):
        pid_file.unlink(missing_ok=True)  # unreadable: nothing to act on safely
        return
    # still that server only if a process of the group is an mlflow server on the recorded port (ids get reused)
    if any("mlflow" in cmdline(pid) and port in cmdline(pid) for pid in group_members(pgid)):
        print(f"stopping the mlflow server on port {port} (process group {pgid}) left by a killed sweep",
              file=sys.stderr, flush=True)
        stop_group(pgid)
    pid_file.unlink(missing_ok=True)


class LocalMlflowServer:
    """``mlflow server`` on 127.0.0.1 over the sqlite store, for parallel writers; stopped on exit, and
    recorded in ``mlflow-server.pid`` beside its log so that the next sweep stops it if this one is killed."""

    def __init__(self, backend_uri: str, artifact_root: str, log: Path):
        self.pid_file = log.with_name("mlflow-server.pid")
        stop_stale_server(self.pid_file)
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_uri, "--default-artifact-root",
               artifact_root, "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"]
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no job runner: processes a sweep never uses
        self.log = open(log, "w")
        self.process = start_group(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        self.pid_file.write_text(json.dumps({"pgid": self.process.pid, "port": self.port}))

    def __enter__(self) -> LocalMlflowServer:
        import urllib.request

        deadline = time.monotonic() + 60
        try:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"mlflow server exited with {self.process.returncode}; see {self.log.name}")
                try:
                    with urllib.request.urlopen(f"{self.uri}/health", timeout=2):
                        return self
                except OSError:
                    time.sleep(0.5)
            raise RuntimeError(f"mlflow server did not answer on {self.uri} within 60 s; see {self.log.name}")
        except BaseException:  # failed or interrupted while starting: stop what did start
            self.__exit__()
            raise

    def __exit__(self, *exc) -> None:
        stop_group(self.process.pid, grace=15, leader=self.process)
        self.pid_file.unlink(missing_ok=True)
        self.log.close()


# ---------------------------------------------------------------- runs and points


def find_or_create_parent(client, experiment_id: str, spec: SweepSpec, restart: bool) -> tuple[str, bool]:
    """The sweep's parent run (found by name and digest unless ``restart``), and whether it was found; a
    found one is RUNNING again, in this process."""
    from lit_block.tracking import process_tags, sweep_context

    if not restart:
        found = client.search_runs([experiment_id], filter_string=(
            f"tags.`lit_block.sweep` = '{spec.name}' and tags.`lit_block.sweep_digest` = '{spec.digest}'"))
        if found:
            run_id = found[0].info.run_id
            client.update_run(run_id, status="RUNNING")
            for key, value in process_tags().items():  # this process runs it now (a dead one marks it KILLED)
                client.set_tag(run_id, key, value)
            return run_id, True
    run = client.create_run(experiment_id, run_name=spec.name, tags={
        **sweep_context()["tags"],  # a workflow above the sweep (the pipeline) links its runs by tag
        "lit_block.sweep": spec.name, "lit_block.sweep_digest": spec.digest, "lit_block.subcommand": "sweep",
        **process_tags()})
    client.log_param(run.info.run_id, "command", " ".join(spec.command)[:250])
    client.log_param(run.info.run_id, "points", str(len(spec.points)))  # strings: MLflow's REST store takes no ints
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
    """Start one point as ``python -m lit_block.cli ...`` with its MLflow placement in the environment, in its
    own process group (stopped by the sweep's clean-up, or signalled by the kernel if the sweep dies)."""
    from lit_block.tracking import sweep_context

    inherited = {k: v for k, v in sweep_context()["tags"].items() if k != "mlflow.parentRunId"}  # e.g. the pipeline's
    tags = {**inherited, "mlflow.parentRunId": parent_id, "lit_block.sweep": spec.name, "sweep.point": point_digest(point),
            **{f"sweep.{k}": json.dumps(v) if isinstance(v, (list, dict)) else str(v) for k, v in point.items()}}
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, "LIT_BLOCK_MLFLOW_EXPERIMENT": spec.experiment,
           "LIT_BLOCK_MLFLOW_RUN_NAME": point_name(spec, point), "LIT_BLOCK_MLFLOW_TAGS": json.dumps(tags)}
    handle = open(log, "w")
    cmd = [sys.executable, "-m", "lit_block.cli", *point_args(spec, point)]
    handle.write(" ".join(cmd) + "\n\n")
    handle.flush()
    return start_group(cmd, env=env, stdout=handle, stderr=subprocess.STDOUT), handle


def stop_points(running: list, grace: float = 20.0) -> None:
    """End running points: SIGTERM to every group at once (their runs end KILLED), SIGKILL after ``grace`` s."""
    for _, _, proc, _ in running:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for _, _, proc, handle in running:
        stop_group(proc.pid, grace=grace, leader=proc)
        handle.close()
    running.clear()


def run_points(spec: SweepSpec, todo: list[tuple[int, dict]], parent_id: str, tracking_uri: str, log_dir: Path,
               parallel: int) -> dict[int, int]:
    """Run the points, ``parallel`` at a time, with a progress bar; returns each point's exit status. On any
    exception (Ctrl-C, SIGTERM) the running points are stopped before it goes on."""
    from tqdm import tqdm

    pending, running, status = list(todo), [], {}
    with tqdm(total=len(todo), desc=f"sweep {spec.name}", unit="point") as bar:
        try:
            while pending or running:
                while pending and len(running) < parallel:
                    index, point = pending.pop(0)
                    log = log_dir / f"{index:02d}.log"
                    running.append((index, point, *launch_point(spec, index, point, parent_id, tracking_uri, log)))
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
        finally:
            if running:
                tqdm.write(f"stopping {len(running)} running point(s) of sweep {spec.name}")
                stop_points(running)
    return status


def summary(client, experiment_id: str, parent_id: str, spec: SweepSpec, metrics: list[str] | None) -> str:
    """A markdown table of the sweep's child runs: swept values, status and metrics."""
    order = {point_digest(point): i for i, point in enumerate(spec.points)}  # the sweep file's order, not the names'
    runs = sorted(child_runs(client, experiment_id, parent_id),
                  key=lambda r: (order.get(r.data.tags.get("sweep.point"), len(order)), r.info.run_name or ""))
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
    """Run (or resume) a sweep; returns the parent run id and whether every point finished. Ctrl-C or SIGTERM
    stops the points and the server, marks the parent run (and unfinished children) KILLED, and re-raises."""
    import mlflow

    from lit_block.tracking import (default_artifact_location, get_or_create_experiment, interrupts_as_exceptions,
                                    tracking_uri, was_interrupted)

    with interrupts_as_exceptions():  # SIGTERM and Ctrl-C unwind through the clean-up below (a second one is ignored)
        uri = tracking_uri()  # created under its lock, checked, dead processes' runs marked KILLED
        client = mlflow.MlflowClient(tracking_uri=uri)
        experiment_id = get_or_create_experiment(client, spec.experiment, default_artifact_location(uri))
        parent_id, resumed = find_or_create_parent(client, experiment_id, spec, restart)
        try:
            done = finished_points(client, experiment_id, parent_id) if resumed else set()
            points = list(enumerate(spec.points))[:max_points]
            todo = [(i, p) for i, p in points if point_digest(p) not in done]
            print(f"sweep {spec.name!r}: {len(points)} points, {len(points) - len(todo)} already finished "
                  f"({'resumed' if resumed else 'new'} parent run {parent_id} in experiment {spec.experiment!r})",
                  flush=True)
            log_dir = Path(log_root) / spec.name
            log_dir.mkdir(parents=True, exist_ok=True)
            workers = parallel or spec.parallel
            if workers > 1 and uri.startswith("sqlite:"):
                artifacts = default_artifact_location(uri) or str(Path("mlartifacts").resolve())
                with LocalMlflowServer(uri, artifacts, log_dir / "mlflow-server.log") as server:
                    status = run_points(spec, todo, parent_id, server.uri, log_dir, workers)
            else:
                status = run_points(spec, todo, parent_id, uri, log_dir, workers)
        except BaseException:  # the points and the server are stopped by now: record how the sweep ended
            killed = was_interrupted()
            finished_points(client, experiment_id, parent_id)  # children left RUNNING by stopped points: KILLED
            client.set_terminated(parent_id, "KILLED" if killed else "FAILED")
            if killed:
                print(f"sweep {spec.name!r} stopped: parent run {parent_id} marked KILLED; run the same command to "
                      "resume", file=sys.stderr, flush=True)
            raise
    ok = all(code == 0 for code in status.values())
    client.set_terminated(parent_id, "FINISHED" if ok else "FAILED")
    print("\n" + summary(client, experiment_id, parent_id, spec, metrics), flush=True)
    return parent_id, ok


def build_parser():
    from lit_block.command_line import command_parser

    p = command_parser("lit-block sweep", __doc__)
    p.add_argument("spec", help="a sweep file (experiments/sweeps/*.yaml)")
    p.add_argument("--parallel", type=int, default=None, help="points at a time (default: the file's, else 1)")
    p.add_argument("--restart", action="store_true", help="start a new parent run instead of resuming")
    p.add_argument("--max-points", type=int, default=None, help="run only the first N points")
    p.add_argument("--extra", action="append", default=[], help="an argument appended to every point, as --extra=--key=value")
    p.add_argument("--metrics", nargs="*", default=None, help="metrics in the summary table")
    p.add_argument("--log-dir", default="sweeps", help="where each point's output is kept (<log-dir>/<name>/NN.log)")
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        spec = load_spec(args.spec)
    except (FileNotFoundError, ValueError) as err:
        print(f"lit-block sweep: {err}", file=sys.stderr)
        return 2
    if args.extra:
        spec = replace(spec, extra=tuple(args.extra))
    try:
        parent, ok = run_sweep(spec, args.parallel, args.restart, args.max_points, args.metrics, args.log_dir)
    except KeyboardInterrupt:  # Ctrl-C: reported by run_sweep; the shell's status for SIGINT
        return 128 + signal.SIGINT
    print(f"\ncompare: lit-block compare --experiment {spec.experiment} --parent {parent}")
    return 0 if ok else 1
