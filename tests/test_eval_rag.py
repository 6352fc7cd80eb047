"""``lit-block eval-rag`` end to end on a tiny model: rows, per-task scores, cache reuse, MLflow logging."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lit_block import BlockAttentionLM
from lit_block.rag.evaluation import score
from lit_block.rag.prompt import TEMPLATES, RagPrompt, default_template
from lit_block.rag.sample import RagSample

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "rag"


def test_prompt_puts_the_instruction_and_each_passage_in_its_own_block():
    sample = RagSample(id="s", task="t", question="Who?", passages=["A is B.", "C is D."], answers=["B"],
                       gold_passages=[0])
    prompt = RagPrompt(*TEMPLATES["plain"])
    assert prompt.blocks(sample) == [TEMPLATES["plain"][0], "Passage: A is B.\n\n", "Passage: C is D.\n\n"]
    assert prompt.query(sample) == "Question: Who?\nAnswer:"


def test_scores_are_per_task_and_overall():
    samples = [RagSample(id=str(i), task=t, question="q?", passages=["p"], answers=[a], gold_passages=[0])
               for i, (t, a) in enumerate([("x", "red fox"), ("x", "blue"), ("y", "green")])]
    scores = score(samples, ["the red fox", "no", "green tea"])
    assert scores["x"]["exact_match"] == pytest.approx(0.5) and scores["y"]["exact_match"] == 0.0
    assert scores["y"]["substring"] == 1.0 and scores["all"]["count"] == 3


def test_eval_rag_compares_references_and_a_student_with_the_kv_store(tiny_model_dir, tmp_path, monkeypatch, capsys):
    import mlflow

    from lit_block.cli import main

    torch.manual_seed(0)
    student = BlockAttentionLM.from_pretrained(tiny_model_dir, num_sink_tokens=2)
    student.save_pretrained(tmp_path / "student")
    assert default_template(student.tokenizer) == "plain"  # the tiny tokenizer has no ChatML markers
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    code = main(["eval-rag", "--teacher", str(tiny_model_dir), "--models", f"student={tmp_path / 'student'}",
                 "--tasks", "", "--benchmark", f"hotpotqa={FIXTURES / 'hotpotqa.json'}",
                 f"nq={FIXTURES / 'nq_dpr.json'}", "--max-new-tokens", "4", "--device", "cpu"])
    assert code == 0
    out = capsys.readouterr().out
    for row in ("teacher, full attention", "teacher, block attention (untrained)", "student"):
        assert f"| {row} | all |" in out
    block_row = next(line for line in out.splitlines() if line.startswith("| student | all |"))
    assert block_row.rstrip(" |").endswith("%") and "| - |" not in block_row  # the store was used (hit rate shown)
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("eval-rag").experiment_id])
    assert "student.all.f1" in run.data.metrics and "teacher_full_attention.all.exact_match" in run.data.metrics


def test_eval_rag_bad_inputs_exit_with_a_message(tmp_path, capsys):
    from lit_block.cli import main

    assert main(["eval-rag", "--tasks", "faq", "--dataset", str(tmp_path / "none"), "--experiment", ""]) == 2
    assert "lit-block data build" in capsys.readouterr().err
    assert main(["eval-rag", "--tasks", "", "--benchmark", "hotpotqa", "--experiment", ""]) == 2
    assert "NAME=PATH_OR_HUB_ID" in capsys.readouterr().err
    assert main(["eval-rag", "--models", "x=/no/such/dir", "--experiment", ""]) == 2


def test_a_sample_past_the_context_is_skipped_up_front_and_the_others_are_answered(tiny_model_dir, capsys):
    from lit_block.rag.evaluation import evaluate

    short = RagSample(id="short", task="t", question="Who?", passages=["Adam begat Seth."], answers=["Seth"],
                      gold_passages=[0])
    long = RagSample(id="long", task="t", question="Who?", passages=["And Adam lived. " * 1000], answers=["Seth"],
                     gold_passages=[0])
    results, scored = evaluate(str(tiny_model_dir), {}, [short, long, short], "plain", 2, 0.1, "cpu")
    assert [s.id for s in scored] == ["short", "short"]
    assert all(len(r["answers"]) == 2 for r in results.values())
    assert "skipping 1 sample(s) longer than the models' context" in capsys.readouterr().out


def test_a_student_with_another_vocabulary_is_refused_by_name(tiny_model_dir, tmp_path):
    from conftest import tiny_config
    from lit_block.errors import UsageError
    from lit_block.rag.evaluation import evaluate

    BlockAttentionLM.from_pretrained(tiny_config(vocab_size=256)).save_pretrained(tmp_path / "other")
    sample = RagSample(id="s", task="t", question="Who?", passages=["p"], answers=["a"], gold_passages=[0])
    with pytest.raises(UsageError, match=r"other=.*vocabulary of 256 tokens differs from the teacher's \(512\)"):
        evaluate(str(tiny_model_dir), {"other": str(tmp_path / "other")}, [sample], "plain", 2, 0.1, "cpu")
