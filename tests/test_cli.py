"""The lit-block command: help, every shipped YAML under fast_dev_run, config errors, MLflow runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO
from lit_block.cli import main

YAMLS = sorted((REPO / "experiments").rglob("*.yaml"))


def segmenter_overrides(corpus_dir: Path) -> list[str]:
    """The real sentence encoder, one layer of it, on a four-document corpus."""
    return [
        f"--data.init_args.dataset_path={corpus_dir}",
        "--data.init_args.max_units=32",
        "--model.init_args.encoder_layers=1",
        "--trainer.accelerator=cpu",
    ]


def overrides_for(yaml: Path, request) -> list[str]:
    """Tiny stand-ins for each module a shipped YAML uses."""
    text = yaml.read_text()
    if "SegmenterModule" in text:
        return segmenter_overrides(request.getfixturevalue("tiny_corpus_dir"))
    model_dir = request.getfixturevalue("tiny_model_dir")
    overrides = tiny_overrides(model_dir)
    if "BlockDistillationModule" in text:  # its model argument is `teacher`
        overrides[0] = f"--model.init_args.teacher={model_dir}"
    if "DistillDataModule" in text:  # corpus documents instead of text files
        corpus = request.getfixturevalue("tiny_corpus_dir")
        overrides = [o for o in overrides if "block_tokens" not in o and "max_samples" not in o]
        overrides += [f"--data.init_args.dataset_path={corpus}", "--data.init_args.granularity=16",
                      "--data.init_args.min_block_tokens=4", "--data.init_args.max_block_tokens=32"]
    return overrides


def tiny_overrides(model_dir: Path) -> list[str]:
    """Swap the embedded teacher for the tiny fixture model and keep samples small."""
    return [
        f"--model.init_args.model_name_or_path={model_dir}",
        f"--data.init_args.tokenizer={model_dir}",
        "--data.init_args.sample_tokens=96",
        "--data.init_args.block_tokens=16",
        "--data.init_args.global_tokens=32",
        "--data.init_args.max_samples=4",
        "--trainer.accelerator=cpu",
    ]


def test_help_lists_every_subcommand():
    out = subprocess.run([sys.executable, "-m", "lit_block.cli", "--help"], capture_output=True, text=True, check=True)
    for name in ("fit", "validate", "test", "predict", "bench"):
        assert f"  {name} " in out.stdout


def test_unknown_subcommand_exits_nonzero(capsys):
    assert main(["frobnicate"]) == 2
    assert "unknown subcommand 'frobnicate'" in capsys.readouterr().err


@pytest.mark.parametrize("yaml", YAMLS, ids=[str(p.relative_to(REPO)) for p in YAMLS])
@pytest.mark.parametrize("subcommand", ["fit", "validate"])
def test_every_shipped_yaml_runs_fast_dev_run(yaml, subcommand, request, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    main([subcommand, f"--config={yaml}", *overrides_for(yaml, request), "--trainer.fast_dev_run=true"])


def test_unknown_config_key_fails_with_its_name(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  class_path: lit_block.modules.BlockFinetuneModule\n  init_args:\n    num_sink_tokenz: 2\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", f"--config={YAMLS[0]}", f"--config={bad}"])
    assert exit_info.value.code != 0
    assert "num_sink_tokenz" in capsys.readouterr().err


def test_stacked_configs_compose_and_the_run_is_tracked_in_mlflow(tiny_model_dir, tmp_path, monkeypatch):
    import mlflow

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    override = tmp_path / "sinks.yaml"
    override.write_text("model:\n  init_args:\n    num_sink_tokens: 3\n")
    main([
        "fit", f"--config={REPO / 'experiments/demo/teacher_block_nll.yaml'}", f"--config={override}",
        *tiny_overrides(tiny_model_dir), "--trainer.max_steps=2", "--trainer.limit_val_batches=1",
        "--trainer.enable_checkpointing=false", "--trainer.log_every_n_steps=1",
    ])
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("demo-teacher-block-nll")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name.startswith("fit-BlockFinetuneModule-")
    assert run.data.tags["lit_block.data"] == "TextBlocksDataModule"
    assert run.data.params["num_sink_tokens"] == "3"  # the second --config won
    assert {"train/loss", "val/nll_block", "val/nll_full", "val/nll_gap"} <= set(run.data.metrics)
    config = Path(run.info.artifact_uri.removeprefix("file://")) / "config.yaml"
    assert "num_sink_tokens: 3" in config.read_text()
    assert (tmp_path / "mlartifacts").is_dir()
