"""How a RAG sample becomes a block-attention prompt: one shared instruction block, one block per
passage, and the question as the global block (the answer follows it).

The instruction block is identical in every prompt, so its KV cache is computed once; a passage
block depends only on the passage, so it is reused wherever the passage recurs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from lit_block.layout import pack_tokens

PLAIN = ("Answer the question using the passages below. Reply with a short answer.\n\n", "Passage: {passage}\n\n",
         "Question: {question}\nAnswer:", " {answer}\n")
CHATML = ("<|im_start|>system\nAnswer the question using the passages. Reply with a short answer.<|im_end|>\n"
          "<|im_start|>user\n", "Passage: {passage}\n\n", "Question: {question}<|im_end|>\n<|im_start|>assistant\n",
          "{answer}<|im_end|>")
TEMPLATES = {"plain": PLAIN, "chatml": CHATML}


@dataclass(frozen=True)
class RagPrompt:
    """How a sample becomes blocks and a query: an instruction block, one block per passage, the question."""

    instruction: str
    passage: str  # with {passage}
    question: str  # with {question}
    answer: str  # with {answer}: how a reference answer follows the question (training samples)

    def blocks(self, sample) -> list[str]:
        return [self.instruction] + [self.passage.format(passage=p) for p in sample.passages]

    def query(self, sample) -> str:
        return self.question.format(question=sample.question)


def default_template(tokenizer) -> str:
    """``chatml`` for tokenizers that know its markers (SmolLM2, Qwen), else ``plain``."""
    vocab = tokenizer.get_vocab() if tokenizer is not None else {}
    return "chatml" if "<|im_start|>" in vocab else "plain"


def pack_rag_sample(sample, prompt: RagPrompt, encode: Callable[[str], list[int]]) -> dict:
    """A packed training sample: the prompt's blocks as context, question + answer as the global block.

    Returns ``{"input_ids", "block_ids", "target_mask"}`` lists; the target mask marks the answer's
    tokens (its end marker included), which the NLL scores.
    """
    context = [encode(text) for text in prompt.blocks(sample)]
    question = encode(prompt.query(sample))
    answer = encode(prompt.answer.format(answer=sample.answers[0]))
    ids, blocks = pack_tokens(context, question + answer)
    target = [False] * (len(ids) - len(answer)) + [True] * len(answer)
    return {"input_ids": ids, "block_ids": blocks, "target_mask": target}
