"""Learning-rate warm-up and decay from config (the sinks keep their own rate), and the training monitor's curves."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import REPO
from lit_block.cli import main
from lit_block.errors import UsageError
from lit_block.optim import LRSchedule


@given(st.integers(0, 20), st.integers(1, 200), st.sampled_from(["constant", "linear", "cosine"]), st.floats(0, 1))
def test_the_multiplier_warms_up_then_decays_to_the_floor(warmup, total, decay, floor):
    s = LRSchedule(warmup_steps=warmup, decay=decay, min_lr_ratio=floor)
    values = [s.multiplier(step, warmup + total) for step in range(warmup + total + 1)]
    assert all(0 < v <= 1 + 1e-12 for v in values[:warmup])  # warm-up: rising, never 0
    assert all(a <= b for a, b in zip(values[:warmup], values[1:warmup]))
    after = values[warmup:]
    assert after[0] == pytest.approx(1.0)
    assert all(b <= a + 1e-12 for a, b in zip(after, after[1:]))  # decay never rises
    assert after[-1] == pytest.approx(1.0 if decay == "constant" else floor)


@pytest.mark.parametrize("kwargs, culprit", [({"warmup_steps": -1}, "warmup_steps"), ({"decay": "step"}, "decay"),
                                             ({"min_lr_ratio": 1.5}, "min_lr_ratio")])
def test_bad_schedules_are_named(kwargs, culprit):
    with pytest.raises(UsageError, match=culprit):
        LRSchedule(**kwargs)


def test_a_fit_follows_the_configured_schedule_keeps_the_sinks_rate_and_logs_its_curves(
        tiny_model_dir, tiny_corpus_dir, tmp_path, monkeypatch, capsys):
    import mlflow

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert main([
        "fit", f"--config={REPO / 'experiments/distill/full.yaml'}", f"--model.init_args.teacher={tiny_model_dir}",
        "--model.init_args.learning_rate=1e-3", "--model.init_args.sink_learning_rate=1e-2",
        "--model.init_args.schedule={warmup_steps: 2, decay: cosine, min_lr_ratio: 0.1}",
        f"--data.init_args.dataset_path={tiny_corpus_dir}", "--data.init_args.granularity=16",
        "--data.init_args.min_block_tokens=4", "--data.init_args.max_block_tokens=32",
        "--data.init_args.sample_tokens=96", "--data.init_args.global_tokens=32", "--trainer.accelerator=cpu",
        "--trainer.max_steps=6", "--trainer.limit_val_batches=0", "--trainer.log_every_n_steps=1",
        "--trainer.enable_checkpointing=false",
    ]) == 0
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("block-distillation").experiment_id])
    schedule = LRSchedule(warmup_steps=2, decay="cosine", min_lr_ratio=0.1)
    lr = [m.value for m in sorted(client.get_metric_history(run.info.run_id, "train/lr"), key=lambda m: m.step)]
    sinks = [m.value for m in sorted(client.get_metric_history(run.info.run_id, "train/lr_1"), key=lambda m: m.step)]
    assert lr == pytest.approx([1e-3 * schedule.multiplier(step, 6) for step in range(6)])
    assert all(math.isclose(s / w, 10.0, rel_tol=1e-6) for s, w in zip(sinks, lr))  # the sinks keep their own rate
    assert {"train/grad_norm", "train/tokens_per_s", "train/step_time_s"} <= set(run.data.metrics)
    out = capsys.readouterr().out  # captured: not a terminal, so progress lines are printed
    assert "step 6/6 (100%) loss" in out and "tokens/s eta" in out
