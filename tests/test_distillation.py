"""Block distillation: the module, its callbacks alone, checkpoints without the teacher, export."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch

from callbacks import AttentionSensitivityWeighting, BlockDropoutScheduler, SinkTokenInitializer
from datamodules import TextBlocksDataModule
from lit_block import BlockAttentionLM
from lit_block.distillation_step import teacher_sensitivity
from lit_block.modules import BlockDistillationModule


def test_dropout_schedules():
    linear = BlockDropoutScheduler(0.0, 0.3, "linear")
    assert [round(linear.value(s, 10), 3) for s in (0, 5, 10, 20)] == [0.0, 0.15, 0.3, 0.3]
    cosine = BlockDropoutScheduler(0.1, 0.5, "cosine", warmup_steps=2)
    assert cosine.value(1, 12) == 0.1 and math.isclose(cosine.value(7, 12), 0.3)
    assert BlockDropoutScheduler(0.0, 0.2, "constant").value(0, 10) == 0.2
    restored = BlockDropoutScheduler()
    linear.probability = 0.27
    restored.load_state_dict(linear.state_dict())
    assert restored.probability == 0.27
    with pytest.raises(ValueError, match="schedule must be one of"):
        BlockDropoutScheduler(schedule="step")
    with pytest.raises(ValueError, match="end must be <= 1, got 1.5"):
        BlockDropoutScheduler(end=1.5)


def test_sensitivity_weights_are_normalised_tempered_and_clipped():
    cb = AttentionSensitivityWeighting(temperature=1.0, min_weight=0.5, max_weight=2.0)
    kl = torch.tensor([[0.0, 1.0, 2.0, 5.0]])
    valid = torch.tensor([[True, True, True, False]])
    w = cb.settings.weights(kl, valid)
    assert w.tolist() == [[0.5, 1.0, 2.0, 0.0]]  # mean over valid = 1: 0 -> clipped up, 2 stays, padding 0


@pytest.fixture()
def module_and_data(tiny_model_dir):
    torch.manual_seed(0)
    module = BlockDistillationModule(teacher=str(tiny_model_dir), num_sink_tokens=2, attn_backend="sdpa",
                                     isolated_weight=0.1)
    module.configure_model()
    data = TextBlocksDataModule(tokenizer=str(tiny_model_dir), sample_tokens=96, block_tokens=16, global_tokens=32,
                                batch_size=2, max_samples=4)
    data.setup("fit")
    return module, data


def test_training_step_trains_the_student_and_its_sinks_never_the_teacher(module_and_data):
    module, data = module_and_data
    batch = next(iter(data.train_dataloader()))
    module.train()
    assert not module.teacher.training
    loss = module.training_step(batch, 0)
    loss.backward()
    assert torch.isfinite(loss) and loss > 0
    assert module.student.sink_embeddings.grad.abs().sum() > 0
    assert all(p.grad is None for p in module.teacher.parameters())
    module.release_probability = 1.0
    assert module.sample_released(batch["block_ids"]).all()


def test_sensitivity_is_zero_in_the_first_block_and_positive_after_it(module_and_data):
    module, data = module_and_data
    batch = next(iter(data.val_dataloader()))
    kl = teacher_sensitivity(module.teacher, batch, module.teacher_hidden(batch))
    first_block = (batch["block_ids"] == 0) & batch["attention_mask"].bool()
    later = (batch["block_ids"] > 0) | (batch["block_ids"] < 0)
    assert kl[first_block].abs().max() < 1e-4  # the first block sees the same context either way
    assert kl[later & batch["attention_mask"].bool()].max() > 1e-4


def test_sensitivity_does_not_depend_on_its_chunk_size(module_and_data):
    module, data = module_and_data
    batch = next(iter(data.val_dataloader()))
    full = module.teacher_hidden(batch)
    whole = teacher_sensitivity(module.teacher, batch, full, chunk_size=100_000)
    chunked = teacher_sensitivity(module.teacher, batch, full, chunk_size=5)
    assert whole.shape == batch["input_ids"].shape
    torch.testing.assert_close(chunked, whole, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="max_weight must be >= 2"):
        AttentionSensitivityWeighting(min_weight=2.0, max_weight=1.0)


def test_sink_warmup_lowers_its_loss(module_and_data):
    module, data = module_and_data
    losses = SinkTokenInitializer("warmup", warmup_steps=15, warmup_lr=0.05).warm_up(module, data.train_dataloader())
    assert losses[-1] < losses[0]


def test_checkpoint_leaves_out_the_teacher_and_export_loads_with_sinks(module_and_data, tmp_path):
    module, data = module_and_data
    trainer = L.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_progress_bar=False,
                        default_root_dir=tmp_path, callbacks=[BlockDropoutScheduler(0.5, 0.5, "constant")],
                        limit_val_batches=1)
    trainer.fit(module, datamodule=data)
    ckpt = tmp_path / "final.ckpt"
    trainer.save_checkpoint(ckpt)
    state = torch.load(ckpt, weights_only=False)
    assert state["state_dict"] and not any(k.startswith("teacher") for k in state["state_dict"])
    assert not any(p is q for p in module.parameters() for q in module.teacher.parameters())  # not optimized either
    assert any(k.startswith("student.") for k in state["state_dict"])
    assert state["callbacks"]["BlockDropoutScheduler"]["probability"] == 0.5
    module.export(str(tmp_path / "student"))
    loaded = BlockAttentionLM.from_pretrained(tmp_path / "student").eval()
    assert loaded.num_sink_tokens == 2
    batch = next(iter(data.val_dataloader()))
    with torch.no_grad():
        ours = module.student.eval()(batch["input_ids"], batch["block_ids"], batch["attention_mask"]).logits
        theirs = loaded(input_ids=batch["input_ids"], block_ids=batch["block_ids"],
                        attention_mask=batch["attention_mask"]).logits
    assert (ours - theirs).abs().max() < 1e-4


def test_windows_take_the_segmenter_blocks_inside_the_context_and_the_continuation_as_global():
    from datamodules.distill import window_samples

    samples = window_samples(list(range(100)), [10, 30, 75], sample_tokens=50, global_tokens=10)
    assert len(samples) == 2
    first, second = samples
    assert first["input_ids"] == list(range(50)) and second["input_ids"] == list(range(50, 100))
    assert [first["block_ids"].count(i) for i in range(3)] == [10, 20, 10] and first["block_ids"][40:] == [-1] * 10
    assert [second["block_ids"].count(i) for i in range(2)] == [25, 15]
    assert sum(first["target_mask"]) == 9 and first["target_mask"][41:] == [True] * 9


def test_eval_lm_scores_teacher_references_and_an_exported_student(module_and_data, tiny_model_dir, tiny_corpus_dir,
                                                                   tmp_path, monkeypatch, capsys):
    import mlflow

    from lit_block.cli import main

    module, _ = module_and_data
    module.export(str(tmp_path / "student"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert main(["eval-lm", "--teacher", str(tiny_model_dir), "--models", f"student={tmp_path / 'student'}",
                 "--dataset", str(tiny_corpus_dir), "--split", "test", "--granularity", "16", "--max-samples", "3"]) == 0
    out = capsys.readouterr().out
    assert "| teacher, full attention |" in out and "| student |" in out
    full_row = next(line for line in out.splitlines() if line.startswith("| teacher, full attention"))
    assert "| 0.0000 |" in full_row and "100.0%" in full_row  # the teacher has no KL to itself
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("eval-lm").experiment_id])
    assert {"student.kl_gap_closed", "student.own_gap_closed", "student.nll_gap_closed_vs_teacher",
            "teacher_block_attention_untrained.kl_gap_closed"} <= set(run.data.metrics)
    assert run.data.metrics["teacher_block_attention_untrained.kl_gap_closed"] == 0.0  # the reference point


def test_eval_lm_scores_held_out_plain_text_families(module_and_data, tiny_model_dir, tmp_path, capsys):
    from conftest import REPO
    from lit_block.cli import main

    module, _ = module_and_data
    module.export(str(tmp_path / "student"))
    family = tmp_path / "family"
    family.mkdir()
    (family / "ruth.txt").write_text((REPO / "datamodules" / "texts" / "kjv_ruth.txt").read_text())
    assert main(["eval-lm", "--teacher", str(tiny_model_dir), "--models", f"student={tmp_path / 'student'}",
                 "--texts", str(family), "--sample-tokens", "96", "--global-tokens", "32", "--text-block-tokens", "16",
                 "--max-samples", "3", "--experiment", ""]) == 0
    out = capsys.readouterr().out
    assert f"3 windows of 96 tokens from {family}" in out and "| student |" in out


def test_lora_student_trains_adapters_and_sinks_only_and_exports_merged(tiny_model_dir, tmp_path):
    pytest.importorskip("peft")
    torch.manual_seed(0)
    module = BlockDistillationModule(teacher=str(tiny_model_dir), num_sink_tokens=1, attn_backend="sdpa", lora_rank=4)
    module.configure_model()
    trainable = {n for n, p in module.student.named_parameters() if p.requires_grad}
    assert "sink_embeddings" in trainable and all("lora_" in n for n in trainable - {"sink_embeddings"})
    data = TextBlocksDataModule(tokenizer=str(tiny_model_dir), sample_tokens=96, block_tokens=16, global_tokens=32,
                                batch_size=2, max_samples=2)
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    module.train()
    module.training_step(batch, 0).backward()
    lora_b = [p for n, p in module.student.named_parameters() if "lora_B" in n]
    assert lora_b and all(p.grad is not None for p in lora_b)
    with torch.no_grad():  # move the adapters off zero so the merge matters
        for p in lora_b:
            p.add_(0.05)
    module.export(str(tmp_path / "student"))
    loaded = BlockAttentionLM.from_pretrained(tmp_path / "student").eval()
    # what the GPU recipe's marks do mid-training: the plain student's weights into a model built without peft
    shell = BlockAttentionLM.from_pretrained(tiny_model_dir, num_sink_tokens=1).eval()
    shell.load_state_dict(module.plain_student().state_dict())
    assert any("lora_" in n for n, _ in module.student.named_parameters())  # the training student keeps its adapters
    with torch.no_grad():
        ours = module.student.eval()(batch["input_ids"], batch["block_ids"], batch["attention_mask"]).logits
        for other in (loaded, shell):
            theirs = other(batch["input_ids"], batch["block_ids"], batch["attention_mask"]).logits
            assert (ours - theirs).abs().max() < 1e-4


def test_sensitivity_weighting_reuses_the_teachers_full_attention_pass(module_and_data):
    """With the weighting on, a step runs the teacher twice (full attention, shared by the loss and the weights;
    block attention, for the weights), not three times; off, once."""
    module, data = module_and_data
    batch = next(iter(data.train_dataloader()))
    module.train()
    calls = []
    hook = module.teacher.model.base_model.register_forward_hook(lambda *a: calls.append(1))
    module.training_step(batch, 0)
    plain = len(calls)
    module.sensitivity = AttentionSensitivityWeighting().settings
    module.training_step(batch, 0)
    hook.remove()
    assert (plain, len(calls) - plain) == (1, 2)


def test_the_sensitivity_callback_sets_the_weighting_for_one_fit(module_and_data, tmp_path):
    module, data = module_and_data
    seen = []

    class Spy(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.append(pl_module.sensitivity)

    callback = AttentionSensitivityWeighting(temperature=2.0)
    L.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_progress_bar=False, enable_checkpointing=False,
              default_root_dir=tmp_path, limit_val_batches=0, callbacks=[callback, Spy()]).fit(module, datamodule=data)
    assert seen == [callback.settings] and seen[0].temperature == 2.0
    assert module.sensitivity is None  # taken back: a later fit without the callback trains unweighted


def test_training_resumes_from_a_checkpoint_without_the_teacher(tiny_model_dir, tmp_path):
    def trainer(steps):
        return L.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_progress_bar=False,
                         default_root_dir=tmp_path, limit_val_batches=0, callbacks=[BlockDropoutScheduler(0.0, 0.4)])

    def module():
        return BlockDistillationModule(teacher=str(tiny_model_dir), num_sink_tokens=1, attn_backend="sdpa")

    data = TextBlocksDataModule(tokenizer=str(tiny_model_dir), sample_tokens=96, block_tokens=16, global_tokens=32,
                                batch_size=2, max_samples=4)
    first = trainer(2)
    torch.manual_seed(0)
    first.fit(module(), datamodule=data)
    first.save_checkpoint(tmp_path / "two.ckpt")
    saved = torch.load(tmp_path / "two.ckpt", weights_only=False)
    resumed = module()
    second = trainer(3)
    second.fit(resumed, datamodule=data, ckpt_path=tmp_path / "two.ckpt")
    assert second.global_step == 3
    assert second.callbacks[0].probability > 0  # the schedule went on from its saved state
    assert saved["callbacks"]["BlockDropoutScheduler"]["probability"] > 0
    assert resumed.teacher is not None and not any(k.startswith("teacher") for k in saved["state_dict"])
    assert not any(k.startswith("teacher") for k in resumed.state_dict())  # reloaded from its path, never saved


def test_teacher_and_student_vocabularies_must_match(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    from conftest import tiny_config

    AutoModelForCausalLM.from_config(tiny_config("llama", vocab_size=300)).save_pretrained(tmp_path / "other")
    module = BlockDistillationModule(teacher=str(tiny_model_dir), student=str(tmp_path / "other"), attn_backend="sdpa")
    with pytest.raises(ValueError, match=r"teacher vocabulary \(512\) differs from the student's \(300\)"):
        module.configure_model()


def test_distill_data_mixes_in_rag_samples_built_from_the_corpus(tiny_model_dir, tmp_path):
    from datasets import Dataset, DatasetDict
    from test_rag_data import FAQ, GCIDE, corpus_row

    from datamodules import DistillDataModule
    from lit_block.rag.prompt import PLAIN

    rows = [corpus_row("gcide-0", "dictionary", "gcide", GCIDE, "coarse"), corpus_row("faq-0", "faq", "python-faq", FAQ, "middle")]
    DatasetDict({"test": Dataset.from_list(rows)}).save_to_disk(str(tmp_path / "corpus"))
    data = DistillDataModule(dataset_path=str(tmp_path / "corpus"), tokenizer=str(tiny_model_dir), method="fixed",
                             granularity=32, min_block_tokens=0, sample_tokens=512, global_tokens=64,
                             rag_tasks=["definition", "faq"], rag_passages=3, batch_size=2)
    data.setup()
    rag = [s for s in data.samples["test"] if max(s["block_ids"]) == 3]  # instruction + 3 passages
    assert len(rag) >= 4
    tok = BlockAttentionLM.from_pretrained(tiny_model_dir).tokenizer
    instruction = tok(PLAIN[0], add_special_tokens=False)["input_ids"]
    newline = tok("\n", add_special_tokens=False)["input_ids"]
    for s in rag:
        assert [t for t, b in zip(s["input_ids"], s["block_ids"]) if b == 0] == instruction  # the shared block
        answer = [t for t, m in zip(s["input_ids"], s["target_mask"]) if m]
        global_ids = [t for t, b in zip(s["input_ids"], s["block_ids"]) if b < 0]
        assert 0 < len(answer) < len(global_ids) and global_ids[-len(answer):] == answer  # question, then answer
        assert answer[-len(newline):] == newline  # the answer ends where eval-rag's stop string is
    module = BlockDistillationModule(teacher=str(tiny_model_dir), num_sink_tokens=1, attn_backend="sdpa")
    module.configure_model()
    module.train()
    batch = next(iter(data.test_dataloader()))
    assert torch.isfinite(module.training_step(batch, 0))


def test_compiled_layers_train_like_eager_layers_and_keep_parameter_names(tiny_model_dir):
    """``compile_layers`` changes how the layers run, not what they compute or what checkpoints hold. The
    ``aot_eager`` backend traces the layers (dynamo, autograd) like inductor does but skips kernel generation,
    which takes minutes on two CPU cores; the GPU benchmark runs inductor."""
    data = TextBlocksDataModule(tokenizer=str(tiny_model_dir), sample_tokens=96, block_tokens=16, global_tokens=32,
                                batch_size=2, max_samples=4)
    data.setup("fit")
    batches = list(data.train_dataloader())[:2]
    results = {}
    for compiled in (False, True):
        torch.manual_seed(0)
        module = BlockDistillationModule(teacher=str(tiny_model_dir), num_sink_tokens=2, attn_backend="sdpa",
                                         isolated_weight=0.1, learning_rate=1e-3,
                                         compile_layers="aot_eager" if compiled else False)
        module.configure_model()
        module.train()
        optimizer = torch.optim.AdamW(module.student.parameters(), lr=1e-3)
        losses = []
        for i, batch in enumerate(batches):
            loss = module.training_step(dict(batch), i)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            losses.append(loss.item())
        results[compiled] = (losses, module.student.state_dict())
    (eager, eager_state), (comp, comp_state) = results[False], results[True]
    assert list(comp_state) == list(eager_state)  # no `_orig_mod.` prefixes: checkpoints and exports unchanged
    assert comp == pytest.approx(eager, rel=1e-4, abs=1e-6)  # the second loss comes after a step: gradients agree too
    layers = module.student.model.model.layers
    assert all(layer._compiled_call_impl is not None for layer in layers)


def test_compiled_layers_serve_every_sequence_length_without_falling_back_to_eager(tiny_model_dir):
    """Batches padded to their longest sample vary in length; teacher and student passes (grad or not) share the
    layers' code. One static graph per pass kind, then one dynamic graph, must serve them all: with a graph per
    length, dynamo's recompile limit (8) would be hit and the layers would silently run eager."""
    torch._dynamo.reset()
    graphs, calls = [], []

    def counting_backend(gm, example_inputs):  # a torch.compile backend: counts graphs built and graph calls
        graphs.append(gm)

        def run(*args):
            calls.append(1)
            return gm.forward(*args)

        return run

    lm = BlockAttentionLM.from_pretrained(str(tiny_model_dir), attn_backend="sdpa")
    lm.compile_decoder_layers(counting_backend)
    n_layers = len(lm.model.model.layers)
    for length in (16, 24, 40, 48, 56, 72, 80, 96, 104, 120):
        ids = torch.randint(0, 100, (1, length))
        blocks = torch.cat([torch.arange(length - 8) // 8, torch.full((8,), -1)])[None]
        with torch.no_grad():  # a teacher's pass
            lm.token_hidden_states(ids, blocks)
        calls.clear()
        hidden, _ = lm.token_hidden_states(ids, blocks)  # a student's pass, with grad
        hidden.sum().backward()
        assert len(calls) == n_layers, f"length {length}: {len(calls)} of {n_layers} layers ran compiled"
    assert len(graphs) <= 4  # static and dynamic, with and without grad: not one per length
    assert torch._dynamo.config.recompile_limit >= 64  # room for the pass kinds of a teacher and a student


def test_validating_an_untrained_student_logs_no_gap_closed(module_and_data):
    """Validation of the untrained student (the teacher plus fresh sinks, as a reference sweep runs it) logs the
    teacher's block-attention cost but no "gap closed" figure: there is nothing trained to close it."""
    module, data = module_and_data
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=1)
    (metrics,) = trainer.validate(module, data.val_dataloader(), verbose=False)
    assert {"val/block_gap", "val/kl_teacher", "val/kl_teacher_block"} <= set(metrics)
    assert not [k for k in metrics if k.endswith("gap_closed")]
