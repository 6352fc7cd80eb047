"""The one distillation step: the benchmark times the step the module trains with, on the full method's settings."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from lit_block.distillation_step import DistillSettings, position_weights, sample_released
from lit_block.modules import BlockDistillationModule

FULL_YAML = Path(__file__).resolve().parents[1] / "experiments" / "distill" / "full.yaml"


def full_method() -> tuple[dict, dict, dict]:
    """experiments/distill/full.yaml: the module's init_args, the weighting's and the block dropout's."""
    config = yaml.safe_load(FULL_YAML.read_text())
    callbacks = {c["class_path"].rsplit(".", 1)[1]: c.get("init_args", {}) for c in config["trainer"]["callbacks"]}
    return config["model"]["init_args"], callbacks["AttentionSensitivityWeighting"], callbacks["BlockDropoutScheduler"]


def test_the_benchmark_runs_the_full_methods_settings():
    from lit_block.benchmarks import distill_step as bench

    model, weighting, dropout = full_method()
    assert vars(bench.SENSITIVITY) == weighting
    assert dropout["start"] <= bench.RELEASE_PROBABILITY <= dropout["end"]  # a release probability of the schedule
    assert bench.build_parser().parse_args([]).isolated_weight == model["isolated_weight"]
    assert (model["divergence"], model["temperature"]) == (DistillSettings.divergence, DistillSettings.temperature)


def test_the_benchmarks_step_and_the_modules_step_give_the_same_loss_and_gradients(tiny_model_dir):
    """Same models, batch and random draws: ``lit-block bench distill``'s loss and ``training_step``'s agree, and so
    do the student's gradients, sinks included."""
    from lit_block.benchmarks.distill_step import RELEASE_PROBABILITY, SENSITIVITY, batch_for, ours_loss

    model, weighting, _ = full_method()
    torch.manual_seed(0)
    module = BlockDistillationModule(teacher=str(tiny_model_dir), num_sink_tokens=2, attn_backend="sdpa",
                                     isolated_weight=0.3, chunk_size=7, divergence=model["divergence"])
    module.configure_model()
    module.train()
    with torch.no_grad():
        module.student.sink_embeddings.normal_()  # sinks that differ from each other and from zero
    module.release_probability, module.sensitivity = RELEASE_PROBABILITY, SENSITIVITY
    batch = batch_for(96, 16, 24, module.student.config.vocab_size, "cpu")

    def loss_and_grads(step):
        module.student.zero_grad(set_to_none=True)
        torch.manual_seed(1)  # the released blocks' draw
        loss = step()
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in module.student.named_parameters()}

    ours, ours_grads = loss_and_grads(lambda: module.training_step(batch, 0))
    settings = DistillSettings(divergence=model["divergence"], isolated_weight=0.3, chunk_size=7)
    bench, bench_grads = loss_and_grads(lambda: ours_loss(module.teacher, module.student, batch, settings))
    assert torch.isfinite(ours) and ours > 0
    torch.testing.assert_close(bench, ours, rtol=0, atol=0)
    assert ours_grads.keys() == bench_grads.keys() and ours_grads["sink_embeddings"].abs().sum() > 0
    for name, grad in ours_grads.items():
        torch.testing.assert_close(bench_grads[name], grad, rtol=0, atol=0, msg=name)


@pytest.mark.parametrize("isolated_weight", [0.0, 0.25])
def test_position_weights_score_real_next_tokens_only(isolated_weight):
    torch.manual_seed(0)
    mask = torch.ones(3, 12, dtype=torch.long)
    mask[1, 9:] = 0  # a padded row
    global_rows = torch.rand(3, 12) < 0.5
    w = position_weights(mask, global_rows, isolated_weight)
    assert (w[:, -1] == 0).all() and (w[1, 8:] == 0).all()  # no next token to predict
    inside = torch.zeros_like(w, dtype=torch.bool)
    inside[:, :-1] = True
    inside[1, 8:] = False
    assert (w[inside & global_rows] == 1).all() and (w[inside & ~global_rows] == isolated_weight).all()


def test_released_blocks_follow_the_probability_and_none_at_zero():
    blocks = torch.tensor([[0] * 4 + [1] * 4 + [2] * 4 + [-1] * 4] * 2000)
    assert sample_released(blocks, 0.0).shape == (2000, 3) and not sample_released(blocks, 0.0).any()
    torch.manual_seed(0)
    share = sample_released(blocks, 0.3).float().mean()
    assert abs(float(share) - 0.3) < 0.02
