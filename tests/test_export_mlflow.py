"""The exported student is recorded on its training run: an MLflow logged model (source run, params, READY), linked
as the run's output and named by the run tag ``lit_block.student``; downloaded, it loads and equals the local export.
Never a failed fit over it, nothing logged when asked not to, nothing needed without an MLflow logger."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from callbacks import StudentExporter
from callbacks.export import STUDENT_TAG
from datamodules import TextBlocksDataModule
from lit_block import BlockAttentionLM
from lit_block.modules import BlockDistillationModule
from lit_block.output_dir import MARKER


def fit(tiny_model_dir, tmp_path, logger, **exporter) -> StudentExporter:
    """One training step of a tiny distillation, exported to ``tmp_path/student``."""
    torch.manual_seed(0)
    module = BlockDistillationModule(teacher=str(tiny_model_dir), num_sink_tokens=2, attn_backend="sdpa")
    data = TextBlocksDataModule(tokenizer=str(tiny_model_dir), sample_tokens=64, block_tokens=16, global_tokens=16,
                                batch_size=1, max_samples=1)
    callback = StudentExporter(str(tmp_path / "student"), **exporter)
    trainer = L.Trainer(max_steps=1, accelerator="cpu", logger=logger, callbacks=[callback], limit_val_batches=0,
                        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                        default_root_dir=tmp_path)
    trainer.fit(module, datamodule=data)
    assert BlockAttentionLM.from_pretrained(str(tmp_path / "student")).num_sink_tokens == 2  # the local export
    return callback


def mlflow_logger(tmp_path):
    from lit_block.tracking import LitBlockMLFlowLogger

    return LitBlockMLFlowLogger(experiment_name="export", tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")


def weights(model: BlockAttentionLM) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_student(downloaded, local) -> None:
    ours, theirs = weights(BlockAttentionLM.from_pretrained(str(local))), weights(BlockAttentionLM.from_pretrained(downloaded))
    assert ours.keys() == theirs.keys() and any("sink" in k for k in ours)
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_the_exported_student_is_a_ready_logged_model_of_its_run_and_downloads_as_the_local_export(
        tiny_model_dir, tmp_path, capsys):
    import mlflow

    logger = mlflow_logger(tmp_path)
    fit(tiny_model_dir, tmp_path, logger)
    client = mlflow.MlflowClient(logger._tracking_uri)
    run = client.get_run(logger.run_id)
    assert run.info.status == "FINISHED"
    uri = run.data.tags[STUDENT_TAG]
    assert uri.startswith("models:/") and f"student logged on MLflow run {run.info.run_id}: {uri}" in capsys.readouterr().out
    model = client.get_logged_model(uri.removeprefix("models:/"))
    assert model.source_run_id == run.info.run_id and model.experiment_id == run.info.experiment_id
    assert str(model.status) == "READY" and model.name == "student"
    assert model.params["teacher"] == str(tiny_model_dir) and model.params["num_sink_tokens"] == "2"
    assert model.params["module"] == "BlockDistillationModule"
    assert [(o.model_id, o.step) for o in run.outputs.model_outputs] == [(model.model_id, 1)]
    downloaded = mlflow.artifacts.download_artifacts(uri, dst_path=str(tmp_path / "downloaded"),
                                                     tracking_uri=logger._tracking_uri)
    assert not any(p.name == MARKER for p in (tmp_path / "downloaded").rglob("*"))  # the model, not a lit-block output
    assert sorted(p.name for p in (tmp_path / "student").iterdir() if p.name != MARKER) == \
        sorted(p.name for p in (tmp_path / "downloaded").iterdir())
    assert_same_student(downloaded, tmp_path / "student")
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".student")) == []  # no links left over


def test_a_store_without_logged_models_gets_run_artifacts_and_a_failed_upload_only_warns(
        tiny_model_dir, tmp_path, monkeypatch):
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import ENDPOINT_NOT_FOUND

    def no_endpoint(*args, **kwargs):
        raise MlflowException("API request to endpoint /api/2.0/mlflow/logged-models failed with error code 404",
                              error_code=ENDPOINT_NOT_FOUND)

    with monkeypatch.context() as patch:  # as an MLflow 2 tracking server answers
        patch.setattr(mlflow.MlflowClient, "create_logged_model", no_endpoint)
        logger = mlflow_logger(tmp_path / "old")
        fit(tiny_model_dir, tmp_path / "old", logger)
    client = mlflow.MlflowClient(logger._tracking_uri)
    assert client.get_run(logger.run_id).data.tags[STUDENT_TAG] == f"runs:/{logger.run_id}/student"
    downloaded = client.download_artifacts(logger.run_id, "student", str(tmp_path / "old" / "downloaded"))
    assert_same_student(downloaded, tmp_path / "old" / "student")

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(mlflow.MlflowClient, "log_model_artifacts", full_disk)
    logger = mlflow_logger(tmp_path / "full")
    with pytest.warns(UserWarning, match=r"StudentExporter: the student exported to .*student was not logged on "
                                         rf"MLflow run {logger.run_id} \(OSError: .*No space left on device\); "
                                         "the local export is complete"):
        fit(tiny_model_dir, tmp_path / "full", logger)  # the fit itself succeeds
    client = mlflow.MlflowClient(logger._tracking_uri)
    run = client.get_run(logger.run_id)
    assert run.info.status == "FINISHED" and STUDENT_TAG not in run.data.tags
    (model,) = client.search_logged_models([run.info.experiment_id])
    assert str(model.status) == "FAILED"  # not left PENDING


def test_nothing_is_logged_when_asked_not_to_and_nothing_is_needed_without_an_mlflow_logger(tiny_model_dir, tmp_path):
    import mlflow

    logger = mlflow_logger(tmp_path / "off")
    assert fit(tiny_model_dir, tmp_path / "off", logger, log_to_mlflow=False).log_to_mlflow is False
    client = mlflow.MlflowClient(logger._tracking_uri)
    run = client.get_run(logger.run_id)
    assert STUDENT_TAG not in run.data.tags and not run.outputs.model_outputs
    assert not client.search_logged_models([run.info.experiment_id]) and not client.list_artifacts(logger.run_id)

    fit(tiny_model_dir, tmp_path / "none", logger=False)
    fit(tiny_model_dir, tmp_path / "csv", logger=L.pytorch.loggers.CSVLogger(tmp_path / "csv"))
