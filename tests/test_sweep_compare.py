"""lit-block sweep (grid, nesting, resume, parallel workers) and lit-block compare (selection, table, plots)."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest

from conftest import REPO
from lit_block.cli import main
from lit_block.sweep import load_spec, point_args

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "rag"


def mlflow_client(folder: Path):
    import mlflow

    return mlflow.MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")


def processes_mentioning(text: str) -> list[str]:
    """Command lines of live (not zombie) processes that contain ``text`` (Linux ``/proc``)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            line = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError):
            continue  # not a process, or one that ended while we looked
        if state != "Z" and text in line:
            found.append(line)
    return found


def write_sweep(tmp_path: Path, model_dir: Path, parallel: int = 1) -> Path:
    """A cheap real sweep: eval-rag of the tiny model on a fixture benchmark, over max-new-tokens."""
    spec = tmp_path / "sweep.yaml"
    spec.write_text(
        "name: tokens\nexperiment: sweeps\n"
        f"command: [eval-rag, --teacher={model_dir}, --tasks=, --benchmark, hotpotqa={FIXTURES / 'hotpotqa.json'}, "
        f"--device=cpu, --experiment=eval-rag]\n"
        f"grid:\n  max-new-tokens: [1, 2, 3]\nparallel: {parallel}\n")
    return spec


def test_grid_and_points_expand_and_bad_files_name_the_key(tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text("name: g\ncommand: [validate, --config, a.yaml]\ngrid:\n  x: [1, 2]\n  y: [a, b, c]\n")
    spec = load_spec(grid)
    assert len(spec.points) == 6 and spec.points[0] == {"x": 1, "y": "a"} and spec.experiment == "sweeps"
    assert point_args(spec, spec.points[0]) == ["validate", "--config", "a.yaml", "--x=1", "--y=a"]
    spec2 = replace(spec, extra=("--z=1",))
    assert point_args(spec2, {"x": [1, 2]})[-2:] == ["--x=[1, 2]", "--z=1"] and spec2.digest != spec.digest
    for body, key in [("command: [x]\ngrid: {a: [1]}\n", "'name'"), ("name: n\ngrid: {a: [1]}\n", "'command'"),
                      ("name: n\ncommand: [x]\n", "exactly one of 'grid'"), ("name: n\ncommand: [x]\npoints: []\n", "'points'"),
                      ("name: n\ncommand: [x]\ngrid: {a: [1]}\nparalel: 2\n", "unknown keys")]:
        bad = tmp_path / "bad.yaml"
        bad.write_text(body)
        with pytest.raises(ValueError, match=key):
            load_spec(bad)


def test_an_interrupted_sweep_resumes_and_compare_tables_and_plots_it(tiny_model_dir, tmp_path, monkeypatch, capsys):
    import mlflow

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    spec = write_sweep(tmp_path, tiny_model_dir)
    assert main(["sweep", str(spec), "--max-points", "2"]) == 0  # as if stopped after two points
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("sweeps").experiment_id
    (parent,) = client.search_runs([experiment], "tags.`lit_block.subcommand` = 'sweep'")
    stale = client.create_run(experiment, run_name="stale", tags={"mlflow.parentRunId": parent.info.run_id,
                                                                  "sweep.point": "interrupted"})
    capsys.readouterr()
    assert main(["sweep", str(spec)]) == 0
    assert "3 points, 2 already finished (resumed parent run" in capsys.readouterr().out
    children = client.search_runs([experiment], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert sorted(r.data.tags.get("sweep.max-new-tokens", "-") for r in children) == ["-", "1", "2", "3"]
    assert client.get_run(stale.info.run_id).info.status == "KILLED"  # left running by the interrupt
    assert main(["compare", "--experiment", "sweeps", "--sweep", "tokens", "--metrics", "teacher_full_attention.all.f1",
                 "--cost", "teacher_full_attention.ttft_ms", "--quality", "teacher_full_attention.all.f1",
                 "--output", str(tmp_path / "out")]) == 0
    table = (tmp_path / "out" / "table.md").read_text().splitlines()
    assert [line.split("|")[2].strip() for line in table[2:]] == ["1", "2", "3"]  # sorted by the swept value
    assert {p.name for p in (tmp_path / "out").iterdir()} == {"table.md", "metrics_vs_max-new-tokens.png", "tradeoff.png"}
    artifacts = {f.path for f in client.list_artifacts(parent.info.run_id, "compare")}
    assert "compare/tradeoff.png" in artifacts


def test_parallel_fit_points_write_through_a_local_mlflow_server_with_string_tags(tiny_model_dir, tmp_path, monkeypatch):
    import yaml

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    tiny = [f"--model.init_args.model_name_or_path={tiny_model_dir}", "--data.init_args.sample_tokens=96",
            "--data.init_args.global_tokens=32", "--data.init_args.max_samples=2", "--trainer.accelerator=cpu",
            "--trainer.max_steps=1", "--trainer.limit_val_batches=1", "--trainer.enable_checkpointing=false",
            '--trainer.logger.init_args.tags={"granularity": 16}']  # an int, as a YAML interpolation gives it
    spec = tmp_path / "sweep.yaml"
    spec.write_text(yaml.safe_dump({"name": "blocks", "experiment": "sweeps", "parallel": 2, "grid": {
        "data.init_args.block_tokens": [16, 32]}, "command": [
        "fit", "--config", str(REPO / "experiments/demo/teacher_block_nll.yaml"), *tiny]}))
    assert main(["sweep", str(spec)]) == 0
    client = mlflow_client(tmp_path)
    runs = client.search_runs([client.get_experiment_by_name("sweeps").experiment_id])
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == 2 and all(r.info.status == "FINISHED" for r in children)
    assert sorted(r.data.tags["sweep.data.init_args.block_tokens"] for r in children) == ["16", "32"]
    assert sorted(r.info.run_name for r in children) == ["blocks: block_tokens=16", "blocks: block_tokens=32"]
    assert all(r.data.tags["granularity"] == "16" for r in children)
    log = tmp_path / "sweeps" / "blocks" / "mlflow-server.log"
    assert log.is_file() and not (log.parent / "mlflow-server.pid").exists()  # stopped, and its record removed
    assert processes_mentioning(str(tmp_path)) == []  # the server over tmp_path/mlflow.db is gone


def test_compare_errors_are_clear(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)

    def one_line_error(*args: str) -> str:
        assert main(["compare", *args]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1, err
        return err

    db = tmp_path / "mlflow.db"
    assert f"no tracking database exists at {db}" in one_line_error("--experiment", "anything")
    assert list(tmp_path.iterdir()) == []  # nothing created
    mlflow_client(tmp_path).create_experiment("here")
    capsys.readouterr()  # MLflow's own lines about creating the database
    assert "no MLflow experiment named 'nothing-here'" in one_line_error("--experiment", "nothing-here")
    assert "--filter 'metrics.x <<< 2'" in one_line_error("--experiment", "here", "--filter", "metrics.x <<< 2")
    corrupt = tmp_path / "corrupt" / "mlflow.db"  # another folder: this process has the first one open
    corrupt.parent.mkdir()
    corrupt.write_text("a text file, not a database\n")
    monkeypatch.chdir(corrupt.parent)
    assert f"{corrupt} is not an sqlite database" in one_line_error("--experiment", "here")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # nothing listens on the discard port
    started = time.monotonic()
    assert "MLflow tracking server http://127.0.0.1:9 does not answer" in one_line_error("--experiment", "here")
    assert time.monotonic() - started < 20


def test_compare_plots_an_eval_seg_runs_scores_per_category_and_level(tmp_path, monkeypatch):
    import mlflow

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.create_run(client.create_experiment("eval-seg"), run_name="eval-seg-test")
    for level, base in (("coarse", 0.3), ("middle", 0.2), ("fine", 0.1)):
        for category in ("code", "legal"):
            for metric in ("pk", "windowdiff"):
                client.log_metric(run.info.run_id, f"segmenter.{level}.{category}.{metric}", base)
    client.set_terminated(run.info.run_id)
    assert main(["compare", "--experiment", "eval-seg", "--segmentation", "--output", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "segmentation_by_category.png").stat().st_size > 10_000
