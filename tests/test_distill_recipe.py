"""The GPU recipe (``scripts/distill_recipe.py``) end to end on the CPU with a tiny model, and its data pieces."""

from __future__ import annotations

import json
import subprocess
import sys
import types

import pytest
import torch

from conftest import REPO, load_script
from datamodules.distill import window_samples


@pytest.mark.parametrize("offset", [0, 5, 17])
def test_windows_at_an_offset_tile_the_document_from_there(offset):
    ids = list(range(200))
    cuts = [0, 13, 40, 41, 90, 150]
    windows = window_samples(ids, cuts, sample_tokens=48, global_tokens=16, offset=offset)
    assert len(windows) == (200 - offset) // 48
    for i, w in enumerate(windows):
        start = offset + 48 * i
        assert w["input_ids"] == ids[start:start + 48]  # packing keeps the tokens in order
        blocks = torch.tensor(w["block_ids"])
        assert (blocks[-16:] == -1).all() and (blocks[:-16] >= 0).all()  # the last 16 tokens are the global block
        starts = [start + j for j in range(1, 32) if blocks[j] != blocks[j - 1]]
        assert starts == [c for c in cuts if start < c < start + 32]  # context blocks start at the document's cuts


def test_each_pass_sees_every_window_once_in_a_seeded_order():
    recipe = load_script("distill_recipe")
    ids = torch.arange(10 * 4, dtype=torch.int32).view(10, 4)
    blocks = torch.tensor([[0, 0, -1, -1]] * 10, dtype=torch.int8)
    steps = recipe.StepBatches(ids, blocks, batch_size=3, steps=6, seed=1, full_attention=False)
    first = [int(r) for i in range(3) for r in steps[i]["input_ids"][:, 0] // 4]  # one pass: 3 batches of 3
    assert len(set(first)) == 9  # no window twice within a pass
    again = recipe.StepBatches(ids, blocks, batch_size=3, steps=6, seed=1, full_attention=False)
    assert all(torch.equal(steps[i]["input_ids"], again[i]["input_ids"]) for i in range(6))
    control = recipe.StepBatches(ids, blocks, batch_size=3, steps=6, seed=1, full_attention=True)
    assert (control[0]["block_ids"] == -1).all()  # the control trains on the same tokens with full attention
    assert torch.equal(control[0]["input_ids"], steps[0]["input_ids"])
    assert torch.equal(control[0]["target_mask"][:, 1:], torch.ones(3, 3, dtype=torch.bool))


def test_each_mark_is_handed_on_as_it_is_scored_so_a_lost_machine_keeps_it():
    recipe = load_script("distill_recipe")
    saved, scores = [], iter(range(10))
    marks = recipe.Marks([20, 60], tokens_per_step=10, warmup_steps=0,
                         score=lambda lm: {"val": {"kl_gap_closed": next(scores) / 10}},
                         on_mark=lambda: saved.append([dict(r) for r in marks.results]))
    trainer, module = types.SimpleNamespace(global_step=0, should_stop=False), types.SimpleNamespace(plain_student=lambda: None)
    marks.on_train_start(trainer, module)
    for step in range(1, 8):
        trainer.global_step = step
        marks.on_train_batch_end(trainer, module, None, None, step)
    # one save per mark, each holding every mark so far with its own scores
    assert [[(r["tokens"], r["val"]["kl_gap_closed"]) for r in s] for s in saved] == [[(20, 0.0)], [(20, 0.0), (60, 0.1)]]


def test_the_recipe_trains_scores_at_marks_and_exports_loadable_students(tiny_model_dir, tiny_corpus_dir, tmp_path):
    data = tmp_path / "docs.pt"
    prepare = [sys.executable, str(REPO / "scripts" / "prepare_distill_samples.py"), "--dataset", str(tiny_corpus_dir),
               "--tokenizer", str(tiny_model_dir), "--granularity", "32", "--min-block-tokens", "8",
               "--max-block-tokens", "64", "--sample-tokens", "128", "--global-tokens", "32", "--train", "0", "--val", "4",
               "--train-documents", "--heldout-dataset", str(tiny_corpus_dir), "--heldout-windows", "3",
               "--ood-sample-tokens", "128", "--ood-block-tokens", "32", "--rag-splits", "", "--out", str(data)]
    subprocess.run(prepare, check=True, capture_output=True, cwd=REPO)
    out, students = tmp_path / "recipe.json", tmp_path / "students"
    recipe = [sys.executable, str(REPO / "scripts" / "distill_recipe.py"), "--teacher", str(tiny_model_dir), "--data",
              str(data), "--runs", "distill (full)", "full-attention fine-tuning (control)", "--tokens", "1536",
              "--eval-at", "512", "--batch-size", "2", "--sample-tokens", "64", "--global-tokens", "16", "--device", "cpu", "--precision", "32", "--compile", "none",
              "--warmup-steps", "1", "--task-samples", "20", "--export-dir", str(students), "--out", str(out)]
    result = subprocess.run(recipe, capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    written = json.loads(out.read_text())
    runs = written["runs"]
    task = ("full", "within", "straddle")  # the separating task: the teacher's answers, then each student's
    assert set(written["task_reference"]) == set(task) and all(len(v) == 20 for v in written["task_reference"].values())
    assert all(set(r["task"]) == set(task) and len(r["task"]["straddle"]) == 20 for r in runs)
    for r in runs:  # and at each mark: the task at equal tokens across runs
        (mark,) = r["task_curve"]
        assert mark["tokens"] == 512 and set(mark) == {"tokens", *task} and len(mark["within"]) == 20
    assert "separating task (scripts/separating_task.py): task gap (teacher" in result.stdout
    families = set(torch.load(data, weights_only=True)["heldout"])
    assert families  # the held-out build's categories, each scored on its own
    assert [r["variant"] for r in runs] == ["distill (full)", "full-attention fine-tuning (control)"]
    assert not any(r.get("partial") for r in runs)  # a finished run replaces its in-progress record
    for r in runs:
        assert r["steps"] == 12 and r["tokens"] == 1536  # 64-token training windows (--sample-tokens), 2 a step and r["tokens_per_s"] > 0
        assert [m["tokens"] for m in r["curve"]] == [512]
        assert set(r["final"]) == {"val"} | families  # the validation windows and each held-out family
        for split in r["final"].values():
            assert 0 < split["kl_teacher_block"] and split["kl_gap_closed"] == pytest.approx(
                1 - split["kl_teacher"] / split["kl_teacher_block"])
    from lit_block.model import BlockAttentionLM

    student = BlockAttentionLM.from_pretrained(runs[0]["export"])  # what anyone scores afterwards
    assert student.num_sink_tokens == 2
    assert "| distill (full) | 0 | 0.0M |" in result.stdout  # the summary table


def test_the_control_column_compares_fine_tuning_with_its_own_seed_and_distillation_with_the_teacher():
    recipe = load_script("distill_recipe")
    refs = {"nll_teacher_full": 2.0, "nll_teacher_block": 2.5}
    ft = {"variant": "block fine-tuning", "seed": 1, "final": {"x": {"nll": 2.1, **refs}}}
    distill = {"variant": "distill - no weighting", "seed": 1, "final": {"x": {"nll": 2.1, **refs}}}
    controls = {1: {"final": {"x": {"nll_full": 1.9}}}, 2: {"final": {"x": {"nll_full": 0.0}}}}
    assert recipe.vs_control(ft, controls, "x") == pytest.approx(1 - (2.1 - 1.9) / 0.5)  # seed 1's control
    assert recipe.vs_control(distill, controls, "x") == pytest.approx(1 - (2.1 - 2.0) / 0.5)  # the teacher


def test_an_unknown_variant_is_named_before_anything_loads(capsys):
    recipe = load_script("distill_recipe")
    with pytest.raises(SystemExit) as exit_:
        recipe.main(["--teacher", "nowhere", "--data", "nothing.pt", "--runs", "distill - no weighting, no sinks",
                     "distill - no sinks, typo"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "'distill - no sinks, typo'" in err
    assert "'distill - no weighting, no sinks'" in err.split("choose from")[1]  # the valid names listed
    with pytest.raises(SystemExit):
        recipe.main(["--teacher", "nowhere", "--data", "nothing.pt", "--divergence", "kl"])
    assert "--divergence: invalid choice: 'kl'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        recipe.main(["--teacher", "nowhere", "--data", "nothing.pt", "--compile", "false"])
    err = capsys.readouterr().err
    assert "--compile: unknown torch.compile backend 'false'; none (no compilation)" in err and "inductor" in err


def test_variants_take_the_release_schedule_divergence_and_lora_and_the_default_has_no_callbacks():
    recipe = load_script("distill_recipe")
    runs = recipe.variants("teacher", 1e-4, 0.0, False, release_end=0.1,
                           distill_options={"divergence": "jsd", "lora_rank": 8})
    (dropout,) = runs["distill - no weighting, no sinks"][2]()
    assert (dropout.start, dropout.end) == (0.0, 0.1)
    distill, finetune = runs["distill (full)"][1], runs["block fine-tuning"][1]
    assert (distill["divergence"], distill["lora_rank"]) == ("jsd", 8) and "lora_rank" not in finetune
    assert runs[recipe.DEFAULT_RUN][2]() == [] and runs[recipe.DEFAULT_RUN][1]["num_sink_tokens"] == 0
