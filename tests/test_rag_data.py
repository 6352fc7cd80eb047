"""RAG evaluation data: samples, answer metrics, benchmark loaders on invented fixtures, corpus-built tasks."""

from __future__ import annotations

import json
import math
import re
import warnings
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lit_block.rag import (AnswerMetrics, RagSample, build_corpus_tasks, contains_answer, exact_match,
                           normalize_answer, substring_match, token_f1)
from lit_block.rag.benchmarks import load_benchmark
from lit_block.rag.corpus_tasks import first_sentence, parse_devil, parse_gcide, parse_headword_block

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures" / "rag"
REAL_CORPUS = REPO / "data" / "semanticseg"


def word_in(text: str, word: str) -> bool:
    return re.search(rf"(?<!\w){re.escape(word)}(?!\w)", text, re.IGNORECASE) is not None


# ---------------------------------------------------------------- sample


def test_sample_validation_names_id_and_field():
    ok = dict(id="q1", task="t", question="Why?", passages=["p0", "p1"], answers=["yes"], gold_passages=[1])
    RagSample(**ok)
    RagSample(**{**ok, "gold_passages": []})  # no gold passage is allowed (LongBench, retrieval misses)
    for bad, field in [({"question": " "}, "question"), ({"passages": []}, "passages"),
                       ({"answers": ["", " "]}, "answers"), ({"gold_passages": [2]}, "gold_passages")]:
        with pytest.raises(ValueError, match=rf"'q1'.*'{field}'"):
            RagSample(**{**ok, **bad})


# ---------------------------------------------------------------- metrics


def test_normalize_answer_drops_case_punctuation_articles():
    assert normalize_answer("  The Cat, sat!  ") == "cat sat"
    assert normalize_answer("An apple's core") == "apples core"
    assert normalize_answer("“An” apple’s core") == "“ ” apple’s core"  # as the official script: ASCII punctuation only


WORDS = st.sampled_from(["the", "a", "an", "Cat", "cat,", "sat!", "“quoted”", "it's", "Paris", "  ", "-", "über", "9.5"])


@settings(max_examples=200, deadline=None)
@given(st.lists(WORDS, max_size=8).map(" ".join), st.lists(st.lists(WORDS, min_size=1, max_size=6).map(" ".join),
                                                           min_size=1, max_size=3))
def test_exact_match_and_f1_equal_torchmetrics_squad(prediction, answers):
    from torchmetrics.functional.text import squad

    reference = squad([{"prediction_text": prediction, "id": "0"}],
                      [{"answers": {"answer_start": [0] * len(answers), "text": answers}, "id": "0"}])
    assert 100 * exact_match(prediction, answers) == pytest.approx(float(reference["exact_match"]))
    assert 100 * token_f1(prediction, answers) == pytest.approx(float(reference["f1"]), abs=1e-4)


def test_hand_computed_scores():
    assert token_f1("the cat sat", ["a cat sat down"]) == pytest.approx(0.8)  # P = 2/2, R = 2/3
    assert token_f1("cat sat", ["dog", "cat sat"]) == 1.0  # best answer counts
    assert token_f1("", ["the"]) == 1.0 and token_f1("", ["cat"]) == 0.0 and token_f1("cat", [""]) == 0.0
    assert exact_match("The cat.", ["dog", "cat"]) == 1.0 and exact_match("cats", ["cat"]) == 0.0
    assert substring_match("It flows past the Varrow mill", ["the Varrow"]) == 1.0
    assert substring_match("anything", ["", "the"]) == 0.0  # empty normalized answers never match
    assert contains_answer("an ab here", ["ab"]) and not contains_answer("about", ["ab"])
    with pytest.raises(ValueError, match="answers"):
        exact_match("x", "x")


def test_answer_metrics_accumulate_to_the_mean_of_the_pure_functions():
    preds = ["the cat sat", "Paris", "it is in paris, france", ""]
    golds = [["a cat sat down"], ["paris"], ["Paris"], ["London"]]
    m = AnswerMetrics()
    m.update(preds[:2], golds[:2])
    m.update(preds[2:], golds[2:])
    out = m.compute()
    assert out["count"].item() == 4
    for key, fn in [("exact_match", exact_match), ("f1", token_f1), ("substring", substring_match)]:
        assert out[key].item() == pytest.approx(sum(fn(p, g) for p, g in zip(preds, golds)) / 4)
    assert out["exact_match"].item() == pytest.approx(0.25) and out["substring"].item() == pytest.approx(0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchmetrics warns of a compute before any update
        assert math.isnan(AnswerMetrics().compute()["f1"].item())
    with pytest.raises(ValueError, match="2 predictions"):
        m.update(["a", "b"], [["a"]])


# ---------------------------------------------------------------- benchmark loaders


def test_hotpotqa_list_layout():
    s = load_benchmark("hotpotqa", str(FIXTURES / "hotpotqa.json"))
    assert [x.id for x in s] == ["hp-0001", "hp-0002"]
    assert s[0].question.startswith("Which river") and s[0].answers == ["the Varrow"]
    assert s[0].passages[1] == ("Tindle Clockworks\nTindle Clockworks was a maker of tower clocks. "
                                "It was founded in Ostermere in 1822.")
    assert s[0].gold_passages == [1, 2] and s[1].gold_passages == [0, 2]
    assert s[0].meta["type"] == "bridge" and s[0].task == "hotpotqa"


def test_hotpotqa_hub_layout_and_2wiki():
    hub = load_benchmark("hotpotqa", str(FIXTURES / "hotpotqa_hub.json"))
    assert hub[0].gold_passages == [1] and hub[0].passages[1].endswith("Its door is painted green.")
    assert hub[1].passages[0] == "Selby Span\nSelby Span is a stone bridge. It has seven arches."
    assert hub[1].gold_passages == [0]  # two supporting facts, one title
    wiki = load_benchmark("2wikimqa", str(FIXTURES / "2wikimqa.json"))
    assert wiki[0].answers == ["Edda Morrow"] and wiki[0].gold_passages == [0, 1]
    assert wiki[0].meta["evidences"][1] == ["Ivo Morrow", "mother", "Edda Morrow"] and wiki[1].gold_passages == [0, 1]


def test_dpr_rows_gold_from_flags_else_from_answers():
    for name in ("nq", "triviaqa"):
        s = load_benchmark(name, str(FIXTURES / "nq_dpr.json"))
        assert s[0].answers == ["Mara Quell", "Quell"] and s[0].gold_passages == [1]  # has_answer flags
        assert s[0].passages[0] == "Hall of Echoes\nThe hall of echoes is a domed room with a painted ceiling."
        assert s[1].gold_passages == [0, 2]  # no flags: the passages holding "nine" as a word


def test_triviaqa_rc_layout():
    s = load_benchmark("triviaqa", str(FIXTURES / "triviaqa_rc.json"))
    assert s[0].id == "tq_inv_1" and s[0].answers == ["Perrin Isle", "Isle of Perrin"]
    assert len(s[0].passages) == 2 and s[0].gold_passages == [0]
    assert s[1].passages[0].startswith("Kettering crown\n") and s[1].gold_passages == [0]  # search results only


def test_question_only_rows_are_refused(tmp_path):
    path = tmp_path / "nq_open.jsonl"
    path.write_text('{"question": "who wrote it", "answer": ["someone"]}\n')
    with pytest.raises(ValueError, match=r"nq_open.jsonl row 0: no retrieved passages.*ctxs"):
        load_benchmark("nq", str(path))


def test_longbench_passages():
    s = load_benchmark("longbench", str(FIXTURES / "longbench.jsonl"), max_passage_chars=80)
    assert [len(x.passages) for x in s] == [3, 2, 1]
    assert s[0].passages[1] == "Passage 2:\nAmber Key\nThe amber key was hidden under the third stair."
    assert s[0].gold_passages == [1]
    assert s[1].passages[0] == "The keeper rises at dawn.\n\nShe walks the fence line and counts the gates."
    assert s[1].gold_passages == [1] and s[2].gold_passages == []  # nobody quoted the summary
    assert s[0].meta == {"dataset": "hotpotqa", "language": "en", "length": 30, "all_classes": None}


def test_locomo_sessions_and_questions():
    s = load_benchmark("locomo", str(FIXTURES / "locomo.json"))
    assert [x.id for x in s] == ["conv-x1/qa0", "conv-x1/qa1", "conv-x1/qa3", "conv-x2/qa0"]  # adversarial qa2 left out
    assert s[0].passages[0] == ("9:10 am on 3 March, 2021\nNell: I started building a kite this weekend.\n"
                                "Tobin: What colour is it?\nNell: Bright orange, with a long blue tail.")
    assert s[1].passages[1].endswith("[shares an image: a photo of an orange kite in the sky]")
    assert s[1].answers == ["12"] and s[1].gold_passages == [1]
    assert s[2].gold_passages == [0, 1] and s[3].gold_passages == [0] and len(s[3].passages) == 1
    assert len(load_benchmark("locomo", str(FIXTURES / "locomo.json"), max_samples=2)) == 2


@pytest.mark.parametrize("name,file,row,drop,key", [
    ("hotpotqa", "hotpotqa.json", 1, ["question"], "question"),
    ("2wikimqa", "2wikimqa.json", 1, ["supporting_facts"], "supporting_facts"),
    ("hotpotqa", "hotpotqa_hub.json", 1, ["context", "sentences"], "context.sentences"),
    ("nq", "nq_dpr.json", 1, ["answers"], "answers"),
    ("triviaqa", "triviaqa_rc.json", 1, ["answer", "value"], "answer.value"),
    ("longbench", "longbench.jsonl", 1, ["input"], "input"),
    ("locomo", "locomo.json", 0, ["qa", 1, "question"], "qa[1].question"),
])
def test_missing_key_names_file_row_and_key(tmp_path, name, file, row, drop, key):
    text = (FIXTURES / file).read_text()
    rows = [json.loads(line) for line in text.splitlines()] if file.endswith(".jsonl") else json.loads(text)
    target = rows[row]
    for step in drop[:-1]:
        target = target[step]
    del target[drop[-1]]
    path = tmp_path / file
    path.write_text("\n".join(map(json.dumps, rows)) if file.endswith(".jsonl") else json.dumps(rows))
    with pytest.raises(ValueError, match=re.escape(f"{path} row {row}: missing key '{key}'")):
        load_benchmark(name, str(path))


def test_loader_inputs(tmp_path):
    (tmp_path / "dev.json").write_text((FIXTURES / "hotpotqa.json").read_text())
    assert len(load_benchmark("hotpotqa", str(tmp_path))) == 2  # a folder with one file
    with pytest.raises(ValueError, match="expected one"):
        load_benchmark("hotpotqa", str(FIXTURES))  # seven files, none named for a split
    with pytest.raises(ValueError, match="valid"):
        load_benchmark("squad", str(FIXTURES / "hotpotqa.json"))
    with pytest.raises(FileNotFoundError):
        load_benchmark("hotpotqa", str(tmp_path / "missing.json"))


# ---------------------------------------------------------------- corpus tasks

GCIDE = [  # invented entries in GCIDE's layout
    'Blorpt \\Blorpt\\, n. [Invented.]\n   A small round stone used for skipping across ponds.\n   [1913 Webster]\n\n',
    'Frimble \\Frim"ble\\, v. i.\n   1. To hum quietly while working; to mutter a tune.\n      [1913 Webster]\n\n'
    '   2. To fidget. [Obs.]\n      [1913 Webster]\n\n',
    'Quillet \\Quil"let\\, n.\n   A blue dish in which a blorpt is kept for luck. --Anon.\n   [1913 Webster]\n\n',
    'Snarvel \\Snar"vel\\, a. [Invented; cf. {Snarl}.]\n   Knotted and twisted, as old rope; tangled.\n'
    '   [1913 Webster]\n\n',
    'Tobbin \\Tob"bin\\, n.\n   A tobbin.\n   [1913 Webster]\n\n',  # too short: skipped
    'Wendle \\Wen"dle\\, v. t. [imp. & p. p. {Wendled}; p. pr. &\n   vb. n. {Wendling}.]\n'
    '   To wind yarn onto a spindle by hand.\n   [1913 Webster]\n\n',
    'Yarrick \\Yar"rick\\, n.\n   A lantern hung at the bow of a river barge. See {Barge}.\n   [1913 Webster]\n\n',
    'Zephlin \\Zeph"lin\\, n. (Zool.)\n   A small grey bird that nests in chimneys.\n   [1913 Webster]\n\n',
    'Glimmet \\Glim"met\\, n.\n   A glimmet of light; a faint spark seen at dusk.\n   [1913 Webster]\n\n',
]
DEVIL = [  # invented entries in the Devil's Dictionary layout
    "BANKER, n.  One who lends you an umbrella and asks for it back when it rains.\n\n",
    "CLOCK, n.  A machine that reminds us how late we already are.\n\n    Verse about a clock.\n\n",
    "DIET, n.  A promise made to the mirror and broken to the kitchen.\n\n",
    "ECHO, n.  The only voice that always agrees with you.\n\n",
    "FERRY, n.  A boat that leaves exactly when you arrive.\n\n",
]
FAQ = [  # title, group heading, question sections
    "Invented FAQ\n\n", "General Questions\n\n",
    "How do I wind the tower clock?\n\nTurn the brass key seven times, then wait for the chime.  Do not force it.\n\n"
    "Oil the gears once a year.\n\n\n",
    "Why does the ferry leave early on Sundays?\n\nThe tide turns before dawn on Sundays in summer.  "
    "The captain follows it.\n\n\n",
    "Can I bring a bicycle onto the ferry?\n\nYes, bicycles ride free on the lower deck.\n\n\n",
    "What is the quietest room in the library?\n\nThe map room on the third floor is the quietest.\n\n\n",
    "How do I renew a reading card?\n\nYou can't.\n\n\n",  # too short: skipped
    "Where are lost umbrellas kept?\n\nLost umbrellas are kept in a barrel by the porter's desk.\n\n\n",
    "Who repairs the town organ?\n\nA travelling organ builder visits each autumn to repair it.\n\n",
]


def corpus_row(doc_id: str, category: str, source: str, units: list[str], level: str) -> dict:
    starts = [sum(map(len, units[:i])) for i in range(1, len(units))]  # every unit starts a segment
    return {"id": doc_id, "text": "".join(units), "category": category, "source": source,
            "boundaries_coarse": starts if level == "coarse" else [],
            "boundaries_middle": starts}


@pytest.fixture(scope="module")
def rag_corpus(tmp_path_factory) -> Path:
    """A corpus in the built schema: GCIDE-like entries and a FAQ page (test), Devil-like entries (validation)."""
    from datasets import Dataset, DatasetDict

    folder = tmp_path_factory.mktemp("rag_corpus")
    test = [corpus_row("gcide-test-0", "dictionary", "gcide", GCIDE, "coarse"),
            corpus_row("faq-test-0", "faq", "python-faq", FAQ, "middle")]
    validation = [corpus_row("devil-validation-0", "dictionary", "devil", DEVIL, "coarse")]
    DatasetDict({"test": Dataset.from_list(test), "validation": Dataset.from_list(validation)}).save_to_disk(str(folder))
    return folder


def check_properties(samples: list[RagSample], num_passages: int | None = None):
    """Gold holds the answer (or the headword); no distractor holds the gold headword or the answer."""
    for s in samples:
        assert len(s.gold_passages) == 1 and (num_passages is None or len(s.passages) == num_passages), s.id
        gold = s.passages[s.gold_passages[0]]
        distractors = [p for i, p in enumerate(s.passages) if i != s.gold_passages[0]]
        if s.task == "headword":
            assert word_in(gold, s.answers[0]) and not any(word_in(p, s.answers[0]) for p in distractors), s.id
        else:
            assert contains_answer(gold, s.answers) and not any(contains_answer(p, s.answers) for p in distractors)
        if s.task == "definition":
            headword = s.question.split('"')[1]
            assert word_in(gold, headword) and not any(word_in(p, headword) for p in distractors), s.id


def test_entry_parsers_on_invented_entries():
    assert parse_gcide(GCIDE[1].strip()) == ("Frimble", "To hum quietly while working; to mutter a tune.")
    assert parse_gcide(GCIDE[5].strip()) == ("Wendle", "To wind yarn onto a spindle by hand.")
    assert parse_gcide(GCIDE[6].strip())[1] == "A lantern hung at the bow of a river barge."
    assert parse_devil(DEVIL[1].strip()) == ("CLOCK", "A machine that reminds us how late we already are.")
    foldoc = "Snorkel-8\n\n   <language> (S8) An invented {language} for\n   submarines.  It has no loops.\n\n   (2001)"
    assert parse_headword_block(foldoc) == ("Snorkel-8", "An invented language for submarines.")
    jargon = "flurb\n /flerb/, n.\n\n    [common]\n\n    1. A bug that fixes itself. Rare.\n"
    assert parse_headword_block(jargon) == ("flurb", "A bug that fixes itself.")
    assert first_sentence("See Dr. Gak, e.g. here. Then more.") == "See Dr. Gak, e.g. here."


def test_corpus_tasks_on_a_tiny_corpus(rag_corpus):
    skipped = Counter()
    samples = build_corpus_tasks(str(rag_corpus), num_passages=4, max_samples_per_task=None, skipped=skipped)
    by_task = Counter(s.task for s in samples)
    assert by_task == {"definition": 8, "headword": 7, "faq": 6}  # Tobbin / "You can't." skipped; Glimmet names itself
    check_properties(samples, num_passages=4)
    one = {(s.task, s.question): s for s in samples}
    blorpt = one["definition", 'What does "Blorpt" mean?']
    assert blorpt.answers == ["A small round stone used for skipping across ponds."]
    assert not any("Quillet" in p for p in blorpt.passages)  # Quillet's entry names a blorpt
    clock = one["faq", "How do I wind the tower clock?"]
    assert clock.answers == ["Turn the brass key seven times, then wait for the chime."]
    gold = clock.passages[clock.gold_passages[0]]
    assert gold.startswith("Turn the brass key") and "Oil the gears" in gold and "wind" not in gold
    assert one["headword", 'Which word is defined as: "A small grey bird that nests in chimneys."?'].answers == ["Zephlin"]
    assert skipped[("faq", "no question line")] == 2 and skipped[("faq", "answer shorter than 3 words")] == 1
    assert skipped[("headword", "definition names the headword")] == 1
    assert skipped[("definition", "answer shorter than 3 words")] == 1


def test_corpus_tasks_are_seeded(rag_corpus):
    def build(seed, **kw):
        return build_corpus_tasks(str(rag_corpus), **{"num_passages": 4, "max_samples_per_task": None, "seed": seed, **kw})

    first = build(0)
    assert build(0) == first
    assert [s.gold_passages for s in build(1)] != [s.gold_passages for s in first]
    capped = build(0, max_samples_per_task=2, tasks=("headword", "faq"))
    assert Counter(s.task for s in capped) == {"headword": 2, "faq": 2}
    assert all(len(s.passages) == 2 for s in build(0, num_passages=2))


def test_corpus_task_input_errors(rag_corpus, tmp_path):
    with pytest.warns(UserWarning, match="'faq': split 'validation'"):
        samples = build_corpus_tasks(str(rag_corpus), tasks=("faq", "definition"), splits=("validation",), num_passages=3)
    assert {s.task for s in samples} == {"definition"} and {s.meta["source"] for s in samples} == {"devil"}
    check_properties(samples, num_passages=3)
    with pytest.raises(FileNotFoundError, match="lit-block data build"):
        build_corpus_tasks(str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match=r"valid: \['faq', 'definition', 'headword'\]"):
        build_corpus_tasks(str(rag_corpus), tasks=("trivia",))
    with pytest.raises(ValueError, match="no split"):
        build_corpus_tasks(str(rag_corpus), splits=("train",))


@pytest.mark.skipif(not (REAL_CORPUS / "dataset_dict.json").is_file(), reason="no built corpus (lit-block data build)")
def test_corpus_tasks_on_the_real_corpus():
    from datasets import load_from_disk

    splits = [s for s in ("validation", "test") if s in load_from_disk(str(REAL_CORPUS))]
    found: Counter = Counter()
    for split in splits:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the test split has no FAQ page: a warning says so
            samples = build_corpus_tasks(str(REAL_CORPUS), splits=(split,), max_samples_per_task=30)
        check_properties(samples, num_passages=10)
        assert all(len(p) <= 1200 for s in samples for p in s.passages)
        found.update(s.task for s in samples)
    assert set(found) == {"faq", "definition", "headword"}, found
