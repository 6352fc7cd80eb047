"""Leave-one-category-out evaluation and the training data that aims at it (joins of unrelated documents)."""

from __future__ import annotations

import json

import torch
from conftest import REPO

from datamodules.semantic_seg import SemanticSegDataModule, joined_windows
from lit_block.cli import main


def window(doc: str, category: str, n: int, boundary_every: int = 3) -> dict:
    labels = torch.zeros(n, 3, dtype=torch.long)
    labels[::boundary_every, 2] = 1
    mask = torch.ones(n, dtype=torch.bool)
    mask[0] = False
    return {"doc_id": doc, "category": category, "unit_starts": list(range(n)),
            "unit_texts": [f"{doc} unit {i}. " for i in range(n)], "labels": labels, "label_mask": mask}


def test_joined_documents_mark_every_join_at_every_level_and_mix_categories():
    pool = [window(f"{c}{i}", c, 20) for c in "abcd" for i in range(3)]
    joined = joined_windows(pool, 50, max_units=32, seed=7)
    again = joined_windows(pool, 50, max_units=32, seed=7)  # deterministic for a seed: feature caches stay valid
    assert [x["unit_texts"] for x in joined] == [y["unit_texts"] for y in again]
    assert all(torch.equal(x["labels"], y["labels"]) for x, y in zip(joined, again))
    assert len(joined) == 50
    for sample in joined:
        sources = [t.split()[0] for t in sample["unit_texts"]]
        joins = [i for i in range(1, len(sources)) if sources[i] != sources[i - 1]]
        assert 1 <= len(joins) <= 3 and len(sample["unit_texts"]) <= 32
        assert len({s[0] for s in sources}) == len(joins) + 1  # each piece from another category
        for j in joins:  # a join: a labelled boundary at every level
            assert sample["label_mask"][j] and sample["labels"][j].tolist() == [1, 1, 1]
        assert not sample["label_mask"][0]
        inside = [i for i in range(1, len(sources)) if i not in joins]
        assert all(sample["labels"][i, :2].sum() == 0 for i in inside)  # a piece keeps its own labels
    assert joined_windows(pool[:3], 5, 32, seed=0) == []  # one category: nothing to join


def test_excluded_categories_are_in_no_split_and_joins_only_in_train(tiny_corpus_dir):
    data = SemanticSegDataModule(str(tiny_corpus_dir), max_units=16, exclude_categories=["origins"],
                                 synthetic_documents=6)
    data.setup()
    assert all(w["category"] != "origins" for split in data.samples.values() for w in split)
    assert sum(w["category"] == "joined" for w in data.samples["train"]) == 0  # one category left: no joins
    both = SemanticSegDataModule(str(tiny_corpus_dir), max_units=16, synthetic_documents=6)
    both.setup()
    assert sum(w["category"] == "joined" for w in both.samples["train"]) == 6
    assert all(w["category"] != "joined" for s in ("validation", "test") for w in both.samples[s])


def test_leave_one_out_trains_a_fold_per_category_scores_it_and_resumes(tiny_corpus_dir, tmp_path, monkeypatch,
                                                                         capsys):
    import mlflow

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    argv = ["eval-seg", "--leave-one-out", str(REPO / "experiments/segmenter/segmenter.yaml"),
            f"--dataset={tiny_corpus_dir}", "--categories", "origins", "--methods", "fixed", "regex",
            "--per-category=1", "--output=loco", "--extra=--data.init_args.max_units=32",
            "--extra=--model.init_args.encoder_layers=1", "--extra=--trainer.max_epochs=1",
            "--extra=--trainer.accelerator=cpu"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "| origins |" in out and "left-out categories" in out
    assert (tmp_path / "loco/folds/origins/checkpoints/segmenter/segmenter.ckpt").is_file()
    assert any((tmp_path / "loco/features").rglob("*.pt"))  # unit features stored for the next fold or run
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (evaluation,) = client.search_runs([client.get_experiment_by_name("eval-seg").experiment_id])
    assert evaluation.info.status == "FINISHED" and "goal.share_won" in evaluation.data.metrics
    (fold,) = client.search_runs([client.get_experiment_by_name("segmenter").experiment_id])
    assert fold.data.tags["lit_block.leave_one_out"] == evaluation.info.run_id
    assert fold.data.tags["left_out"] == "origins" and fold.info.run_name == "leave out origins"
    assert main(argv) == 0  # again: the fold is reused, not retrained
    assert "reusing" in capsys.readouterr().out
    # trained another way: not silently reused
    assert main([*argv[:-1], "--extra=--trainer.max_epochs=2", argv[-1]]) == 2
    err = capsys.readouterr().err
    assert "without 'origins'" in err and "--extra" in err and "--force" in err
    assert main([*argv[:5], "nope", *argv[6:]]) == 2  # an unknown category is named
    assert "'nope'" in capsys.readouterr().err


def test_choosing_categories_writes_nothing_into_the_corpus_folder(tiny_corpus_dir):
    before = sorted(p.name for p in tiny_corpus_dir.rglob("*"))
    for kwargs in ({"categories": ["origins"]}, {"exclude_categories": ["origins"]}):
        SemanticSegDataModule(str(tiny_corpus_dir), max_units=16, **kwargs).setup()
    assert sorted(p.name for p in tiny_corpus_dir.rglob("*")) == before  # no filter cache files


def _fold(docs_ours: list[list[int]], docs_theirs: list[list[int]], boundaries: int = 5) -> dict:
    """One fold's results at every level: per-document [Pk errors, WD errors, windows] of the segmenter and one
    baseline, pooled the way SegmentationMetrics pools them."""
    from lit_block.segmentation.segmenter import LEVELS

    def entry(docs):
        windows = sum(d[2] for d in docs)
        return {"pk": sum(d[0] for d in docs) / windows, "windowdiff": sum(d[1] for d in docs) / windows,
                "reference_boundaries": float(boundaries), "documents": docs}

    return {k: v for lv in LEVELS for k, v in (((("segmenter", lv, "c")), entry(docs_ours)),
                                               (("fixed", lv, "c"), entry(docs_theirs)))}


def test_the_paired_interval_tells_a_measured_loss_from_noise():
    from lit_block.segmentation.leave_one_out import difference_table, goal_table

    docs = 12
    worse = _fold([[30 + i, 30 + i, 100] for i in range(docs)], [[10 + i, 10 + i, 100] for i in range(docs)])
    _, not_beaten = difference_table(worse, ["c"], ["fixed"])
    assert not_beaten == 0  # worse on every document: the interval lies above zero
    better = _fold([[10 + i, 10 + i, 100] for i in range(docs)], [[30 + i, 30 + i, 100] for i in range(docs)])
    table, not_beaten = difference_table(better, ["c"], ["fixed"])
    assert not_beaten == 1 and "-0.200 [" in table
    # worse on average by one document's accident: the point estimate loses, the interval holds zero
    noisy = _fold([[20, 20, 100]] * (docs - 1) + [[60, 60, 100]], [[21, 21, 100]] * docs)
    text, goals = goal_table(noisy, ["c"], ["fixed"])
    assert goals["share_won"] == 0 and goals["not_significantly_beaten"] == 1


def test_a_level_without_gold_boundaries_decides_nothing():
    from lit_block.segmentation.leave_one_out import goal_table

    fold = _fold([[1, 1, 100]] * 4, [[5, 5, 100]] * 4)  # the segmenter wins every level ...
    fold[("segmenter", "coarse", "c")].update(pk=0.0, windowdiff=0.0, reference_boundaries=0.0)
    fold[("fixed", "coarse", "c")].update(pk=0.0, windowdiff=0.0, reference_boundaries=0.0)  # ... coarse ties at 0
    text, goals = goal_table(fold, ["c"], ["fixed"])
    assert goals["share_won"] == 1.0 and "n/a (no gold boundaries)" in text


def test_per_document_errors_pool_to_the_reported_scores(tiny_corpus_dir):
    from datasets import load_from_disk

    from lit_block.segmentation.evaluation import evaluate
    from lit_block.segmentation.segmenter import Segmenter

    rows = [r for split in load_from_disk(str(tiny_corpus_dir)).values() for r in split]
    results = evaluate(rows, {m: Segmenter(m) for m in ("fixed", "regex")})
    for (method, level, category), r in results.items():
        docs = r["documents"]
        assert len(docs) == (len(rows) if category == "all" else sum(x["category"] == category for x in rows))
        windows = sum(d[2] for d in docs)
        assert abs(sum(d[0] for d in docs) / windows - r["pk"]) < 1e-12
        assert abs(sum(d[1] for d in docs) / windows - r["windowdiff"]) < 1e-12


def test_the_coarse_rule_study_scores_the_shipped_rule_as_eval_seg_cuts(random_checkpoint, tiny_corpus_dir):
    """scripts/coarse_rule_study.py: every candidate gets each document's window errors, and its 'shipped rule'
    cuts where eval-seg's segmenter does (the script asserts it per document)."""
    from datasets import load_from_disk
    from test_distill_recipe import load_script

    from lit_block.segmentation.segmenter import Segmenter

    study = load_script("coarse_rule_study")
    rows = [r for split in load_from_disk(str(tiny_corpus_dir)).values() for r in split][:2]
    found = study.score_fold(Segmenter("segmenter", str(random_checkpoint), encoder_dtype="float32", separator_units="free"),
                             rows)
    assert set(found) >= {"shipped rule", "coarse head"} and all(len(d) == len(rows) for d in found.values())
    assert all(0 <= study.pooled(d) <= 1 for d in found.values())


def test_folds_train_in_parallel_processes_and_a_bad_job_count_is_named(tiny_corpus_dir, tmp_path, monkeypatch,
                                                                       capsys):
    import mlflow
    from datasets import Dataset, DatasetDict, load_from_disk

    tiny = load_from_disk(str(tiny_corpus_dir))
    corpus = tmp_path / "corpus"  # two categories, each with validation text: every fold can pick its checkpoint
    DatasetDict({split: Dataset.from_list([{**row, "category": c} for c in ("east", "west") for row in tiny[split]])
                 for split in tiny}).save_to_disk(str(corpus))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")  # both fits log to one store
    argv = ["eval-seg", "--leave-one-out", str(REPO / "experiments/segmenter/segmenter.yaml"),
            f"--dataset={corpus}", "--methods", "fixed", "--per-category=1", "--output=loco",
            "--extra=--data.init_args.max_units=32", "--extra=--model.init_args.encoder_layers=1",
            "--extra=--trainer.max_epochs=1", "--extra=--trainer.accelerator=cpu"]
    assert main([*argv, "--jobs=0"]) == 2
    assert "--jobs must be >= 1, got 0" in capsys.readouterr().err
    assert main([*argv, "--jobs=2"]) == 0
    out = capsys.readouterr().out
    categories = sorted(p.name for p in (tmp_path / "loco/folds").iterdir())
    assert categories == ["east", "west"] and all(f"| {c} |" in out for c in categories)
    fits = [json.loads((tmp_path / "loco/folds" / c / "fold.json").read_text()) for c in categories]
    assert max(f["started"] for f in fits) < min(f["finished"] for f in fits)  # side by side, not one after another
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("segmenter").experiment_id])
    assert sorted(r.data.tags["left_out"] for r in runs) == categories and {r.info.status for r in runs} == {"FINISHED"}
