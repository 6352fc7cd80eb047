"""The fast segmenter path computes what the per-unit path computed: unit vectors from one tokenization of
the document (packed, without transformers) match one tokenizer call per unit through transformers' BertModel,
`lit-block segment` cuts the same blocks, and `lit-block bench segment` times every method end to end."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import REPO
from lit_block.candidates import candidate_starts
from lit_block.cli import main
from lit_block.model_sources import resolve_model_path
from lit_block.segmentation.document import encode
from lit_block.segmentation.model import SegmenterNet, UnitEncoder, layout_features
from lit_block.segmentation.planner import BlockLimits, plan_blocks
from lit_block.segmentation.segmenter import LEVELS, METHODS, Segmenter

# real text: every bundled KJV text (51k characters: long verses, so many units are truncated)
KJV = "".join(p.read_text() for p in sorted((REPO / "datamodules" / "texts").glob("kjv_*.txt")))
# text a tokenizer normalizes: accents, combining marks, CJK, control characters, emoji, an over-long word
ODD = ("Café naïve résumé — 東京は日本の首都です。 Ünïcödé\u0301 x\x00y\x07z\n\n   \n" + "word" * 40 + " a\u0301b "
       "🙂 emoji 👍🏽 ok. Dr. Smith went to Washington. He said: 'Hi!'\n\tIndented line.\n")


class PerUnitEncoder:
    """The encoder as it ran before: transformers' BertModel cut to its first layers, one tokenizer call per unit
    (truncated to ``max_unit_tokens``), padded batches of 256, masked mean. The reference."""

    def __init__(self, layers: int, max_unit_tokens: int):
        from transformers import AutoModel, AutoTokenizer

        path = resolve_model_path("all-minilm-l6-v2")
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path)
        self.model.encoder.layer = self.model.encoder.layer[:layers]
        self.model.eval()
        self.max_unit_tokens = max_unit_tokens

    @torch.inference_mode()
    def __call__(self, texts: list[str]) -> torch.Tensor:
        out = []
        for i in range(0, len(texts), 256):
            enc = self.tokenizer(texts[i : i + 256], padding=True, truncation=True, max_length=self.max_unit_tokens,
                                 return_tensors="pt")
            hidden = self.model(**enc).last_hidden_state
            mask = enc["attention_mask"][..., None].to(hidden.dtype)
            out.append((hidden * mask).sum(1) / mask.sum(1).clamp(min=1))
        return torch.cat(out)

    def untruncated_lengths(self, texts: list[str]) -> list[int]:
        return [len(ids) for ids in self.tokenizer(texts)["input_ids"]]


def unit_spans(text: str, starts: list[int]) -> list[tuple[int, int]]:
    return list(zip(starts, starts[1:] + [len(text)]))


@pytest.mark.parametrize("layers, max_unit_tokens", [(2, 24), (6, 64)])  # the segmenter's and the semantic baseline's
def test_document_tokenization_gives_the_per_unit_vectors(layers, max_unit_tokens):
    kjv = KJV[:15000]  # 96 units, 14 of them longer than 64 tokens: enough, and a third of the per-unit reference's time
    text = kjv + ODD
    spans = unit_spans(text, candidate_starts(text, "sentences"))
    # and spans whose edges cut words (tokenized on their own), overlap, are empty or reversed
    spans += [(len(kjv) + 3, len(kjv) + 17), (5, 5), (40, 30), (len(kjv) + 60, len(text)), (101, 2000)]
    texts = [text[a:b] for a, b in spans]
    reference = PerUnitEncoder(layers, max_unit_tokens)
    assert max(reference.untruncated_lengths(texts)) > 3 * max_unit_tokens  # truncation is exercised
    assert sum(n > max_unit_tokens for n in reference.untruncated_lengths(texts)) > 10
    expected = reference(texts)

    encoder = UnitEncoder("all-minilm-l6-v2", layers, max_unit_tokens)
    assert encoder.specials is not None and "transformers" not in type(encoder.encoder).__module__  # the packed path
    torch.testing.assert_close(encoder.encode_spans(text, spans), expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(encoder(texts), expected, rtol=0, atol=1e-5)  # training's path: a text per unit
    encoder.max_batch_tokens = 100  # many chunks, and units longer than a chunk
    torch.testing.assert_close(encoder.encode_spans(text, spans), expected, rtol=0, atol=1e-5)
    assert encoder.encode_spans(text, []).shape == (0, encoder.dim)


def test_a_word_cut_by_a_unit_edge_is_tokenized_with_the_unit():
    encoder = UnitEncoder("all-minilm-l6-v2", 1, 16)
    text = "Segmentation of unbreakablewords here."
    cut = text.index("breakable")  # inside a word: the document's tokens for it differ from the unit's own
    whole = encoder.tokenizer.encode(text, add_special_tokens=False)
    sliced = [i for i, (a, _) in zip(whole.ids, whole.offsets) if a >= cut]
    assert sliced != encoder.tokenizer.encode(text[cut:], add_special_tokens=False).ids
    spans = [(0, cut), (cut, len(text))]
    expected = encoder([text[:cut], text[cut:]])
    torch.testing.assert_close(encoder.encode_spans(text, spans), expected, rtol=0, atol=1e-6)


def reference_probabilities(net: SegmenterNet, text: str, starts: list[int], level: int) -> torch.Tensor:
    """Boundary probabilities as computed before: per-unit encoder, then the head (all threads)."""
    texts = [text[a:b] for a, b in unit_spans(text, starts)]
    features = torch.cat([PerUnitEncoder(2, 24)(texts), layout_features(texts)], dim=-1)
    with torch.inference_mode():
        return torch.sigmoid(net.head(features[None], level))[0]


def test_segment_cuts_the_same_blocks_as_the_per_unit_path(random_checkpoint, tiny_tokenizer_dir, tmp_path, capsys):
    text = KJV  # long enough for the background tokenization (SegmentableText.BACKGROUND_CHARS)
    seg = Segmenter("segmenter", checkpoint=str(random_checkpoint), tokenizer=str(tiny_tokenizer_dir),
                    encoder_dtype="float32")  # the reference's dtype: the same numbers to 1e-5
    doc = seg.prepare(text)
    assert len(text) >= doc.BACKGROUND_CHARS
    ids, offsets = encode(seg.tokenizer, text)
    assert doc.token_ids == ids and doc.token_starts == [s for s, _ in offsets]
    level = LEVELS.index("middle")
    expected = reference_probabilities(seg.module, text, doc.candidate_chars, level)
    scores = seg.scores(doc, "middle", 256)
    got = seg.module.boundary_probabilities(seg._memo["features"], level)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    assert len(scores) > 100

    # a threshold in the widest gap between probabilities near the middle: no cut can flip on rounding
    middle = sorted(expected[1:].tolist())
    middle = middle[len(middle) // 4 : 3 * len(middle) // 4]
    gap, threshold = max((b - a, (a + b) / 2) for a, b in zip(middle, middle[1:]))
    assert gap > 1e-4
    limits = BlockLimits(max_block_tokens=1024)
    reference_scores = {doc.token_index(c): float(p) for c, p in zip(doc.candidate_chars[1:], expected[1:])
                        if 0 < doc.token_index(c) < doc.n_tokens}
    want = [b.__dict__ for b in doc.blocks(plan_blocks(doc.n_tokens, reference_scores, limits, threshold=threshold))]

    f = tmp_path / "kjv.txt"
    f.write_text(text)
    assert main(["segment", str(f), "--method", "segmenter", "--checkpoint", str(random_checkpoint),
                 "--granularity", "middle", "--threshold", str(threshold), "--max-block-tokens", "1024",
                 "--tokenizer", str(tiny_tokenizer_dir), "--encoder-dtype", "float32"]) == 0
    blocks = json.loads(capsys.readouterr().out)["blocks"]
    assert len(blocks) > 10 and blocks == want


def test_encoder_dtype_auto_is_bfloat16_only_on_a_cpu_with_bf16_matmul(monkeypatch):
    from lit_block.errors import UsageError
    from lit_block.segmentation import packed_bert

    for fast in (True, False):
        monkeypatch.setattr(packed_bert, "cpu_has_bf16_matmul", lambda fast=fast: fast)
        assert packed_bert.encoder_dtype_of("auto") == (torch.bfloat16 if fast else torch.float32)
        assert packed_bert.encoder_dtype_of("auto", "cuda") == torch.float32  # not measured there: float32
        assert packed_bert.encoder_dtype_of("float32") == torch.float32
        assert packed_bert.encoder_dtype_of("bfloat16") == torch.bfloat16
    with pytest.raises(UsageError, match="'float16'"):
        packed_bert.encoder_dtype_of("float16")
    flags = "flags\t\t: fpu avx2 avx512f avx512_vnni {} rdpid\n"
    assert packed_bert.has_bf16_matmul_flag(flags.format("avx512_bf16"))  # AMD Zen 4, Intel Cooper Lake
    assert packed_bert.has_bf16_matmul_flag(flags.format("amx_bf16 amx_tile"))  # Intel Sapphire Rapids
    assert not packed_bert.has_bf16_matmul_flag(flags.format("avx512_fp16 amx_int8"))  # no bfloat16 products
    with pytest.raises(UsageError, match="'half'"):
        Segmenter("fixed", encoder_dtype="half")


def test_bfloat16_unit_vectors_point_where_float32_ones_do(random_checkpoint):
    """The bfloat16 encoder (the default on CPUs with bfloat16 matrix instructions) gives each unit nearly the float32
    vector, in every chunking (the filler unit that pads chunks to fixed shapes attends only to itself)."""
    text = KJV[:20000]
    spans = unit_spans(text, candidate_starts(text, "sentences"))
    nets = {d: SegmenterNet.from_checkpoint(str(random_checkpoint), encoder_dtype=d) for d in ("float32", "bfloat16")}
    vectors = {d: net.encoder.encode_spans(text, spans) for d, net in nets.items()}
    assert vectors["bfloat16"].dtype == torch.float32  # pooled in float32 for the head
    cosine = torch.nn.functional.cosine_similarity(vectors["float32"], vectors["bfloat16"], dim=-1)
    assert cosine.min() > 0.99, cosine.min()
    nets["float32"].encoder.max_batch_tokens = 300  # other chunks, other fillers: the same float32 vectors
    torch.testing.assert_close(nets["float32"].encoder.encode_spans(text, spans), vectors["float32"], rtol=0, atol=1e-5)


def test_segment_command_does_not_import_transformers(random_checkpoint, tiny_tokenizer_dir, tmp_path):
    """transformers takes seconds to import: the segmenter's path loads the embedded encoder without it."""
    f = tmp_path / "kjv.txt"
    f.write_text(KJV[:3000])
    code = ("import sys; from lit_block.cli import main; "
            f"main(['segment', {str(f)!r}, '--method', 'segmenter', '--checkpoint', {str(random_checkpoint)!r}, "
            f"'--tokenizer', {str(tiny_tokenizer_dir)!r}]); "
            "print('imported:', sorted(m for m in sys.modules if m.split('.')[0] in ('transformers', 'lightning')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("imported: []"), done.stdout[-300:]


def test_bench_segment_times_every_method_end_to_end(random_checkpoint, tiny_tokenizer_dir, tmp_path, capsys):
    f = tmp_path / "kjv.txt"
    f.write_text(KJV[:20000])  # the timings' size does not matter here: a third of the text, a third of the work
    assert main(["bench", "segment", "--checkpoint", str(random_checkpoint), "--file", str(f), "--repeat", "1",
                 "--e2e-repeat", "1", "--tokenizer", str(tiny_tokenizer_dir), "--granularity", "coarse"]) == 0
    out = capsys.readouterr().out
    assert "prepare (tokenize + candidates)" in out and "with torch" in out and "without torch" in out
    assert "--granularity coarse" in out  # every method and the timed command cut at the level asked for
    whole = out.split("whole call in this process")[1].split("\n")[0]  # the segmenter's call as a library user makes it
    assert float(whole.split("): ")[1].split(" s")[0]) > 0
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ") for line in out.splitlines() if line.startswith("| ")}
    assert set(METHODS) <= set(rows)
    for method in METHODS:
        cells = rows[method]
        assert cells[3].endswith("x") and float(cells[5].removesuffix(" s")) > 0  # ratio, end-to-end wall
        float(cells[6].removesuffix(" s |"))  # beyond start-up: a number


@settings(max_examples=50, deadline=None)
@given(ints=st.lists(st.integers(-2**63, 2**63 - 1), max_size=50),
       floats=st.lists(st.floats(allow_nan=False, width=32), max_size=50))
def test_list_tensor_equals_torch_tensor(ints, floats):
    from lit_block.segmentation.model import list_tensor

    assert torch.equal(list_tensor(ints), torch.tensor(ints, dtype=torch.int64))
    assert torch.equal(list_tensor(floats, "f"), torch.tensor(floats, dtype=torch.float32))

