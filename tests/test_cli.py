"""The lit-block command: help, every shipped YAML under fast_dev_run, config errors, MLflow runs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO
from lit_block.cli import main

YAMLS = sorted((REPO / "experiments").rglob("*.yaml"))
COMMAND = re.compile(r"^#\s+lit-block (\S+)(.*)$", re.M)  # the documented command in a YAML's header


def documented_command(yaml: Path) -> tuple[str, list[str]]:
    """The first ``lit-block SUBCOMMAND ...`` line of a shipped YAML's header: how users run it."""
    found = COMMAND.search(yaml.read_text())
    assert found, f"{yaml} documents no `lit-block ...` command in its header"
    args = [a.replace("experiments/", f"{REPO}/experiments/", 1) if a.startswith("experiments/") else a
            for a in found[2].split()]
    assert str(yaml) in args, f"{yaml}: its documented command does not use it"
    return found[1], args


def segmenter_overrides(corpus_dir: Path) -> list[str]:
    """The real sentence encoder, one layer of it, on a four-document corpus."""
    return [
        f"--data.init_args.dataset_path={corpus_dir}",
        "--data.init_args.max_units=32",
        "--model.init_args.encoder_layers=1",
        "--trainer.accelerator=cpu",
    ]


def overrides_for(text: str, request) -> list[str]:
    """Tiny stand-ins for each module a config uses (the data's tokenizer follows the model: linked)."""
    if "SegmenterModule" in text:
        return segmenter_overrides(request.getfixturevalue("tiny_corpus_dir"))
    model_dir = request.getfixturevalue("tiny_model_dir")
    overrides = tiny_overrides(model_dir)
    if "BlockFinetuneModule" not in text and ("BlockDistillationModule" in text or "distill/full.yaml" in text):
        overrides[0] = f"--model.init_args.teacher={model_dir}"  # the distillation module names its model `teacher`
    if "FSDP2Strategy" in text:  # one CPU process (gloo): the sharding path, on a mesh of one
        overrides.append("--trainer.devices=1")
    if "DistillDataModule" in text or "distill/full.yaml" in text:  # corpus documents instead of text files
        corpus = request.getfixturevalue("tiny_corpus_dir")
        overrides = [o for o in overrides if "block_tokens" not in o and "max_samples" not in o]
        overrides += [f"--data.init_args.dataset_path={corpus}", "--data.init_args.granularity=16",
                      "--data.init_args.min_block_tokens=4", "--data.init_args.max_block_tokens=32"]
    return overrides


def tiny_overrides(model_dir: Path) -> list[str]:
    """Swap the embedded teacher for the tiny fixture model and keep samples small."""
    return [
        f"--model.init_args.model_name_or_path={model_dir}",
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


LIGHTNING_YAMLS = [y for y in YAMLS if documented_command(y)[0] in ("fit", "validate", "test")]


@pytest.mark.parametrize("yaml", LIGHTNING_YAMLS, ids=[str(p.relative_to(REPO)) for p in LIGHTNING_YAMLS])
def test_every_shipped_config_runs_its_documented_command_under_fast_dev_run(yaml, request, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    subcommand, args = documented_command(yaml)
    stacked = " ".join(Path(a.split("=", 1)[-1]).read_text() for a in args if a.endswith(".yaml"))
    main([subcommand, *args, *overrides_for(stacked, request), "--trainer.fast_dev_run=true"])


def test_every_shipped_yaml_is_a_config_a_sweep_or_a_pipeline_profile():
    kinds = {documented_command(y)[0] for y in YAMLS}
    assert kinds <= {"fit", "validate", "test", "sweep", "pipeline"}, kinds


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
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"  # the UI opens on the runs
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    if commit:  # a git checkout: the run records the code it ran
        assert run.data.tags["mlflow.source.git.commit"] == commit
        assert run.data.tags["lit_block.git_dirty"] in ("True", "False")
    assert run.data.params["num_sink_tokens"] == "3"  # the second --config won
    assert {"train/loss", "val/nll_block", "val/nll_full", "val/nll_gap"} <= set(run.data.metrics)
    config = Path(run.info.artifact_uri.removeprefix("file://")) / "config.yaml"
    assert "num_sink_tokens: 3" in config.read_text()
    assert (tmp_path / "mlartifacts").is_dir()


SWEEP_YAMLS = [y for y in YAMLS if documented_command(y)[0] == "sweep"]


def sweep_extras(spec, request, model_dir: Path) -> list[str]:
    """Tiny stand-ins for a sweep's command, given as --extra arguments (they come last, so they win)."""
    if spec.command[0] == "bench":
        return [f"--model={model_dir}", "--tokens=200", "--query-tokens=16", "--repeat=1", "--device=cpu"]
    text = " ".join(Path(a).read_text() for a in spec.command if a.endswith(".yaml"))
    # one step and one batch (not fast_dev_run: it turns the logger off, and the point must be an MLflow run)
    extras = overrides_for(text, request) + ["--trainer.max_steps=1", "--trainer.limit_val_batches=1",
                                             "--trainer.enable_checkpointing=false"]
    return extras + (["--data.init_args.method=fixed"] if "method=segmenter" in " ".join(spec.command) else [])


@pytest.mark.parametrize("yaml", SWEEP_YAMLS, ids=[str(p.relative_to(REPO)) for p in SWEEP_YAMLS])
def test_every_shipped_sweep_runs_its_first_point_as_a_nested_mlflow_run(yaml, request, tmp_path, monkeypatch):
    import mlflow

    from lit_block.sweep import load_spec

    monkeypatch.chdir(REPO)  # sweep commands name configs relative to the repository
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    spec = load_spec(yaml)
    extras = [f"--extra={e}" for e in sweep_extras(spec, request, request.getfixturevalue("tiny_model_dir"))]
    if spec.command[0] in ("fit", "validate", "test"):  # run folders under tmp_path, not in the repository
        extras.append(f"--extra=--trainer.default_root_dir={tmp_path / 'runs'}")
    assert main(["sweep", str(yaml), "--max-points", "1", "--log-dir", str(tmp_path / "sweeps"), *extras]) == 0
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(spec.experiment)
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("lit_block.subcommand") == "sweep"]
    (child,) = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    key, value = next(iter(spec.points[0].items()))
    assert child.info.status == "FINISHED" and child.data.tags[f"sweep.{key}"] == str(value)


PIPELINE_YAMLS = [y for y in YAMLS if documented_command(y)[0] == "pipeline"]


@pytest.mark.parametrize("yaml", PIPELINE_YAMLS, ids=[str(p.relative_to(REPO)) for p in PIPELINE_YAMLS])
def test_every_pipeline_profile_runs_every_stage_on_tiny_parts(yaml, tiny_model_dir, tiny_corpus_dir, tmp_path,
                                                               monkeypatch, capsys):
    from lit_block.pipeline import build_parser

    build_parser().parse_args(["--config", str(yaml)])  # every key of the profile is known
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    sizes = [8, 16] if yaml.name == "cpu.yaml" else [16]  # the GPU profile's sweep stage runs one point: less time
    tiny = ["--workdir=run", f"--dataset={tiny_corpus_dir}", f"--teacher={tiny_model_dir}", "--accelerator=cpu",
            "--segmenter-documents=4", "--segmenter-epochs=1", "--segmenter-layers=1", "--sample-tokens=96",
            "--global-tokens=32", "--min-block-tokens=4", "--max-block-tokens=32", "--distill-documents=4",
            "--distill-steps=2", "--batch-size=1", "--val-batches=1", "--eval-samples=2",
            f"--sweep-granularities={sizes}", "--sweep-batches=1", "--sweep-parallel=1"]
    assert main(["pipeline", "--config", str(yaml), *tiny]) == 0
    out = capsys.readouterr().out
    for stage in ("[1/6] corpus", "[2/6] segmenter", "[3/6] distill", "[4/6] evaluate", "[5/6] sweep", "[6/6] compare"):
        assert stage in out
    assert "| distilled |" in out and (tmp_path / "run" / "exports" / "distilled" / "lit_block_sinks.safetensors").is_file()
    assert (tmp_path / "run" / "compare" / "tradeoff.png").is_file()
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (pipeline,) = client.search_runs([client.get_experiment_by_name("pipeline").experiment_id])
    assert pipeline.info.status == "FINISHED" and "distilled.kl_gap_closed" in pipeline.data.metrics
    linked = client.search_runs([e.experiment_id for e in client.search_experiments()],
                                filter_string=f"tags.`lit_block.pipeline` = '{pipeline.info.run_id}'")
    kinds = {r.data.tags.get("lit_block.subcommand") for r in linked}
    assert {"fit", "sweep", "validate"} <= kinds and len(linked) >= 4 + len(sizes)  # segmenter, distill, eval-lm, sweep + points
    assert main(["pipeline", "--config", str(yaml), *tiny]) == 0  # again: every stage reuses its output
    assert "reusing" in capsys.readouterr().out


def test_pipeline_profile_errors_name_the_key(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("distill_stepz: 3\n")
    assert main(["pipeline", "--config", str(bad)]) == 2
    assert "distill_stepz" in capsys.readouterr().err


def test_compile_layers_parses_as_a_switch_or_a_backend_and_trains(tiny_model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    config = [f"--config={REPO / 'experiments/demo/teacher_block_nll.yaml'}", *tiny_overrides(tiny_model_dir)]
    with pytest.raises(SystemExit):
        main(["fit", *config, "--model.init_args.compile_layers=true", "--print_config"])
    assert "compile_layers: true" in capsys.readouterr().out  # a switch (inductor), not the backend name "true"
    main(["fit", *config, "--model.init_args.compile_layers=aot_eager", "--trainer.fast_dev_run=1",
          "--trainer.logger=false"])  # a backend by name: traced layers train under the CLI
