"""Scored segmentation results on disk.

``evaluate`` keys its results ``(method, level, category)``; their JSON keys them ``"method|level|category"``. A file
holds one such dict, or several under names (``{"V2": results, ...}``: one per inference setting or recipe). Files are
written whole or not at all (a temporary file beside the target, renamed over it), so a killed study leaves the
previous file or none, never a part that a later merge would read as scored.
"""

from __future__ import annotations

import json
from pathlib import Path

from lit_block.output_dir import write_text_atomic


def _keyed(results: dict) -> dict:
    return {"|".join(k): v for k, v in results.items()}


def _unkeyed(found: dict) -> dict:
    return {tuple(k.split("|")): v for k, v in found.items()}


def save_results(path: str | Path, results: dict) -> None:
    """Write ``evaluate``'s results, or a dict of them under names, as JSON (atomically)."""
    named = bool(results) and not isinstance(next(iter(results)), tuple)
    payload = {n: _keyed(r) for n, r in results.items()} if named else _keyed(results)
    write_text_atomic(path, json.dumps(payload, indent=1))


def load_results(path: str | Path) -> dict:
    """What ``save_results`` wrote: results keyed ``(method, level, category)``, or a dict of them under names."""
    path = Path(path)
    try:
        found = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not a scored results file ({error})") from None
    if found and "|" not in next(iter(found)):
        return {n: _unkeyed(r) for n, r in found.items()}
    return _unkeyed(found)
