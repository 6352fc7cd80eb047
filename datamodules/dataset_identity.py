"""What a run read: a dataset's name, where it lives, and a digest of its content, for MLflow's dataset records.

A corpus written by ``lit-block data build`` carries its content fingerprint (``build_summary.json``);
any other ``save_to_disk`` folder is identified by a hash of its Arrow data files (``datasets``' own
per-split fingerprints change when an unchanged dataset is saved again); plain text files by a hash
of their bytes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DatasetIdentity:
    name: str
    source: str  # an absolute path
    digest: str  # content-derived: equal data, equal digest


def corpus_identity(path: str | Path) -> DatasetIdentity:
    path = Path(path).resolve()
    summary = path / "build_summary.json"
    if summary.is_file():
        digest = json.loads(summary.read_text())["fingerprint"]
    else:
        h = hashlib.sha256()
        tables = (p for p in path.rglob("*.arrow") if not p.name.startswith("cache-"))  # not a map/filter's cache
        for data in sorted(tables):  # the tables themselves, split by split
            h.update(data.relative_to(path).as_posix().encode())
            with open(data, "rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    h.update(chunk)
        digest = h.hexdigest()[:16]
    return DatasetIdentity(path.name, str(path), digest)


def files_identity(files: list[Path], name: str = "text-files") -> DatasetIdentity:
    h = hashlib.sha256()
    for f in sorted(Path(f).resolve() for f in files):
        h.update(f.name.encode() + hashlib.sha256(f.read_bytes()).digest())
    common = Path(*Path(files[0]).resolve().parts[:-1]) if files else Path.cwd()
    return DatasetIdentity(name, str(common), h.hexdigest()[:16])
