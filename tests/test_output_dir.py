"""Output folders: written whole or not at all, never over the user's own folder, leftovers of a killed command cleaned."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from lit_block.errors import OutputExistsError, UsageError
from lit_block.output_dir import MARKER, check_not_inside, clean_leftovers, output_dir


def tree(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_users_folder_is_refused_before_any_work_and_left_as_it_was(tmp_path):
    mine = tmp_path / "mydocs"
    mine.mkdir()
    (mine / "notes.txt").write_text("precious")
    ran = []
    with pytest.raises(OutputExistsError, match=r"mydocs exists and was not written by lit-block.*--overwrite"):
        with output_dir(mine):
            ran.append(True)
    assert not ran and tree(mine) == {"notes.txt": b"precious"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mydocs"]  # no staging folder left


def test_overwrite_replaces_it_and_lit_blocks_own_output_is_replaced_without_asking(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("x")
    with output_dir(out, overwrite=True, command="test") as staging:
        (staging / "a.txt").write_text("1")
    assert set(tree(out)) == {"a.txt", MARKER}
    with output_dir(out) as staging:  # now marked as lit-block's: no --overwrite needed
        (staging / "b.txt").write_text("2")
    assert set(tree(out)) == {"b.txt", MARKER}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_signature_file_marks_outputs_written_before_the_marker_existed(tmp_path):
    out = tmp_path / "corpus"
    out.mkdir()
    (out / "build_summary.json").write_text("{}")
    with pytest.raises(OutputExistsError):
        with output_dir(out):
            pass
    with output_dir(out, signature="build_summary.json") as staging:
        (staging / "build_summary.json").write_text("{}")
    assert (out / MARKER).is_file()


def test_a_file_is_never_replaced(tmp_path):
    target = tmp_path / "file"
    target.write_text("keep")
    with pytest.raises(OutputExistsError, match="not a folder"):
        with output_dir(target, overwrite=True):
            pass
    assert target.read_text() == "keep"


def test_a_failure_while_writing_keeps_the_previous_output_and_leaves_no_staging(tmp_path):
    out = tmp_path / "out"
    with output_dir(out) as staging:
        (staging / "v1").write_text("1")
    with pytest.raises(KeyboardInterrupt):
        with output_dir(out) as staging:
            (staging / "v2").write_text("2")
            raise KeyboardInterrupt
    assert set(tree(out)) == {"v1", MARKER}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_folders_get_the_ordinary_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        with output_dir(tmp_path / "out") as staging:
            (staging / "f").write_text("1")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o755  # not mkdtemp's 0700


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid  # exited and reaped: no process has this id (for the moment)


def test_a_killed_commands_staging_is_removed_and_a_half_done_swap_is_undone(tmp_path):
    out = tmp_path / "out"
    pid = dead_pid()
    stale = tmp_path / f".out.staging-{pid}-abcd1234"
    stale.mkdir()
    (stale / "half").write_text("written")
    moved = tmp_path / f".out.old-{pid}-abcd1234"  # killed between the swap's two renames: the output is aside
    moved.mkdir()
    (moved / "previous").write_text("the user's last good output")
    alive = tmp_path / f".out.staging-{os.getpid()}-abcd1234"  # a live command's staging is not touched
    alive.mkdir()
    unrelated = tmp_path / f".other.staging-{pid}-abcd1234"
    unrelated.mkdir()
    clean_leftovers(out)
    assert (out / "previous").read_text() == "the user's last good output"
    assert not stale.exists() and not moved.exists() and alive.exists() and unrelated.exists()


def test_an_output_may_not_be_its_own_source_or_hold_it(tmp_path):
    src = tmp_path / "data" / "external"
    src.mkdir(parents=True)
    with pytest.raises(UsageError, match="its own source"):
        check_not_inside(src, src)
    with pytest.raises(UsageError, match="its own source"):
        check_not_inside(tmp_path / "data", src / "train.jsonl")
    check_not_inside(tmp_path / "elsewhere", src)
