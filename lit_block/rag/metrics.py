"""Answer metrics for extractive / short-answer QA, SQuAD style.

Predictions and answers are compared after :func:`normalize_answer`, the official SQuAD v1.1
normalization (lowercase, ASCII punctuation and the articles a / an / the dropped, whitespace
collapsed); exact match and F1 equal torchmetrics' ``squad`` (tested). Each pure function takes one
prediction and its list of acceptable answers and returns the best score over the answers.
"""

from __future__ import annotations

import re
import string
from collections import Counter

import torch
from torchmetrics import Metric

ARTICLES = re.compile(r"\b(a|an|the)\b")


PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """The official SQuAD normalization: other scripts' figures are comparable with ours only under it."""
    text = "".join(c for c in text.lower() if c not in PUNCTUATION)
    return " ".join(ARTICLES.sub(" ", text).split())


def _check(answers: list[str]) -> list[str]:
    if isinstance(answers, str) or not answers:  # a bare string would be scored character by character
        raise ValueError(f"answers must be a non-empty list of strings, got {answers!r}")
    return answers


def exact_match(prediction: str, answers: list[str]) -> float:
    """1.0 if the normalized prediction equals some normalized answer, else 0.0."""
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(a) for a in _check(answers)))


def _f1(pred_tokens: list[str], gold_tokens: list[str]) -> float:
    if not pred_tokens or not gold_tokens:
        return float(pred_tokens == gold_tokens)  # both empty: 1.0; one empty: 0.0
    common = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())  # tokens shared, with multiplicity
    if common == 0:
        return 0.0
    precision, recall = common / len(pred_tokens), common / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def token_f1(prediction: str, answers: list[str]) -> float:
    """Best bag-of-tokens F1 between the normalized prediction and an answer."""
    pred = normalize_answer(prediction).split()
    return max(_f1(pred, normalize_answer(a).split()) for a in _check(answers))


def substring_match(prediction: str, answers: list[str]) -> float:
    """1.0 if some non-empty normalized answer occurs in the normalized prediction (the usual RAG "accuracy")."""
    pred = normalize_answer(prediction)
    return float(any((gold := normalize_answer(a)) and gold in pred for a in _check(answers)))


def contains_answer(text: str, answers: list[str]) -> bool:
    """Whether some normalized answer occurs in the normalized ``text`` as whole tokens ("ab" not in "about")."""
    padded = f" {normalize_answer(text)} "
    return any((gold := normalize_answer(a)) and f" {gold} " in padded for a in answers)


class AnswerMetrics(Metric):
    """Mean exact match, token F1 and substring match over all predictions seen.

    ``update(predictions, answers)``: one list of acceptable answers per prediction.
    ``compute()``: ``{"exact_match", "f1", "substring", "count"}`` as float64 tensors (NaN means when empty).
    """

    full_state_update = False
    higher_is_better = True
    SCORES = {"exact_match": exact_match, "f1": token_f1, "substring": substring_match}

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        for name in (*self.SCORES, "count"):  # sums; the means are taken in compute
            self.add_state(name, default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, predictions: list[str], answers: list[list[str]]) -> None:
        if len(predictions) != len(answers):
            raise ValueError(f"{len(predictions)} predictions but {len(answers)} answer lists")
        for name, score in self.SCORES.items():
            setattr(self, name, getattr(self, name) + sum(score(p, a) for p, a in zip(predictions, answers)))
        self.count += len(predictions)

    def compute(self) -> dict[str, torch.Tensor]:
        nan = torch.tensor(float("nan"), dtype=torch.float64)
        out = {name: getattr(self, name) / self.count if self.count > 0 else nan for name in self.SCORES}
        out["count"] = self.count.clone()
        return out
