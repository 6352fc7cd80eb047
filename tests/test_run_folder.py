"""Every training run writes under runs/<experiment>/<run name>/: config, checkpoints, the exported student."""

from __future__ import annotations

import os
import stat

from conftest import REPO
from datamodules.dataset_identity import corpus_identity
from lit_block import BlockAttentionLM
from lit_block.cli import main


def fit_args(model_dir, corpus_dir, *extra):
    return ["fit", f"--config={REPO / 'experiments/distill/full.yaml'}", f"--model.init_args.teacher={model_dir}",
            f"--data.init_args.dataset_path={corpus_dir}", "--data.init_args.granularity=16",
            "--data.init_args.min_block_tokens=4", "--data.init_args.max_block_tokens=32",
            "--data.init_args.sample_tokens=96", "--data.init_args.global_tokens=32", "--trainer.accelerator=cpu",
            "--trainer.limit_val_batches=0", "--trainer.logger.init_args.run_name=first", *extra]


def test_a_fit_writes_config_checkpoint_and_student_into_its_run_folder_and_a_resume_continues_there(
        tiny_model_dir, tiny_corpus_dir, tmp_path, monkeypatch, capsys):
    import mlflow

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    old = os.umask(0o022)
    try:
        assert main(fit_args(tiny_model_dir, tiny_corpus_dir, "--trainer.max_steps=2")) == 0
    finally:
        os.umask(old)
    run_dir = tmp_path / "runs" / "block-distillation" / "first"
    assert f"outputs: {run_dir}" in capsys.readouterr().out
    assert "teacher: " in (run_dir / "config.yaml").read_text()
    assert (run_dir / "checkpoints" / "last.ckpt").is_file() and len(list((run_dir / "checkpoints").iterdir())) == 1
    student = BlockAttentionLM.from_pretrained(str(run_dir / "student"))
    assert student.num_sink_tokens == 2
    assert stat.S_IMODE((run_dir / "student").stat().st_mode) == 0o755  # ordinary permissions
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("block-distillation").experiment_id])
    assert run.data.tags["lit_block.run_dir"] == str(run_dir)
    (dataset_input,) = run.inputs.dataset_inputs  # the corpus it trained on, by content digest
    assert dataset_input.dataset.digest == corpus_identity(tiny_corpus_dir).digest
    assert dataset_input.dataset.name == tiny_corpus_dir.name
    assert {t.key: t.value for t in dataset_input.tags}["mlflow.data.context"] == "training"

    ckpt = run_dir / "checkpoints" / "last.ckpt"
    assert main(fit_args(tiny_model_dir, tiny_corpus_dir, "--trainer.max_steps=3",
                         "--trainer.logger.init_args.run_name=ignored", f"--ckpt_path={ckpt}")) == 0
    assert sorted(p.name for p in (tmp_path / "runs" / "block-distillation").iterdir()) == ["first"]
    assert (run_dir / "student" / "model.safetensors").stat().st_mtime >= ckpt.stat().st_mtime - 1


def test_paths_a_config_sets_are_kept_and_validate_writes_no_checkpoint(tiny_model_dir, tiny_corpus_dir, tmp_path,
                                                                         monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    mine = tmp_path / "my_checkpoints"
    assert main(fit_args(tiny_model_dir, tiny_corpus_dir, "--trainer.max_steps=1", "--trainer.default_root_dir=out",
                         '--trainer.callbacks+={"class_path": "lightning.pytorch.callbacks.ModelCheckpoint", '
                         f'"init_args": {{"dirpath": "{mine}"}}}}')) == 0
    assert len(list(mine.glob("*.ckpt"))) == 1
    run_dir = tmp_path / "out" / "block-distillation" / "first"
    assert not (run_dir / "checkpoints").exists() and (run_dir / "student").is_dir()
    validate = [a for a in fit_args(tiny_model_dir, tiny_corpus_dir) if not a.startswith("--trainer.limit_val")]
    assert main(["validate", *validate[1:], "--trainer.limit_val_batches=1",
                 "--trainer.logger.init_args.run_name=check"]) == 0
    checked = tmp_path / "runs" / "block-distillation" / "check"
    assert sorted(p.name for p in checked.iterdir()) == ["config.yaml"]


def test_dataset_digests_follow_content(tiny_corpus_dir, tmp_path):
    from datasets import load_from_disk

    from datamodules.dataset_identity import files_identity

    copy = tmp_path / "copy"
    load_from_disk(str(tiny_corpus_dir)).save_to_disk(str(copy))
    assert corpus_identity(copy).digest == corpus_identity(tiny_corpus_dir).digest  # same content, same digest
    data = load_from_disk(str(tiny_corpus_dir))
    data["train"] = data["train"].map(lambda row: {"text": row["text"] + "!"})
    data.save_to_disk(str(tmp_path / "changed"))
    assert corpus_identity(tmp_path / "changed").digest != corpus_identity(tiny_corpus_dir).digest
    (tmp_path / "a.txt").write_text("one")
    first = files_identity([tmp_path / "a.txt"]).digest
    (tmp_path / "a.txt").write_text("two")
    assert files_identity([tmp_path / "a.txt"]).digest != first

