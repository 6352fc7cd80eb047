"""RAG evaluation data: samples, answer metrics, tasks built from the corpus, public benchmark loaders."""

from lit_block.rag.corpus_tasks import build_corpus_tasks
from lit_block.rag.metrics import AnswerMetrics, contains_answer, exact_match, normalize_answer, substring_match, token_f1
from lit_block.rag.sample import RagSample

__all__ = [
    "AnswerMetrics", "RagSample", "build_corpus_tasks", "contains_answer", "exact_match",
    "normalize_answer", "substring_match", "token_f1",
]
