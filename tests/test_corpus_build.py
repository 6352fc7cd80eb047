"""The corpus builder: packing, splits, fetching from the cache, atomic writes, the card, fingerprints."""

from __future__ import annotations

import dataclasses
import io
import json
import random
import tarfile
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import REPO
from datamodules.corpus import build as build_module
from datamodules.corpus.build import BuildConfig, build
from datamodules.corpus.fetch import FetchError, package_root, sha256_of
from datamodules.corpus.packing import pack_documents, split_of
from datamodules.corpus.schema import PackageSpec, RawDocument, SkippedInput, Source, Unit
from datamodules.corpus.sources import python_code

FIXTURES = REPO / "tests" / "fixtures" / "corpus"


@settings(max_examples=60, deadline=None)
@given(
    docs=st.lists(st.lists(st.tuples(st.integers(1, 120), st.integers(0, 2)), min_size=1, max_size=40), min_size=1, max_size=8),
    seed=st.integers(0, 100),
)
def test_packing_keeps_units_whole_in_order_and_in_the_length_range(docs, seed):
    raw = []
    for d, units in enumerate(docs):
        us = [Unit(f"<{d}.{i}>", lvl if i else 0) for i, (_, lvl) in enumerate(units)]
        raw.append((RawDocument(f"d{d}", f"f{d}", us), [n for n, _ in units]))
    skipped = Counter()
    packed = list(pack_documents(raw, 100, 400, random.Random(seed), skipped))
    for doc in packed:
        tokens = sum(p.tokens for p in doc.units)
        assert 100 <= tokens <= 400
        assert doc.units[0].unit.level == 0
        b = doc.boundaries()
        assert set(b["coarse"]) <= set(b["middle"]) <= set(b["fine"])  # hierarchical
    # documents are disjoint, in stream order, and cover all but what was counted as skipped
    emitted = "".join(doc.text for doc in packed)
    everything = "".join(u.text for r, _ in raw for u in r.units)
    assert emitted in everything or not packed
    if not skipped:
        assert emitted == everything


def test_splits_are_deterministic_and_roughly_proportional():
    splits = [split_of("src", f"doc{i}", (0.8, 0.1, 0.1), seed=0) for i in range(2000)]
    assert splits == [split_of("src", f"doc{i}", (0.8, 0.1, 0.1), seed=0) for i in range(2000)]
    counts = Counter(splits)
    assert 1500 < counts["train"] < 1700 and 120 < counts["validation"] < 280 and 120 < counts["test"] < 280


def _npm_archive(tmp_path: Path) -> tuple[PackageSpec, Path]:
    """A tiny npm-style .tgz, and a spec pinning it."""
    data = b"hello\n"
    archive = tmp_path / "cache" / "archives" / "demo-1.0.0.tgz"
    archive.parent.mkdir(parents=True)
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("package/hello.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return PackageSpec("npm", "demo", "1.0.0", sha256_of(archive), "demo-1.0.0.tgz"), archive


def test_cached_archive_is_checked_and_extracted_once(tmp_path):
    spec, _ = _npm_archive(tmp_path)
    root = package_root(spec, tmp_path / "cache", offline=True)
    assert (root / "package" / "hello.txt").read_text() == "hello\n"
    assert package_root(spec, tmp_path / "cache", offline=True) == root


def test_corrupt_cache_and_missing_packages_get_clear_errors(tmp_path):
    spec, archive = _npm_archive(tmp_path)
    archive.write_bytes(b"corrupted")
    with pytest.raises(FetchError, match="does not match the pinned"):
        package_root(spec, tmp_path / "cache", offline=True)
    missing = dataclasses.replace(spec, filename="other-1.0.0.tgz")
    with pytest.raises(FetchError, match="not in the cache"):
        package_root(missing, tmp_path / "cache", offline=True)
    with pytest.raises(FetchError, match="does not exist on this machine"):
        package_root(PackageSpec("local", "nowhere", "1", filename=str(tmp_path / "nope")), tmp_path / "cache")


def test_python_adapter_skips_bad_files_and_keeps_good_ones():
    with pytest.warns(SkippedInput) as record:
        docs = list(python_code.parse([FIXTURES / "python_code"]))
    assert sorted(d.file for d in docs) == ["inventory.py", "shapes.py", "timers.py"]
    reasons = sorted(str(w.message).rsplit(": ", 1)[-1] for w in record)
    assert reasons == ["empty file", "not parseable as Python (invalid syntax)", "undecodable bytes (utf-8, at byte 0)"]
    shapes = next(d for d in docs if d.file == "shapes.py")
    assert shapes.text == (FIXTURES / "python_code" / "shapes.py").read_text()
    levels = [u.level for u in shapes.units]
    assert levels.count(0) == 4  # module start, Circle, Rectangle (with its comment), total_area
    assert next(u for u in shapes.units if "class Rectangle" in u.text).text.startswith("# squares")


def fixture_sources(extra: list[Source] = ()) -> list[Source]:
    code = dataclasses.replace(
        python_code.SOURCES[0], packages=(PackageSpec("local", "fixture-code", "1", filename=str(FIXTURES / "python_code")),)
    )
    broken = dataclasses.replace(
        code, name="missing-package", category="nowhere",
        packages=(PackageSpec("deb", "no-such-package", "0", "0" * 64, "no-such.deb"),),
    )
    return [code, broken, *extra]


@pytest.fixture
def small_build(tmp_path, tiny_tokenizer_dir, monkeypatch):
    monkeypatch.setattr(build_module, "all_sources", fixture_sources)
    cfg = BuildConfig(output=str(tmp_path / "ds"), cache_dir=str(tmp_path / "cache"), tokenizer=str(tiny_tokenizer_dir),
                      min_tokens=40, max_tokens=300, split_fractions=(0.34, 0.33, 0.33), offline=True)
    return cfg


def test_build_writes_a_valid_dataset_card_and_summary(small_build):
    from datasets import load_from_disk

    with pytest.warns(UserWarning, match="source missing-package skipped"):
        out, reports, fp = build(small_build)
    data = load_from_disk(str(out))
    rows = [r for split in data for r in data[split]]
    assert rows and all(40 <= r["n_tokens"] <= 300 for r in rows)
    for r in rows:
        assert set(r["boundaries_coarse"]) <= set(r["boundaries_middle"]) <= set(r["boundaries_fine"])
        assert all(0 < b < len(r["text"]) for b in r["boundaries_fine"])
        assert sum(r["segment_tokens_fine"]) == sum(r["segment_tokens_coarse"])
        assert r["packages"] == ["local:fixture-code=1"] and r["license"] == "PSF-2.0"
    files_by_split = {s: {f for r in data[s] for f in r["files"]} for s in data}
    splits = list(files_by_split)
    assert all(not (files_by_split[a] & files_by_split[b]) for a in splits for b in splits if a < b)  # no leakage
    by_name = {r.name: r for r in reports}
    assert "not in the cache" in by_name["missing-package"].error
    assert by_name["python-stdlib"].skipped["empty file"] == 1
    card = (out / "README.md").read_text()
    assert "| code |" in card and fp in card and (out / "length_distribution.png").stat().st_size > 1000
    assert json.loads((out / "build_summary.json").read_text())["fingerprint"] == fp


def test_rebuild_gives_the_same_fingerprint_and_an_interrupted_write_keeps_the_old_dataset(small_build, monkeypatch):
    from datasets import load_from_disk

    out, _, fp1 = build(small_build)
    first = load_from_disk(str(out))
    _, _, fp2 = build(small_build)
    assert fp1 == fp2
    assert load_from_disk(str(out))["train"]._fingerprint == first["train"]._fingerprint  # datasets' own fingerprint
    assert json.loads((out / "train" / "state.json").read_text())["_fingerprint"] == f"{fp1}-train"

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(build_module, "write_card", crash)
    with pytest.raises(KeyboardInterrupt):
        build(small_build)
    assert load_from_disk(str(out))["train"]._fingerprint == first["train"]._fingerprint  # the old dataset is intact
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(".ds")] == []  # no staging left behind
