"""Output folders written whole or not at all, and never over a folder lit-block did not write.

    with output_dir("data/semanticseg", overwrite=args.overwrite, command="data build") as staging:
        write_everything_into(staging)       # nothing at data/semanticseg changes until this succeeds

The folder is built in a fresh staging folder beside it (``.NAME.staging-PID-RANDOM``), marked as
lit-block's (a ``.lit-block-output`` file inside), then moved into place with two renames, so a
reader sees the old folder or the new one, never a mix. An existing folder is replaced only when it
is empty or lit-block wrote it, unless ``overwrite``; a file is never replaced. Staging folders of
a killed command are removed by the next one, and a previous folder that a killed swap had moved
aside is put back. Folders get the ordinary permissions (``0777`` less the umask).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lit_block.child_processes import pid_alive
from lit_block.errors import OutputExistsError, UsageError

MARKER = ".lit-block-output"
_LEFTOVER = re.compile(r"^\.(?P<name>.+)\.(?P<kind>staging|old)-(?P<pid>\d+)-[0-9a-f]+$")


def is_lit_block_output(path: Path, signature: str | None = None) -> bool:
    """Whether lit-block wrote the folder: its marker, or ``signature``, a file that only this kind of output holds
    (outputs written before the marker existed)."""
    return (path / MARKER).is_file() or (signature is not None and (path / signature).is_file())


def check_output(path: str | Path, overwrite: bool = False, option: str = "--output", signature: str | None = None) -> Path:
    """Refuse, before any work, an output path that lit-block may not replace; returns it as a ``Path``."""
    path = Path(path)
    if path.is_symlink() or path.is_file() or (path.exists() and not path.is_dir()):
        raise OutputExistsError(f"{option} {path} exists and is not a folder; give a folder path")
    if path.is_dir() and any(path.iterdir()) and not is_lit_block_output(path, signature) and not overwrite:
        raise OutputExistsError(
            f"{option} {path} exists and was not written by lit-block (no {MARKER} file in it); "
            "choose another path, or pass --overwrite to replace it")
    return path


def check_not_inside(output: str | Path, source: str | Path, option: str = "--output") -> None:
    """An output may not be its own source, nor a folder holding it."""
    out, src = Path(output).resolve(), Path(source).resolve()
    if out == src or out in src.parents:
        raise UsageError(f"{option} {output} would replace its own source {source}; choose another path")


def clean_leftovers(path: Path) -> None:
    """Remove staging folders that a killed command left beside ``path``; put back a folder it had moved aside."""
    if not path.parent.is_dir():
        return
    for entry in path.parent.iterdir():
        found = _LEFTOVER.match(entry.name)
        if not found or found["name"] != path.name or pid_alive(int(found["pid"])):
            continue
        if found["kind"] == "old" and not path.exists():
            os.replace(entry, path)  # the swap was killed between its two renames: the previous output comes back
        else:
            shutil.rmtree(entry, ignore_errors=True)


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file beside it and a rename: one file whole or not at all."""
    path = Path(path)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        partial.write_text(text)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def _fresh(path: Path, kind: str) -> Path:
    return path.with_name(f".{path.name}.{kind}-{os.getpid()}-{secrets.token_hex(4)}")


@contextmanager
def output_dir(path: str | Path, overwrite: bool = False, command: str = "", option: str = "--output",
               signature: str | None = None) -> Iterator[Path]:
    """A staging folder to write into; on success it replaces ``path`` (see the module's docstring)."""
    path = check_output(path, overwrite, option, signature)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_leftovers(path)
    staging = _fresh(path, "staging")
    os.mkdir(staging)  # mode 0777 less the umask, unlike mkdtemp's 0700
    try:
        yield staging
        (staging / MARKER).write_text(json.dumps({"written_by": f"lit-block {command}".strip(),
                                                  "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}) + "\n")
        check_output(path, overwrite, option, signature)  # again: something may have appeared there meanwhile
        old = _fresh(path, "old")
        if path.exists():
            os.replace(path, old)
        os.replace(staging, path)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
