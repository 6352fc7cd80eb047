"""Child processes that end with their parent, and questions about processes (Linux's ``/proc`` where there is one).

``start_group`` starts a command as the leader of its own process group that gets SIGTERM from the
kernel when this process dies, even by SIGKILL; ``stop_group`` stops a whole group (SIGTERM, then
SIGKILL after a grace period). The sweep's points and its mlflow server run this way.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (a zombie counts as dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (not Linux): trust kill
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def die_with_parent(sig: int = signal.SIGTERM):
    """A ``preexec_fn`` under which the child gets ``sig`` when this process dies, even by SIGKILL
    (Linux's ``PR_SET_PDEATHSIG``); ``None`` elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)  # loaded here, in the parent: nothing is loaded between fork and exec
    parent = os.getpid()

    def preexec() -> None:
        libc.prctl(1, int(sig), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before prctl: no signal would ever come
            os.kill(os.getpid(), sig)

    return preexec


def start_group(cmd: list[str], **popen) -> subprocess.Popen:
    """Start ``cmd`` as the leader of a new process group (its children join it) that dies with this process."""
    return subprocess.Popen(cmd, start_new_session=True, preexec_fn=die_with_parent(), **popen)


def group_members(pgid: int) -> list[int]:
    """The live (not zombie) processes of process group ``pgid``, from Linux's ``/proc`` (elsewhere
    ``[pgid]`` while the group exists)."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return []
        return [pgid]
    members = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()  # after "(comm)", which may hold spaces
        except (OSError, IndexError):
            continue  # ended while we looked
        if fields[0] != "Z" and int(fields[2]) == pgid:  # fields: state, ppid, pgrp, ...
            members.append(int(entry.name))
    return members


def stop_group(pgid: int, grace: float = 10.0, leader: subprocess.Popen | None = None) -> None:
    """SIGTERM to process group ``pgid``, SIGKILL to what is left of it after ``grace`` seconds."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break  # nothing left
        deadline = time.monotonic() + grace
        while group_members(pgid) and time.monotonic() < deadline:
            if leader is not None:
                leader.poll()  # reap our own child: a zombie leader would keep the group id in use
            time.sleep(0.1)
        if not group_members(pgid):
            break
    if leader is not None:
        try:
            leader.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""
