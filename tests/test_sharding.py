"""FSDP2 on CPU (gloo): per-layer units, teacher apart and frozen, exact outputs, and a 2-process
train / sharded checkpoint / resume run through Lightning's ModelParallelStrategy."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess

import pytest
import torch
import torch.distributed as dist

from conftest import REPO, tiny_config
from lit_block import BlockAttentionLM
from lit_block.sharding import ShardingConfig, decoder_layers, shard_block_lm


@pytest.mark.parametrize("family", ["llama", "qwen2", "qwen3", "mistral"])
def test_decoder_layers_are_the_units_transformers_names(family):
    lm = BlockAttentionLM.from_pretrained(tiny_config(family))
    layers = decoder_layers(lm.model)
    assert len(layers) == lm.config.num_hidden_layers and all("DecoderLayer" in type(m).__name__ for m in layers)
    lm.model._no_split_modules = []
    with pytest.raises(ValueError, match="names no decoder layer class"):
        decoder_layers(lm.model)
    with pytest.raises(ValueError, match="param_dtype 'fp8'"):
        ShardingConfig(param_dtype="fp8")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def gloo_group():
    """A one-process gloo group (the FSDP2 path on a mesh of one CPU rank)."""
    if dist.is_initialized():
        dist.destroy_process_group()
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
    from torch.distributed.device_mesh import init_device_mesh

    yield init_device_mesh("cpu", (1,))
    dist.destroy_process_group()


def test_fsdp2_shards_per_layer_keeps_the_teacher_apart_and_computes_the_same_function(gloo_group):
    torch.manual_seed(0)
    student = BlockAttentionLM.from_pretrained(tiny_config("qwen3"), num_sink_tokens=2)
    teacher = BlockAttentionLM.from_pretrained(tiny_config("qwen3"))
    plain = BlockAttentionLM.from_pretrained(tiny_config("qwen3"), num_sink_tokens=2)
    plain.load_state_dict(student.state_dict())
    teacher.requires_grad_(False)
    fp32 = ShardingConfig(param_dtype="float32", activation_checkpointing=True)
    units = shard_block_lm(student, gloo_group, fp32)
    teacher_units = shard_block_lm(teacher, gloo_group, fp32, frozen=True)
    assert len(units) == student.config.num_hidden_layers + 1 and units[-1] is student
    assert not {id(u) for u in units} & {id(u) for u in teacher_units}  # the teacher's units are its own
    assert {type(p).__name__ for p in student.parameters()} == {"DTensor"}
    assert all(p.requires_grad for p in student.parameters()) and not any(p.requires_grad for p in teacher.parameters())
    assert student.model.is_gradient_checkpointing and not teacher.model.is_gradient_checkpointing
    ids = torch.randint(0, 128, (2, 24))
    blocks = torch.tensor([[0] * 8 + [1] * 9 + [-1] * 7, [0] * 3 + [1] * 12 + [-1] * 9])
    student.train(), plain.train()
    ours, _ = student.token_hidden_states(ids, blocks)
    theirs, _ = plain.token_hidden_states(ids, blocks)
    assert (ours - theirs).abs().max() < 1e-5
    full = teacher.full_attention_hidden_states(ids)
    assert full.shape == (2, 24, teacher.config.hidden_size)
    student.model.get_output_embeddings()(ours).logsumexp(-1).mean().backward()  # the head outside forward
    assert student.sink_embeddings.grad is not None and torch.isfinite(student.sink_embeddings.grad.full_tensor()).all()


@pytest.mark.skipif(shutil.which("torchrun") is None and not (REPO / ".venv/bin/torchrun").exists(), reason="no torchrun")
def test_two_processes_train_save_a_sharded_checkpoint_and_resume_on_the_same_loss_curve(tiny_model_dir, tmp_path):
    torchrun = shutil.which("torchrun") or str(REPO / ".venv/bin/torchrun")
    out = tmp_path / "result.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [torchrun, "--nproc_per_node", "2", "--master_port", str(free_port()), str(REPO / "scripts/fsdp_check.py"),
           "--teacher", str(tiny_model_dir), "--workdir", str(tmp_path / "ckpt"), "--out", str(out),
           "--config", str(REPO / "experiments/strategies/fsdp2.yaml")]  # the shipped overlay's settings
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["world_size"] == 2
    assert result["max_abs_diff_after_resume"] < 1e-6  # the resumed curve continues the uninterrupted one
    assert result["resume_state_exact"] and result["state_at_resume"]["step"] == 3  # starts where the checkpoint was
    assert result["state_at_resume"]["optimizer_local"] > 0  # the optimizer state came back too
    assert {"__0_0.distcp", "__1_0.distcp"} <= set(result["checkpoint_files"])  # one shard file per rank
    assert result["teacher_keys_in_checkpoint"] == [] and result["optimizer_keys_in_checkpoint"] > 0
    assert result["teacher_is_sharded"] and result["trainable"] == ["student"]
    assert result["parameter_types"] == ["DTensor"]
    assert result["strategy"] == "FSDP2Strategy" and result["tokens_per_s_per_gpu"] > 0


def test_the_distillation_step_benchmark_runs_and_prints_its_table(tiny_model_dir, capsys):
    from lit_block.cli import main

    assert main(["bench", "distill", "--model", str(tiny_model_dir), "--tokens", "128", "--block-tokens", "32",
                 "--global-tokens", "32", "--device", "cpu", "--backends", "sdpa", "--repeat", "1",
                 "--warmup", "2", "--checkpointing", "on", "--breakdown"]) == 0
    out = capsys.readouterr().out
    assert "median of 1 steps after 2;" in out
    assert "| 128 | naive (HF, dense mask, full logits) | on |" in out and "| 128 | lit-block, sdpa | on |" in out
    phases = out.split("phases: ")[1].splitlines()[0]  # --breakdown: every phase of the step, timed
    assert [p.rsplit(" ", 2)[0] for p in phases.split("; ")] == [
        "teacher forward, full attention", "teacher forward, block attention + sensitivity", "student forward",
        "divergence (chunked, forward)", "backward", "optimizer step"]


def test_the_distillation_benchmark_compiles_every_decoder_layer_of_both_models_in_place(tiny_model_dir):
    from lit_block.benchmarks.distill_step import make_models
    from lit_block.sharding import decoder_layers

    teacher, student = make_models(str(tiny_model_dir), "cpu", 2, "sdpa", compile=True)
    layers = decoder_layers(teacher.model) + decoder_layers(student.model)
    assert layers and all(layer._compiled_call_impl is not None for layer in layers)
    assert not any("_orig_mod" in name for name, _ in student.named_parameters())  # checkpoints keep their names


def test_a_lora_student_shards_and_trains_only_its_adapters_and_sinks(gloo_group):
    pytest.importorskip("peft")
    from lit_block.modules.block_distillation import add_lora

    torch.manual_seed(0)
    student = BlockAttentionLM.from_pretrained(tiny_config("llama"), num_sink_tokens=1)
    add_lora(student, rank=4, alpha=8, targets=None)
    shard_block_lm(student, gloo_group, ShardingConfig(param_dtype="float32"))
    trainable = {n for n, p in student.named_parameters() if p.requires_grad}
    assert "sink_embeddings" in trainable and all("lora_" in n for n in trainable - {"sink_embeddings"})
    ids = torch.randint(0, 128, (1, 16))
    hidden, _ = student.token_hidden_states(ids, torch.tensor([[0] * 6 + [1] * 5 + [-1] * 5]))
    student.model.get_output_embeddings()(hidden).logsumexp(-1).mean().backward()
    grads = [p.grad for n, p in student.named_parameters() if "lora_A" in n]
    assert grads and all(g is not None for g in grads)


def test_the_phase_breakdown_runs_with_the_checkpointing_it_reports(tiny_model_dir):
    from lit_block.benchmarks.distill_step import batch_for, breakdown, make_models

    teacher, student = make_models(str(tiny_model_dir), "cpu", 2, "sdpa")
    batch = batch_for(64, 16, 16, teacher.config.vocab_size, "cpu")
    for checkpointing in (True, False):  # the second call must undo the first's setting
        phases = breakdown(teacher, student, batch, checkpointing, "cpu", repeat=1)
        assert student.model.is_gradient_checkpointing == checkpointing and len(phases) == 6


@pytest.mark.parametrize("n", [1, 5, 28, 36])
def test_a_share_of_layers_checkpoints_that_many_evenly_spaced(n):
    from lit_block.sharding import checkpointed_layers

    for share in (0.0, 0.25, 0.4, 0.5, 0.75, 1.0):
        on = checkpointed_layers(n, share)
        assert len(on) == n and sum(on) == int(share * n + 1e-9)
        where = [i for i, b in enumerate(on) if b]
        gaps = {b - a for a, b in zip(where, where[1:])}
        assert len(gaps) <= 2 and (not gaps or max(gaps) - min(gaps) <= 1)  # spread over the depth, not bunched
    with pytest.raises(ValueError, match="activation_checkpointing 1.5"):
        ShardingConfig(activation_checkpointing=1.5)


def test_checkpointing_a_share_of_layers_recomputes_only_those_and_keeps_the_gradients():
    from lit_block.sharding import set_activation_checkpointing

    torch.manual_seed(0)
    config = tiny_config("llama")
    config.num_hidden_layers = 4
    lm = BlockAttentionLM.from_pretrained(config).train()
    layers = decoder_layers(lm.model)
    calls = [0] * len(layers)
    for i, layer in enumerate(layers):
        # a pre-hook inside the layer: a checkpointed layer runs its inner forward again in the backward pass (a
        # post-hook may not: the recomputation stops once it has what the backward needs)
        layer.mlp.register_forward_pre_hook(lambda *_, i=i: calls.__setitem__(i, calls[i] + 1))
    ids = torch.randint(0, 128, (1, 16))
    grads = {}
    for share in (0.0, 0.5, 1.0, False):  # False last: the switch off must undo a share
        set_activation_checkpointing(lm.model, share)
        calls[:] = [0] * len(layers)
        lm.model(input_ids=ids).logits.logsumexp(-1).mean().backward()
        grads[share] = {n: p.grad.clone() for n, p in lm.named_parameters() if p.grad is not None}
        lm.zero_grad(set_to_none=True)
        recomputed = [c - 1 for c in calls]
        expected = [0, 1, 0, 1] if share == 0.5 else [int(bool(share))] * len(layers)
        assert recomputed == expected, (share, recomputed)
    assert grads[0.0]
    for share in (0.5, 1.0):
        torch.testing.assert_close(grads[share], grads[0.0])


def test_bench_distill_takes_a_share_of_checkpointed_layers_and_refuses_others(tiny_model_dir, capsys):
    from lit_block.cli import main

    assert main(["bench", "distill", "--model", str(tiny_model_dir), "--tokens", "64", "--block-tokens", "16",
                 "--global-tokens", "16", "--device", "cpu", "--backends", "sdpa", "--repeat", "1",
                 "--checkpointing", "0.5", "--naive", "false"]) == 0
    assert "| 64 | lit-block, sdpa | 50% of layers |" in capsys.readouterr().out
    assert main(["bench", "distill", "--checkpointing", "most"]) == 2
    assert "--checkpointing 'most': expected on, off, both or a share" in capsys.readouterr().err


def test_the_benchmark_shapes_have_their_published_sizes():
    """The random-weight shapes the GPU benchmarks time are the published models' sizes (parameters on the meta
    device: nothing allocated)."""
    from transformers import AutoModelForCausalLM

    from lit_block.benchmarks.ttft import SHAPES, shape_config

    published = {"llama-3.1-8b": 8.03e9, "qwen3-4b": 4.02e9, "qwen3-0.6b": 0.596e9, "smollm2-135m": 0.1345e9}
    assert set(SHAPES) == set(published)
    for name, size in published.items():
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(shape_config(name))
        assert sum(p.numel() for p in model.parameters()) == pytest.approx(size, rel=0.005), name
