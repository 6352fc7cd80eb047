"""Opening lit-block's MLflow tracking store safely: created once under a lock, checked, and tidied.

``ready_store(uri)`` runs once per process before anything uses the store: for sqlite it creates and
migrates the database while holding an exclusive lock on ``<db>.lock`` (two commands started together
in an empty folder would otherwise both migrate it, and lose runs), and refuses a file that is not an
MLflow sqlite store; for ``http(s)://`` it checks the server answers, so an unreachable URI fails in
seconds; then it marks KILLED the runs this host's dead processes left RUNNING.
"""

from __future__ import annotations

import os
import socket
import ssl
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lit_block.child_processes import pid_alive
from lit_block.errors import UsageError, one_line

PID_TAG, HOST_TAG = "lit_block.pid", "lit_block.host"
SQLITE_MAGIC = b"SQLite format 3\x00"  # the first 16 bytes of every sqlite database file
# MLflow's HTTP defaults (7 retries with exponential backoff, 120 s per request) make an unreachable
# server look like a hang of minutes; lit-block's processes use these unless the user set them
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3", "MLFLOW_HTTP_REQUEST_TIMEOUT": "60"}
_ready: set[str] = set()  # stores this process has already checked (once per process is enough)


def ready_store(uri: str, create: bool = True) -> None:
    """Check (and for sqlite, create and migrate under a lock) the store at ``uri``, once per process;
    then mark the runs of dead lit-block processes of this host KILLED. ``create=False`` refuses a
    sqlite database that does not exist instead of creating it."""
    if uri in _ready:
        return
    for name, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(name, value)  # inherited by the commands this one starts (sweep points)
    if uri.startswith(("http://", "https://")):
        check_server(uri)
    elif uri.startswith("sqlite:"):
        init_sqlite(uri, create)
    else:
        return  # other stores (file, databricks, ...) are MLflow's business
    _ready.add(uri)
    end_dead_runs(uri)


def check_server(uri: str, timeout: float = 5.0) -> None:
    """A tracking server must answer its ``/health`` within ``timeout`` seconds."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout):
            return
    except urllib.error.HTTPError:
        return  # it answered (auth, a proxy path ...): reachable; MLflow reports anything else itself
    except (OSError, ValueError) as err:  # refused, timed out, unknown host, malformed URL
        reason = getattr(err, "reason", err)
        if isinstance(reason, ssl.SSLError):
            return  # it answered; MLflow has its own TLS settings (MLFLOW_TRACKING_INSECURE_TLS, a CA bundle)
        raise UsageError(f"the MLflow tracking server {uri} does not answer ({reason}); check MLFLOW_TRACKING_URI "
                         "or start the server") from err


def sqlite_path(uri: str) -> Path:
    path = uri.removeprefix("sqlite:").split("?", 1)[0].lstrip("/")  # without SQLAlchemy's ?options
    return Path("/" + path if uri.startswith("sqlite:////") else path)  # sqlite:////abs vs sqlite:///rel


@contextmanager
def store_lock(db: Path) -> Iterator[None]:
    """An exclusive inter-process lock on ``<db>.lock`` (released when the holder ends, even killed)."""
    import fcntl

    with open(db.with_name(db.name + ".lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # blocks while another command creates or migrates the database
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def init_sqlite(uri: str, create: bool) -> None:
    """Create and migrate the sqlite store under its lock; a missing (when not ``create``) or foreign
    file is an error naming it."""
    import mlflow

    db = sqlite_path(uri)
    if not db.name:
        return  # an in-memory database: nothing to share, nothing to lock
    if db.is_dir():
        raise UsageError(f"the tracking database {db} is a folder, not an sqlite file")
    if not create and not db.is_file():
        raise UsageError(f"no tracking database exists at {db} (run a lit-block command there first, or set "
                         "MLFLOW_TRACKING_URI)")
    db.parent.mkdir(parents=True, exist_ok=True)
    with store_lock(db):
        db.touch()  # an empty file is an empty sqlite database
        with open(db, "rb") as handle:
            head = handle.read(16)
        if head and head != SQLITE_MAGIC:
            raise UsageError(f"{db} is not an sqlite database (not an MLflow tracking store); move it aside or set "
                             "MLFLOW_TRACKING_URI")
        try:
            mlflow.MlflowClient(tracking_uri=uri)  # builds the store: creates or migrates the tables, cached per process
        except Exception as err:  # a damaged or half-migrated database: say which file
            raise UsageError(f"{db} cannot be opened as an MLflow tracking database: {one_line(err)}") from err


def end_dead_runs(uri: str) -> list[str]:
    """Mark KILLED the runs left RUNNING by lit-block processes of this host that no longer exist
    (killed with SIGKILL, out of memory, the machine rebooted); returns their ids."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    if not experiments:
        return []
    runs = client.search_runs(experiments, f"attributes.status = 'RUNNING' and tags.`{HOST_TAG}` = '{socket.gethostname()}'",
                              max_results=1000)
    ended = []
    for run in runs:
        pid = run.data.tags.get(PID_TAG, "")
        if pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
            client.set_terminated(run.info.run_id, "KILLED")
            ended.append(run.info.run_id)
            print(f"MLflow run {run.info.run_id} ({run.info.run_name}) was left RUNNING by process {pid}, which is "
                  "gone: marked KILLED", file=sys.stderr, flush=True)
    return ended
