"""Segmentation methods behind one interface: coverage, hard limits, the CLI, training and evaluation."""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import REPO
from lit_block.cli import main
from lit_block.errors import UsageError
from lit_block.segmentation.segmenter import Segmenter

TEXT = (REPO / "datamodules" / "texts" / "kjv_jonah.txt").read_text()
BASELINES = ["fixed", "regex", "sentence", "texttiling"]


def random_text(seed: int) -> str:
    rng = random.Random(seed)
    words = TEXT.split()
    out = []
    for _ in range(rng.randint(1, 40)):
        out.append(" ".join(rng.choice(words) for _ in range(rng.randint(1, 30))) + rng.choice([". ", ".\n", "\n\n", "! "]))
    return "".join(out)


@pytest.mark.parametrize("method", BASELINES)
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10_000), lo=st.integers(0, 40), span=st.integers(0, 200), size=st.integers(8, 300))
def test_blocks_partition_the_text_and_respect_the_limits(method, seed, lo, span, size, tiny_tokenizer_dir):
    text = random_text(seed)
    seg = Segmenter(method, tokenizer=str(tiny_tokenizer_dir))
    hi = max(1, 2 * lo) + span
    blocks = seg.segment(text, granularity=size, min_block_tokens=lo, max_block_tokens=hi)
    assert "".join(b.text for b in blocks) == text
    assert [b.start for b in blocks] == [0] + [b.end for b in blocks[:-1]] and blocks[-1].end == len(text)
    assert all(b.tokens <= hi for b in blocks)
    total = sum(b.tokens for b in blocks)
    assert total == seg.prepare(text).n_tokens
    if total >= lo:
        assert all(b.tokens >= lo for b in blocks)


def run_segment(args, capsys) -> tuple[int, str, str]:
    code = main(["segment", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_segment_cli_writes_json_blocks_covering_the_input(tmp_path, tiny_tokenizer_dir, capsys):
    f = tmp_path / "jonah.txt"
    f.write_text(TEXT)
    code, out, _ = run_segment([str(f), "--method", "regex", "--granularity", "200", "--max-block-tokens", "300",
                                "--tokenizer", str(tiny_tokenizer_dir)], capsys)
    assert code == 0
    blocks = json.loads(out)["blocks"]
    assert "".join(b["text"] for b in blocks) == TEXT and all(b["tokens"] <= 300 for b in blocks)
    assert set(blocks[0]) == {"start", "end", "tokens", "text"}


def test_segment_cli_caps_blocks_by_default_and_0_lifts_the_cap(tmp_path, tiny_tokenizer_dir, capsys):
    f = tmp_path / "run_on.txt"
    f.write_text("word " * 3000)  # no sentence or line boundary anywhere
    args = [str(f), "--method", "regex", "--granularity", "middle", "--tokenizer", str(tiny_tokenizer_dir)]
    blocks = json.loads(run_segment(args, capsys)[1])["blocks"]
    assert len(blocks) > 1 and all(b["tokens"] <= 4 * 256 for b in blocks)  # 4 x middle's 256 tokens
    assert len(json.loads(run_segment([*args, "--max-block-tokens", "0"], capsys)[1])["blocks"]) == 1


@pytest.mark.parametrize(
    "content, args, message",
    [
        (b"", [], "empty input"),
        (b"  \n\n ", [], "empty input"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", [], "binary input"),
        (b"caf\xe9", [], "not UTF-8 text"),
        (b"Some text.", ["--method", "segmenter"], "needs --checkpoint"),
        (b"Some text.", ["--method", "segmenter", "--checkpoint", "missing.ckpt"], "checkpoint not found"),
        (b"Some text.", ["--method", "regex", "--granularity", "huge"], "granularity must be"),
        (b"Some text.", ["--method", "regex", "--min-block-tokens", "50", "--max-block-tokens", "60"], "2 x min_block_tokens"),
    ],
)
def test_segment_cli_rejects_bad_input_with_a_clear_error(content, args, message, tmp_path, tiny_tokenizer_dir, capsys):
    f = tmp_path / "input.bin"
    f.write_bytes(content)
    code, _, err = run_segment([str(f), "--tokenizer", str(tiny_tokenizer_dir), *args], capsys)
    assert code == 2 and message in err


@pytest.fixture(scope="module")
def trained_checkpoint(tmp_path_factory, tiny_corpus_dir):
    """A segmenter trained for a few steps on the tiny corpus, through the CLI and its YAML."""
    import os

    folder = tmp_path_factory.mktemp("segmenter_run")
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        main(["fit", f"--config={REPO / 'experiments/segmenter/segmenter.yaml'}",
              f"--data.init_args.dataset_path={tiny_corpus_dir}", "--data.init_args.max_units=32",
              "--model.init_args.encoder_layers=1", "--trainer.max_epochs=2", "--trainer.accelerator=cpu",
              "--trainer.logger=false"])
    finally:
        os.chdir(cwd)
    return folder / "checkpoints" / "segmenter" / "segmenter.ckpt"


def test_trained_checkpoint_leaves_out_the_encoder_and_segments(trained_checkpoint, tiny_tokenizer_dir):
    import torch

    state = torch.load(trained_checkpoint, weights_only=True)["state_dict"]  # plain values: no pickled objects
    assert state and all(k.startswith("net.head.") for k in state)
    seg = Segmenter("segmenter", checkpoint=str(trained_checkpoint), tokenizer=str(tiny_tokenizer_dir))
    for granularity in ("coarse", "fine", 64):
        blocks = seg.segment(TEXT, granularity, max_block_tokens=400)
        assert "".join(b.text for b in blocks) == TEXT and all(b.tokens <= 400 for b in blocks)


def test_eval_seg_compares_every_method_and_logs_to_mlflow(trained_checkpoint, tiny_corpus_dir, tmp_path, monkeypatch,
                                                         tiny_tokenizer_dir):
    import mlflow

    from lit_block.segmentation import segmenter as segmenter_module

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    original = segmenter_module.Segmenter.__init__
    monkeypatch.setattr(segmenter_module.Segmenter, "__init__",
                        lambda self, m, c=None, **kw: original(self, m, c, tokenizer=str(tiny_tokenizer_dir)))
    assert main(["eval-seg", "--dataset", str(tiny_corpus_dir), "--checkpoint", str(trained_checkpoint),
                 "--methods", "segmenter", "fixed", "regex", "--output", "out"]) == 0
    table = (tmp_path / "out" / "eval_seg.md").read_text()
    assert "| segmenter | coarse |" in table and "| regex | fine |" in table and "categories won" in table
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("eval-seg").experiment_id])
    assert "segmenter.fine.all.pk" in run.data.metrics
    assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"eval_seg.md", "pk_per_category.png"}


def test_closed_separator_units_never_start_a_block_and_free_ones_may(random_checkpoint, tiny_tokenizer_dir):
    """Fortune-file text: entries between `%` lines. With ``separator_units="close"`` no block starts at a `%` line
    at any level (the run's score goes to the entry after it); the random head's free scores do start some there."""
    from lit_block.segmentation.planner import is_separator

    text = "".join(f"Fortune {i}: you will meet {'a tall stranger' if i % 2 else 'an old friend'} soon.\n%\n"
                   for i in range(80))
    started_at_separator = {}
    for rule in ("close", "free"):
        seg = Segmenter("segmenter", str(random_checkpoint), tokenizer=str(tiny_tokenizer_dir), encoder_dtype="float32",
                        separator_units=rule)
        doc = seg.prepare(text)
        units = doc.candidate_chars
        separators = {doc.token_index(a) for a, b in zip(units, units[1:] + [len(text)]) if is_separator(text[a:b])}
        cuts = [c for level in ("coarse", "middle", "fine") for c in seg.cut(doc, level, target_tokens=24)]
        assert cuts
        started_at_separator[rule] = len(separators & set(cuts))
    assert started_at_separator["close"] == 0 and started_at_separator["free"] > 0
    with pytest.raises(UsageError, match="separator units"):
        Segmenter("segmenter", str(random_checkpoint), separator_units="after")


def test_the_mid_sentence_prior_keeps_blocks_off_wrapped_sentence_lines(random_checkpoint, tiny_tokenizer_dir):
    """Hard-wrapped prose: with ``mid_sentence_weight=0`` no block starts on a line that carries on a sentence (there are
    enough other candidates for the blocks asked for); the random head's own scores do start some there."""
    from lit_block.segmentation.planner import starts_mid_sentence

    text = "".join(f"Sentence {i} tells how the ship\nsailed on, and how the crew\nslept ashore. " for i in range(60))
    started_mid_sentence = {}
    for weight in (0.0, 1.0):
        seg = Segmenter("segmenter", str(random_checkpoint), tokenizer=str(tiny_tokenizer_dir), encoder_dtype="float32",
                        mid_sentence_weight=weight)
        doc = seg.prepare(text)
        units = doc.candidate_chars
        spans = list(zip(units, units[1:] + [len(text)]))
        mid = {doc.token_index(a) for (p, q), (a, b) in zip(spans, spans[1:]) if starts_mid_sentence(text[p:q], text[a:b])}
        assert len(mid) >= 100  # two of every three line starts
        cuts = [c for level in ("coarse", "middle", "fine") for c in seg.cut(doc, level, target_tokens=40)]
        started_mid_sentence[weight] = len(mid & set(cuts))
    assert started_mid_sentence[0.0] == 0 and started_mid_sentence[1.0] > 0
    with pytest.raises(UsageError, match="mid_sentence_weight"):
        Segmenter("segmenter", str(random_checkpoint), mid_sentence_weight=1.5)


def test_the_unwrapped_fine_weight_applies_only_to_documents_whose_lines_are_not_wrapped(random_checkpoint,
                                                                                        tiny_tokenizer_dir):
    """``fine_inline_weight_unwrapped`` cuts a document of whole-sentence lines as ``fine_inline_weight`` of that value
    would, cuts hard-wrapped prose as if it were unset, and never touches the other levels."""
    wrapped = "".join(f"Sentence {i} tells how the ship\nsailed on, and how the crew\nslept ashore. Then {i}. "
                      for i in range(40))
    lines = "".join(f"{i} And the ship sailed on. The crew slept. Then it was day {i}.\n" for i in range(40))

    def cuts(text, **weights):
        seg = Segmenter("segmenter", str(random_checkpoint), tokenizer=str(tiny_tokenizer_dir),
                        encoder_dtype="float32", **weights)
        doc = seg.prepare(text)
        return {level: seg.cut(doc, level, target_tokens=12) for level in ("coarse", "middle", "fine")}

    for text, unwrapped in ((wrapped, False), (lines, True)):
        adaptive = cuts(text, fine_inline_weight=0.25, fine_inline_weight_unwrapped=0.0)
        assert adaptive == cuts(text, fine_inline_weight=0.0 if unwrapped else 0.25, fine_inline_weight_unwrapped=None)
        base = cuts(text, fine_inline_weight=0.25, fine_inline_weight_unwrapped=None)
        assert {lv: adaptive[lv] for lv in ("coarse", "middle")} == {lv: base[lv] for lv in ("coarse", "middle")}
        assert (adaptive["fine"] != base["fine"]) == unwrapped  # the random head cuts inside some lines at 0.25
    with pytest.raises(UsageError, match="fine_inline_weight_unwrapped"):
        Segmenter("segmenter", str(random_checkpoint), fine_inline_weight_unwrapped=-0.1)


def test_the_after_heading_prior_moves_fine_cuts_off_the_line_under_a_heading_in_unwrapped_text(random_checkpoint,
                                                                                              tiny_tokenizer_dir):
    """Whole-sentence lines under chapter headings: at weight 0 no fine block starts on the line right after a heading
    (the heading opens it), where the random head's own scores start some; the other levels and hard-wrapped prose
    are left alone."""
    from lit_block.segmentation.planner import follows_heading

    chapters = "".join(f"Chapter {c}\n" + "".join(f"{v} And the ship sailed on for day {v}.\n" for v in range(1, 5))
                       for c in range(1, 41))
    wrapped = "".join(f"Chapter {c}\nthe ship sailed on, and\nthe crew slept ashore. Then {c}.\n" for c in range(40))

    def cuts(text, weight):
        seg = Segmenter("segmenter", str(random_checkpoint), tokenizer=str(tiny_tokenizer_dir), encoder_dtype="float32",
                        fine_after_heading_weight_unwrapped=weight)
        doc = seg.prepare(text)
        units = doc.candidate_chars
        texts = [text[a:b] for a, b in zip(units, units[1:] + [len(text)])]
        under = {doc.token_index(units[i]) for i in range(len(units)) if follows_heading(texts, i)}
        return {level: seg.cut(doc, level, target_tokens=20) for level in ("coarse", "middle", "fine")}, under

    (on, under), (off, _) = cuts(chapters, 0.0), cuts(chapters, None)
    assert len(under) == 40 and not under & set(on["fine"]) and under & set(off["fine"])
    assert {lv: on[lv] for lv in ("coarse", "middle")} == {lv: off[lv] for lv in ("coarse", "middle")}
    assert cuts(wrapped, 0.0)[0] == cuts(wrapped, None)[0]  # hard-wrapped: the prior does not apply
    with pytest.raises(UsageError, match="fine_after_heading_weight_unwrapped"):
        Segmenter("segmenter", str(random_checkpoint), fine_after_heading_weight_unwrapped=2.0)
