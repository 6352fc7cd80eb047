"""A long text is tokenized in pieces, in parallel (``lit_block.segmentation.document.encode_pieces``): the
pieces' tokens, offsets and word numbering are the whole text's, for the pre-tokenizers it cuts for, and a
tokenizer it cannot cut exactly gets the text whole."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import REPO
from lit_block.model_sources import resolve_model_path
from lit_block.segmentation import document
from lit_block.segmentation.document import encode, encode_pieces
from lit_block.segmentation.packed_bert import plain_tokenizer

KJV = "".join(p.read_text() for p in sorted((REPO / "datamodules" / "texts").glob("kjv_*.txt")))
# whitespace and characters tokenizers treat specially, between pieces of real text
SEPARATORS = [" ", "  ", "\n", "\n\n", " \n", "\t", "\r\n", "", ". ", "—", "東京", "é", "\u0301", "🙂", "'s ", "123 "]


@pytest.fixture(scope="module")
def tokenizers_(tiny_tokenizer_dir):
    from tokenizers import Tokenizer

    byte_level = Tokenizer.from_file(str(tiny_tokenizer_dir / "tokenizer.json"))  # GPT-2's byte-level pattern
    bert, _ = plain_tokenizer(resolve_model_path("all-minilm-l6-v2"))  # the segmenter's WordPiece, as it loads it
    return {"byte-level BPE": byte_level, "BERT WordPiece": bert}


texts = st.lists(st.tuples(st.integers(0, len(KJV) - 400), st.integers(0, 300), st.sampled_from(SEPARATORS)),
                 min_size=1, max_size=12).map(lambda parts: "".join(KJV[a:a + n] + sep for a, n, sep in parts))


@settings(max_examples=80, deadline=None)
@given(text=texts, piece_chars=st.integers(1, 400))
def test_pieces_tokenize_exactly_as_the_whole_text(tokenizers_, text, piece_chars):
    for name, tokenizer in tokenizers_.items():
        whole = tokenizer.encode(text, add_special_tokens=False)
        ids, offsets = [], []
        for start, enc in encode_pieces(tokenizer, text, piece_chars):
            ids += enc.ids
            offsets += [(start + a, start + b) for a, b in enc.offsets]
        assert ids == whole.ids, name
        assert offsets == whole.offsets, name


def test_a_long_text_is_cut_into_pieces_and_encode_joins_them(tokenizers_):
    for tokenizer in tokenizers_.values():
        assert len(encode_pieces(tokenizer, KJV, 4096)) > 5  # the parallel path is the one exercised
        whole = tokenizer.encode(KJV, add_special_tokens=False)
        assert encode(tokenizer, KJV) == (whole.ids, whole.offsets)


def test_encode_starts_gives_the_ids_and_span_starts_of_encode(tokenizers_, monkeypatch):
    from transformers import AutoTokenizer

    monkeypatch.setattr(document, "PIECE_CHARS", 500)  # many pieces: the shifted starts are exercised
    slow_path = AutoTokenizer.from_pretrained(resolve_model_path("all-minilm-l6-v2"))  # a transformers tokenizer
    text = KJV[:6000] + "\r\n東京  café 🙂's 123"
    for tokenizer in [*tokenizers_.values(), slow_path]:
        ids, offsets = encode(tokenizer, text)
        assert document.encode_starts(tokenizer, text) == (ids, [a for a, _ in offsets])


def test_the_unit_encoder_numbers_words_across_pieces_as_the_whole_text(monkeypatch):
    from lit_block.segmentation.model import UnitEncoder

    encoder = UnitEncoder("all-minilm-l6-v2", 1, 16)
    text = KJV[:20000] + " unbreakablewords and more"
    whole = encoder.tokenizer.encode(text, add_special_tokens=False)
    monkeypatch.setattr(document, "PIECE_CHARS", 300)  # many pieces
    assert len(encode_pieces(encoder.tokenizer, text)) > 20
    tokens = encoder._tokenize(text)
    assert (tokens.ids, tokens.starts) == (whole.ids, [a for a, _ in whole.offsets])
    assert [tokens.end(j) for j in range(len(tokens.ids))] == [b for _, b in whole.offsets]
    same_word = [tokens.same_word(j - 1, j) for j in range(1, len(tokens.ids))]
    assert same_word == [a is not None and a == b for a, b in zip(whole.word_ids, whole.word_ids[1:])]


def test_a_tokenizer_that_adds_a_prefix_space_or_pads_gets_the_text_whole(tokenizers_):
    from tokenizers import Tokenizer, pre_tokenizers

    prefixed = Tokenizer.from_str(tokenizers_["byte-level BPE"].to_str())
    prefixed.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)  # each piece would gain a space
    padded = Tokenizer.from_str(tokenizers_["BERT WordPiece"].to_str())
    padded.enable_padding()  # pieces padded to the longest would gain pad tokens
    for tokenizer in (prefixed, padded):
        assert len(encode_pieces(tokenizer, KJV, 1000)) == 1
        assert encode(tokenizer, KJV)[0] == tokenizer.encode(KJV, add_special_tokens=False).ids
