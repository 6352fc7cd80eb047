"""RAG tasks built from the project's real-text corpus (``lit-block data build``, ``data/semanticseg``).

Three tasks, each sample a question, ``num_passages`` passages (one gold, the rest distractors of the
same source and split, the gold at a seeded random position) and short answers:

* ``faq``: a Python FAQ question line -> its answer paragraphs; answer = the answer's first sentence.
* ``definition``: ``What does "<headword>" mean?`` -> the dictionary entry; answer = its first definition.
* ``headword``: ``Which word is defined as: "<definition>"?`` -> the entry; answer = the headword.

Dictionary entries are the coarse units of the dictd sources (GCIDE and Devil are category
"dictionary"; FOLDOC and Jargon, "encyclopedia" in the built corpus, share the entry format and are
used too); FAQ questions are the middle units of ``python-faq``. A distractor never holds an answer
(as whole normalized tokens) nor the gold headword as a word. Entries that do not parse are skipped
and counted by reason.
"""

from __future__ import annotations

import logging
import random
import re
import warnings
from collections import Counter
from dataclasses import dataclass
from itertools import takewhile
from pathlib import Path

from lit_block.rag.metrics import contains_answer
from lit_block.rag.sample import RagSample

TASKS = ("faq", "definition", "headword")
DICTIONARIES = ("gcide", "devil", "foldoc", "jargon")
TASK_SOURCES = {"faq": ("faq", ("python-faq",)), "definition": ("dictionary", DICTIONARIES),
                "headword": ("dictionary", DICTIONARIES)}  # task -> (corpus category, sources it can parse)
MIN_ANSWER_WORDS = 3  # "Walking." or "You can't." make no useful question

HEADWORD = re.compile(r"[A-Za-z0-9][\w' .+/-]{0,38}[\w+]")  # 2-40 characters: "Abaca", "all right", "PDP-11"
GCIDE_HEAD = re.compile(r"([^\\\n]+?)\s*\\")  # 'Abaca \Ab"a*ca\ ...' -> "Abaca"
POS_ONLY = re.compile(r"[a-z]+\.(?:[ ,;&]*[a-z]+\.)*")  # a part-of-speech line: "n.", "v. t.", "adj."
SUBSENSE = re.compile(r"\([a-z]\)\s")  # "(a) A bark ..." opens a lettered sub-sense
SENSE = re.compile(r"\s*\d+\.\s")  # "   2. ..." starts the next sense
DEVIL_HEAD = re.compile(  # "ANOINT, v.t.  ", "CONFIDANT, CONFIDANTE, n.  ", "FORMA PAUPERIS.  "
    r"([A-Z][A-Z'\- ]*[A-Z])(?:,\s*[A-Z][A-Z'\- ]*[A-Z])*[,.]?\s+"  # the headword (and variants)
    r"(?:(?:[a-z]+\.)+(?:\s*&\s*(?:[a-z]+\.)+)?)?"  # the part of speech, if any
)
CUT = re.compile("|".join([  # where a definition's text ends
    r"\s--(?=[A-Z])",  # a citation: "--Shak."
    r"\s--\s(?:\{|(?:[a-z]+\.\s)+)",  # a run-on form: "-- n. One of ...", "-- {Am`a*teur"ish*ly}"
    r"\[[^\]]*(?:Webster|WordNet|PJC)[^\]]*\]",  # a source tag: "[1913 Webster]"
    r"(?:See|Compare)(?: also)?\s*\{",  # a cross-reference: "See {Barge}."
]))
LEAD = re.compile("^(?:" + "|".join([  # what goes before a definition's text, any number of times
    r"\d+\.\s*(?:\d+\s+)?",  # a sense number: "1. ", WordNet's "1. 1 "
    r"<[^>]*>\s*",  # a FOLDOC subject: "<programming> "
    r"\[[^\]]*\]\s*",  # a Jargon label or etymology: "[common] "
    r"/[^/]*/,?\s*",  # a pronunciation: "/krem·vaks/, "
    r"\([^)]*\)\s*",  # a field or gloss: "(Zool.) ", "(Basic CPL) "
]) + ")+")
TRAIL = re.compile(r"(?:\s*\[[^\]]*\])+\s*$")  # usage labels after the text: "[Obs.]", "[R.]"
SENTENCE_END = re.compile(r"[.!?][\"')\]”’]*(?=\s+[\"'(\[“‘]?[A-Z0-9])")  # an end mark before a capitalised word
ABBREVIATIONS = {"e.g", "i.e", "cf", "vs", "dr", "mr", "mrs", "st", "no", "vol", "pp", "fr", "viz", "approx"}


class Unusable(Exception):
    """An entry or FAQ section that makes no sample; the message is the reason counted."""


@dataclass(frozen=True)
class Entry:
    """A parsed unit: ``title`` (headword or question line), ``first`` (definition or first answer sentence)."""

    doc_id: str
    source: str
    split: str
    offset: int  # character offset of the unit in its document
    title: str
    first: str
    passage: str  # what a prompt shows: the entry, or the FAQ answer paragraphs, clipped


def first_sentence(text: str) -> str:
    """The first sentence of ``text``, whitespace collapsed; abbreviations and initials do not end one."""
    text = " ".join(text.split())
    for m in SENTENCE_END.finditer(text):
        word = text[: m.start()].rsplit(" ", 1)[-1].lstrip("(\"'").lower()
        if text[m.start()] == "." and (word in ABBREVIATIONS or len(word) == 1):
            continue  # "Dr. Gak", "T. Browne"
        return text[: m.end()]
    return text


def clean_definition(text: str) -> str:
    """One sense as plain text: citations, cross-refs, sense numbers, labels and ``{}`` markup dropped."""
    text = CUT.split(" ".join(text.split()), maxsplit=1)[0]
    text = LEAD.sub("", text).replace("{", "").replace("}", "")
    return TRAIL.sub("", first_sentence(text)).strip()


def contains_word(text: str, word: str) -> bool:
    """Whether ``word`` occurs in ``text`` as a whole word, case-insensitively."""
    return re.search(rf"(?<!\w){re.escape(word)}(?!\w)", text, re.IGNORECASE) is not None


def parse_gcide(entry: str) -> tuple[str, str]:
    """(headword, first definition) of ``Headword \\Head"word\\ (pron.), pos. [etym.]`` then senses."""
    lines = entry.splitlines()
    head = GCIDE_HEAD.match(lines[0])
    if not head:
        raise Unusable("no parsable headword")
    depth, start = 0, None  # bracket depth over the header (pronunciation, etymology)
    for i, line in enumerate(lines):
        text = line.strip()
        header = "\\" in line or (text[:1] in "{([" and not SUBSENSE.match(text)) or POS_ONLY.fullmatch(text)
        if i > 0 and depth <= 0 and text and not header:
            start = i  # the first line that is no headword, part of speech, plural or etymology
            break
        depth += line.count("[") + line.count("(") - line.count("]") - line.count(")")
    if start is None:
        raise Unusable("no definition")
    rest = takewhile(lambda line: line.strip() and not SENSE.match(line), lines[start + 1 :])  # to a blank line or sense
    return head.group(1).strip(), clean_definition(" ".join([lines[start], *rest]))


def parse_devil(entry: str) -> tuple[str, str]:
    """(headword, first definition) of ``HEADWORD, pos.  Definition...`` (Bierce)."""
    head = DEVIL_HEAD.match(entry)
    if not head:
        raise Unusable("no parsable headword")
    body = entry[head.end() :].strip()
    return head.group(1), clean_definition(body.split("\n\n")[0])


def parse_headword_block(entry: str) -> tuple[str, str]:
    """(headword, first definition) of FOLDOC / Jargon: a headword block (names, pronunciation), then paragraphs."""
    head, _, body = entry.partition("\n\n")  # the first line of the block names the entry
    head = head.split("\n")[0]
    for paragraph in body.split("\n\n"):
        definition = clean_definition(paragraph)
        if definition and (definition[0].isupper() or definition[0] in "\"“"):  # not a label, pronunciation, "adj."
            return head.strip(), definition
    raise Unusable("no definition")


def parse_faq(section: str) -> tuple[str, str, str]:
    """(question line, first answer sentence, answer paragraphs) of a FAQ question section."""
    question, _, answer = section.strip().partition("\n\n")
    if "\n" in question or "?" not in question:
        raise Unusable("no question line")  # a group heading, a page title, or a window starting mid-answer
    answer = answer.strip()
    if not answer:
        raise Unusable("no answer paragraphs")
    return question, first_sentence(answer.split("\n\n")[0]), answer


PARSERS = {"gcide": parse_gcide, "devil": parse_devil, "foldoc": parse_headword_block, "jargon": parse_headword_block}


def clip(text: str, max_chars: int) -> str:
    """``text`` cut to at most ``max_chars`` at a whitespace."""
    return text if len(text) <= max_chars else text[:max_chars].rsplit(None, 1)[0]


def parse_unit(source: str, unit: str) -> tuple[str, str, str]:
    """(title, first, passage) of one unit of a document of ``source``; raises :class:`Unusable`."""
    if source == "python-faq":
        return parse_faq(unit)
    if unit[:1].isspace():  # a window that starts inside an entry
        raise Unusable("starts inside an entry")
    headword, definition = PARSERS[source](unit.strip())
    if not HEADWORD.fullmatch(headword) or headword.lower() in ("a", "an", "the"):
        raise Unusable("no parsable headword")
    return headword, definition, unit.strip()


def document_entries(row: dict, split: str, max_chars: int, skipped: Counter) -> list[Entry]:
    """The usable units of one corpus row (coarse units of a dictionary, middle units of the FAQ)."""
    text, source = row["text"], row["source"]
    starts = [0, *row["boundaries_middle" if source == "python-faq" else "boundaries_coarse"], len(text)]
    out = []
    for start, end in zip(starts, starts[1:]):
        try:
            title, first, passage = parse_unit(source, text[start:end])
            if len(first.split()) < MIN_ANSWER_WORDS:
                raise Unusable(f"answer shorter than {MIN_ANSWER_WORDS} words")
            if re.search(r"[\\{}\[\]<>]", first):
                raise Unusable("markup left in the answer")
            passage = clip(passage, max_chars)
            if not contains_answer(passage, [first]):
                raise Unusable("answer not inside the clipped passage")
            out.append(Entry(row["id"], source, split, start, title, first, passage))
        except Unusable as reason:
            skipped[str(reason)] += 1
    return out


def task_fields(task: str, entry: Entry) -> tuple[str, list[str], str | None]:
    """(question, answers, word no distractor may hold) of ``entry`` for ``task``."""
    if task == "faq":
        return entry.title, [entry.first], None
    if task == "definition":
        return f'What does "{entry.title}" mean?', [entry.first], entry.title
    if contains_word(entry.first, entry.title):
        raise Unusable("definition names the headword")
    return f'Which word is defined as: "{entry.first}"?', [entry.title], entry.title


def make_sample(task: str, entry: Entry, pool: list[Entry], num_passages: int, rng: random.Random) -> RagSample:
    """One sample: ``entry`` as gold among distractors of ``pool`` drawn by ``rng``."""
    question, answers, word = task_fields(task, entry)
    distractors = []
    for other in rng.sample(pool, len(pool)):  # a seeded shuffle; stops once enough are found
        if len(distractors) == num_passages - 1:
            break
        if other is not entry and not contains_answer(other.passage, answers) and not (
            word and contains_word(other.passage, word)
        ):
            distractors.append(other.passage)
    if len(distractors) < num_passages - 1:
        raise Unusable("too few distractors")
    gold = rng.randrange(num_passages)  # the gold passage's position among the passages
    passages = [*distractors[:gold], entry.passage, *distractors[gold:]]
    meta = {"source": entry.source, "split": entry.split, "document": entry.doc_id, "offset": entry.offset}
    return RagSample(f"{task}:{entry.doc_id}:{entry.offset}", task, question, passages, answers, [gold], meta)


COLUMNS = ("id", "text", "category", "source", "boundaries_coarse", "boundaries_middle")  # what the tasks read


def load_corpus(dataset_path: str, splits: tuple[str, ...]):
    """The corpus ``DatasetDict``, checked for ``splits`` and the columns read; a missing folder says how to build it."""
    if not Path(dataset_path).is_dir():
        raise FileNotFoundError(f"{dataset_path}: no corpus there; build it with `lit-block data build`")
    import datasets

    corpus = datasets.load_from_disk(str(dataset_path))
    if not isinstance(corpus, dict):  # a DatasetDict is a dict of splits; a lone Dataset is not
        raise ValueError(f"{dataset_path}: a single Dataset; expected a DatasetDict of splits")
    if missing := [s for s in splits if s not in corpus]:
        raise ValueError(f"{dataset_path}: no split {missing}; it has {list(corpus)}")
    for split in splits:
        if missing := [c for c in COLUMNS if c not in corpus[split].column_names]:
            raise ValueError(f"{dataset_path} split {split!r}: missing column(s) {missing}")
    return corpus


def task_entries(corpus, dataset_path: str, task: str, split: str, max_chars: int, counts: Counter) -> list[Entry]:
    """The usable units of ``split`` for ``task``; warns when the split has no document for it."""
    category, sources = TASK_SOURCES[task]
    table = corpus[split].select_columns(["category", "source"]).to_dict()  # no text read to pick the rows
    rows = [i for i, (c, s) in enumerate(zip(table["category"], table["source"])) if s in sources or c == category]
    if not any(table["source"][i] in sources for i in rows):
        warnings.warn(f"corpus task {task!r}: split {split!r} of {dataset_path} has no {category} document "
                      f"(sources {', '.join(sources)})", stacklevel=3)
    entries = []
    for row in corpus[split].select(rows):
        if row["source"] in sources:
            entries += document_entries(row, split, max_chars, counts)
        else:  # a document of the category in a format no parser reads
            counts[f"no parser for source {row['source']!r}"] += 1
    return entries


def build_corpus_tasks(dataset_path: str, tasks=("faq", "definition", "headword"), splits=("test",),
                       num_passages: int = 10, max_passage_chars: int = 1200,
                       max_samples_per_task: int | None = 100, seed: int = 0,
                       skipped: Counter | None = None) -> list[RagSample]:
    """Samples of ``tasks`` from ``splits`` of the corpus at ``dataset_path``, task by task.

    Deterministic for equal arguments (each task has its own RNG, seeded by ``seed`` and the task
    name). Up to ``max_samples_per_task`` per task over all ``splits``. ``skipped``, when given, is
    filled with ``(task, reason) -> count``: parsing reasons over all units, the reasons met while
    drawing ("definition names the headword", "too few distractors") over the units drawn. A split
    with no document for a task warns and gives that task nothing.
    """
    tasks = (tasks,) if isinstance(tasks, str) else tuple(tasks)
    splits = (splits,) if isinstance(splits, str) else tuple(splits)
    if unknown := [t for t in tasks if t not in TASKS]:
        raise ValueError(f"unknown corpus task(s) {unknown}; valid: {list(TASKS)}")
    if num_passages < 1:
        raise ValueError(f"num_passages must be at least 1, got {num_passages}")
    corpus, skipped = load_corpus(dataset_path, splits), Counter() if skipped is None else skipped
    samples = []
    for task in tasks:
        counts, entries = Counter(), []
        for split in splits:  # a loop, not a comprehension: the warning's stacklevel reaches the caller
            entries += task_entries(corpus, dataset_path, task, split, max_passage_chars, counts)
        samples += task_samples(task, entries, num_passages, max_samples_per_task, seed, counts)
        skipped.update({(task, reason): n for reason, n in counts.items()})
    logging.getLogger(__name__).info("corpus tasks: %d samples; skipped %s", len(samples), dict(skipped))
    return samples


def task_samples(task: str, entries: list[Entry], num_passages: int, max_samples: int | None, seed: int,
                 counts: Counter) -> list[RagSample]:
    """Up to ``max_samples`` samples of ``task``, gold entries in a seeded random order."""
    rng = random.Random(f"{seed}/{task}")
    pools: dict[tuple[str, str], list[Entry]] = {}  # distractors come from the same source and split
    for e in entries:
        pools.setdefault((e.source, e.split), []).append(e)
    out = []
    for entry in rng.sample(entries, len(entries)):
        if max_samples is not None and len(out) >= max_samples:
            break
        try:
            out.append(make_sample(task, entry, pools[entry.source, entry.split], num_passages, rng))
        except Unusable as reason:
            counts[str(reason)] += 1
    return out
