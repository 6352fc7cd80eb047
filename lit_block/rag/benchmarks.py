"""Public RAG benchmarks as :class:`RagSample` s: HotpotQA, 2WikiMultihopQA, NQ, TriviaQA, LongBench, LoCoMo.

``load_benchmark(name, path_or_hub_id)`` reads a local ``.json`` / ``.jsonl`` file (or a folder holding
one) directly; anything else goes to ``datasets.load_dataset`` (a hub id, optionally ``id:config``,
e.g. ``hotpot_qa:distractor``, ``trivia_qa:rc``, ``THUDM/LongBench:hotpotqa``; needs ``split``).
Layouts read:

* ``hotpotqa`` / ``2wikimqa`` (distractor setting): ``context`` as ``[[title, [sentences]], ...]`` or the
  hub's ``{"title": [...], "sentences": [...]}``; one passage per title; gold = supporting-fact titles.
* ``nq`` / ``triviaqa``: DPR / FiD retrieval rows ``{"question", "answers", "ctxs": [{"title", "text",
  "has_answer"?}]}`` (the format Block-Attention uses); gold = ``has_answer`` passages, else those
  holding an answer. ``triviaqa`` also reads the hub ``trivia_qa`` rc rows (one passage per page).
* ``longbench``: ``context`` cut at ``Passage N:`` markers, else into blank-line paragraphs merged up
  to ``max_passage_chars``; gold = passages holding an answer (may be none).
* ``locomo``: one passage per conversation session, one sample per QA item; gold = the sessions of
  its evidence turns. Adversarial items (an ``adversarial_answer``, no ``answer``) are left out.

Errors name the file, the row (0-based position in the list, or JSONL line - 1) and the key.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from lit_block.rag.metrics import contains_answer
from lit_block.rag.sample import RagSample

PASSAGE_MARK = re.compile(r"(?m)^(?=Passage \d+:)")  # LongBench numbers the passages it concatenates
DIA_ID = re.compile(r"D\d+:\d+")  # a LoCoMo turn id: session 1, turn 3 -> "D1:3"


class RowError(ValueError):
    """Bad input in one row; the message starts with the file and row."""


@dataclass
class Row:
    """One input row (a dict) and where it came from, for errors."""

    data: dict
    where: str  # the file or hub id
    index: int

    def error(self, message: str) -> RowError:
        return RowError(f"{self.where} row {self.index}: {message}")

    def need(self, key: str, obj=None, path: str = ""):
        """``obj[key]`` (``obj`` defaults to the row); a missing key names its path, e.g. ``'context.title'``."""
        obj = self.data if obj is None else obj
        if not isinstance(obj, dict) or key not in obj:
            raise self.error(f"missing key {path + key!r}")
        return obj[key]

    def id(self, name: str, *keys: str) -> str:
        """The row's own id under the first of ``keys`` it has, else ``<name>-<index>``."""
        return next((str(self.data[k]) for k in keys if self.data.get(k) is not None), f"{name}-{self.index}")


def titled(title: str, text: str) -> str:
    """A passage as a prompt shows it: the title line, then the text."""
    return f"{title}\n{text}" if title else text


def answer_passages(passages: list[str], answers: list[str]) -> list[int]:
    """Indices of the passages holding some answer as whole normalized tokens."""
    return [i for i, p in enumerate(passages) if contains_answer(p, answers)]


def load_multihop(row: Row, name: str, max_chars: int) -> list[RagSample]:
    """HotpotQA / 2WikiMultihopQA: one passage per context title; gold = supporting-fact titles."""
    context, facts = row.need("context"), row.need("supporting_facts")
    if isinstance(context, dict):  # hub layout: parallel lists
        context = list(zip(row.need("title", context, "context."), row.need("sentences", context, "context.")))
    if isinstance(facts, dict):
        facts = list(zip(row.need("title", facts, "supporting_facts."), row.need("sent_id", facts, "supporting_facts.")))
    titles = [title for title, _ in context]
    passages = [titled(title, " ".join(s.strip() for s in sentences)) for title, sentences in context]
    if missing := sorted({t for t, _ in facts} - set(titles)):
        raise row.error(f"supporting fact title(s) {missing} not in 'context'")
    gold = sorted({titles.index(t) for t, _ in facts})
    meta = {k: row.data[k] for k in ("type", "level", "evidences") if k in row.data}
    question, answer = row.need("question"), str(row.need("answer"))
    return [RagSample(row.id(name, "_id", "id"), name, question, passages, [answer], gold, meta)]


def load_retrieval(row: Row, name: str, max_chars: int) -> list[RagSample]:
    """NQ / TriviaQA with retrieved passages (DPR / FiD ``ctxs``), or TriviaQA's hub rc layout."""
    question = row.need("question")
    if row.data.get("ctxs"):
        ctxs = row.data["ctxs"]
        answers = [str(a) for a in row.need("answers")]
        passages = [titled(c.get("title", ""), row.need("text", c, f"ctxs[{i}].")) for i, c in enumerate(ctxs)]
        gold = [i for i, c in enumerate(ctxs) if c.get("has_answer")] or answer_passages(passages, answers)
        return [RagSample(row.id(name, "id", "question_id"), name, question, passages, answers, gold)]
    passages = []  # TriviaQA rc layout: Wikipedia pages, then web search results
    for key, body in (("entity_pages", "wiki_context"), ("search_results", "search_context")):
        pages = row.data.get(key) or {}
        passages += [titled(t, text) for t, text in zip(pages.get("title", []), pages.get(body, []))]
    if not passages:
        raise row.error(f"no retrieved passages: the {name} loader needs rows with 'ctxs' (DPR / FiD retrieval "
                        "format) or TriviaQA rc pages, not question-only rows such as nq_open")
    answer = row.need("answer")
    answers = list(dict.fromkeys([str(row.need("value", answer, "answer.")), *answer.get("aliases", [])]))
    gold = answer_passages(passages, answers)
    return [RagSample(row.id(name, "question_id", "id"), name, question, passages, answers, gold)]


def split_context(context: str, max_chars: int) -> list[str]:
    """LongBench context as passages: at ``Passage N:`` markers, else paragraphs merged up to ``max_chars``."""
    if PASSAGE_MARK.search(context):
        return [p.strip() for p in PASSAGE_MARK.split(context) if p.strip()]
    pieces = []  # (text, separator to join it with the one before)
    for paragraph in re.split(r"\n\s*\n", context):
        lines = paragraph.splitlines() if len(paragraph) > max_chars else [paragraph]  # a long one: its lines
        pieces += [(line.strip(), "\n" if len(lines) > 1 else "\n\n") for line in lines if line.strip()]
    chunks: list[str] = []
    for text, sep in pieces:
        if chunks and len(chunks[-1]) + len(sep) + len(text) <= max_chars:
            chunks[-1] += sep + text
        else:
            chunks.append(text)
    return chunks or [context]


def load_longbench(row: Row, name: str, max_chars: int) -> list[RagSample]:
    """A LongBench row: ``input`` is the question, ``context`` is cut into passages."""
    answers = [str(a) for a in row.need("answers")]
    passages = split_context(row.need("context"), max_chars)
    meta = {k: row.data[k] for k in ("dataset", "language", "length", "all_classes") if k in row.data}
    gold = answer_passages(passages, answers)
    return [RagSample(row.id(name, "_id", "id"), name, row.need("input"), passages, answers, gold, meta)]


def load_locomo(row: Row, name: str, max_chars: int) -> list[RagSample]:
    """A LoCoMo conversation: one passage per session, one sample per QA item."""
    conversation, sample_id = row.need("conversation"), row.id(name, "sample_id")
    sessions = sorted((int(k.split("_")[1]), k) for k in conversation if re.fullmatch(r"session_\d+", k))
    passages, session_of = [], {}  # session_of: turn id -> passage index
    for n, key in sessions:
        lines = [conversation.get(f"{key}_date_time") or f"Session {n}"]
        for j, turn in enumerate(conversation[key] or []):
            text = row.need("text", turn, f"conversation.{key}[{j}].")
            caption = f" [shares an image: {turn['blip_caption']}]" if turn.get("blip_caption") else ""
            lines.append(f"{row.need('speaker', turn, f'conversation.{key}[{j}].')}: {text}{caption}")
            session_of[turn.get("dia_id")] = len(passages)
        if len(lines) > 1:  # an empty session makes no passage
            passages.append("\n".join(lines))
    samples = []
    for j, item in enumerate(row.need("qa")):
        if "answer" not in item and "adversarial_answer" in item:
            continue  # LoCoMo's adversarial questions: the conversation holds no answer
        evidence = [d for e in item.get("evidence", []) for d in DIA_ID.findall(str(e))]
        gold = sorted({session_of[d] for d in evidence if d in session_of})
        question, answer = row.need("question", item, f"qa[{j}]."), str(row.need("answer", item, f"qa[{j}]."))
        meta = {"category": item.get("category"), "evidence": evidence}
        samples.append(RagSample(f"{sample_id}/qa{j}", name, question, passages, [answer], gold, meta))
    return samples


LOADERS = {"hotpotqa": load_multihop, "2wikimqa": load_multihop, "nq": load_retrieval, "triviaqa": load_retrieval,
           "longbench": load_longbench, "locomo": load_locomo}


def read_json_rows(path: Path) -> list:
    """Rows of a JSON list (or ``{"data": [...]}``) or of a JSONL file."""
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError:  # JSONL, one object a line
        data = []
        for n, line in enumerate(text.splitlines(), start=1):
            try:
                data += [json.loads(line)] if line.strip() else []
            except json.JSONDecodeError as err:
                raise ValueError(f"{path} line {n}: not JSON ({err.msg})") from None
    data = data.get("data", data) if isinstance(data, dict) else data
    if isinstance(data, dict):  # a single row
        data = [data]
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of rows, got {type(data).__name__}")
    return data


def find_file(folder: Path, split: str | None) -> Path:
    """The one ``.json`` / ``.jsonl`` file in ``folder`` (the one naming ``split`` when there are several)."""
    files = sorted(p for p in folder.iterdir() if p.suffix in (".json", ".jsonl"))
    named = [p for p in files if split and split in p.name] or files
    if len(named) != 1:
        raise ValueError(f"{folder}: expected one .json/.jsonl file{f' for split {split!r}' if split else ''}, "
                         f"found {[p.name for p in named]}")
    return named[0]


def load_benchmark(name: str, path_or_hub_id: str, split: str | None = None, max_samples: int | None = None,
                   max_passage_chars: int = 1200) -> list[RagSample]:
    """Samples of benchmark ``name`` from a local file / folder or a hub dataset, at most ``max_samples``.

    ``max_passage_chars`` sizes the passages LongBench contexts are cut into.
    """
    if name not in LOADERS:
        raise ValueError(f"unknown benchmark {name!r}; valid: {list(LOADERS)}")
    path = Path(path_or_hub_id)
    if path.is_dir():
        path = find_file(path, split)
    if path.is_file():
        rows, where = read_json_rows(path), str(path)
    elif path.suffix in (".json", ".jsonl"):
        raise FileNotFoundError(f"{path}: no such file")
    elif split is None:
        raise ValueError(f"{path_or_hub_id}: not a local file; pass split= to load it from the hub")
    else:
        import datasets

        hub_id, _, config = path_or_hub_id.partition(":")
        rows, where = datasets.load_dataset(hub_id, config or None, split=split), f"{path_or_hub_id}[{split}]"
    samples: list[RagSample] = []
    for index, data in enumerate(rows):
        row = Row(data, where, index)
        if not isinstance(data, dict):
            raise row.error(f"not a JSON object: {str(data)[:60]!r}")
        try:
            samples += LOADERS[name](row, name, max_passage_chars)
        except RowError:
            raise
        except (ValueError, TypeError, AttributeError) as err:  # RagSample checks, wrongly shaped values
            raise row.error(f"{type(err).__name__}: {err}") from err
        if max_samples is not None and len(samples) >= max_samples:
            break
    return samples[:max_samples]
