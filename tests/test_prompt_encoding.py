"""``PromptBuilder.encode`` keeps recent texts' token ids: the same ids as the tokenizer, within its budget."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer

import lit_block.serving.prompts as prompts
from lit_block.serving.prompts import PromptBuilder

TEXTS = st.lists(st.text(st.characters(codec="utf-8"), max_size=40), min_size=1, max_size=30)


@settings(max_examples=40, deadline=None)
@given(texts=TEXTS, order=st.randoms(use_true_random=False))
def test_kept_ids_equal_the_tokenizers(tiny_tokenizer_dir, texts, order):
    tokenizer = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    builder = PromptBuilder(tokenizer)
    asked = texts * 2  # every text at least twice: the second time from the kept ids
    order.shuffle(asked)
    for text in asked:
        assert builder.encode(text) == tokenizer(text, add_special_tokens=False)["input_ids"]


def test_kept_ids_stay_within_the_budget_and_are_not_shared(tiny_tokenizer_dir, monkeypatch):
    monkeypatch.setattr(prompts, "ENCODED_CHARS", 64)
    builder = PromptBuilder(AutoTokenizer.from_pretrained(tiny_tokenizer_dir))
    first = builder.encode("In the beginning")
    first.append(-1)  # a caller's change to its list must not reach the next caller
    assert builder.encode("In the beginning")[-1] != -1
    for i in range(20):
        builder.encode(f"and God said, let there be light {i}")
        assert builder._encoded_chars <= 64
        assert builder._encoded_chars == sum(map(len, builder._encoded))
    assert "In the beginning" not in builder._encoded  # the oldest went first
    builder.encode("x" * 5)  # a text over a sixteenth of the budget is encoded, not kept
    assert "x" * 5 not in builder._encoded
