"""One retrieval-augmented QA example: a question, the passages a prompt shows, acceptable answers."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class RagSample:
    """A question over retrieved passages, in prompt order.

    ``answers`` are the acceptable answers (the first is the main one). ``gold_passages`` are the
    indices of the passages that hold the answer or its evidence; it may be empty where the source
    gives none (a LongBench context no passage of which quotes the answer, an NQ / TriviaQA question
    whose retrieved passages all miss it). ``meta`` keeps source-specific details (ids, types).
    Bad fields raise ``ValueError`` naming the sample id and the field.
    """

    id: str
    task: str
    question: str
    passages: list[str]
    answers: list[str]
    gold_passages: list[int]
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        where = f"RagSample {self.id!r}"
        if not isinstance(self.question, str) or not self.question.strip():
            raise ValueError(f"{where}: field 'question' is empty")
        if not self.passages:
            raise ValueError(f"{where}: field 'passages' needs at least one passage")
        if not all(isinstance(p, str) for p in self.passages):
            raise ValueError(f"{where}: field 'passages' holds a non-string")
        if not all(isinstance(a, str) for a in self.answers):
            raise ValueError(f"{where}: field 'answers' holds a non-string: {self.answers!r}")
        if not any(a.strip() for a in self.answers):
            raise ValueError(f"{where}: field 'answers' needs at least one non-empty answer")
        bad = [g for g in self.gold_passages if not isinstance(g, int) or not 0 <= g < len(self.passages)]
        if bad:
            raise ValueError(f"{where}: field 'gold_passages' has {bad} out of range 0..{len(self.passages) - 1}")
