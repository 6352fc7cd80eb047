"""Hostile and careless inputs to every subcommand: exit status 2, one line naming the culprit, nothing else touched.

Each case runs ``lit-block ...`` in a fresh working folder that also holds a folder of the user's own files;
afterwards every file there must be as it was, except the paths the case allows (the command's own
outputs). The Python API's bad arguments follow at the end.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest
import torch

from conftest import REPO, tiny_config
from lit_block.cli import main
from lit_block.errors import DEBUG_ENV, UsageError

FULL = str(REPO / "experiments" / "distill" / "full.yaml")
FINETUNE = str(REPO / "experiments" / "distill" / "block_finetune.yaml")


@dataclass
class Case:
    name: str
    argv: list[str]  # {tmp} is the working folder, {model} the tiny model folder
    culprit: list[str]  # fragments the message must contain (the file, key, value or field)
    allowed: set[str] = field(default_factory=set)  # top-level names the command may create or change


def make_inputs(tmp):
    """The files the cases read: a user's folder, texts, a jsonl dataset in several broken shapes."""
    (tmp / "mydocs").mkdir()
    (tmp / "mydocs" / "notes.txt").write_text("the user's own notes\n")
    (tmp / "doc.txt").write_text("In the beginning was the word. " * 40)
    (tmp / "r-cran-janeaustenr").mkdir()
    (tmp / "r-cran-janeaustenr" / "emma.txt").write_text("a stand-in, never read\n")
    (tmp / "binary.txt").write_bytes(b"abc\x00def")
    (tmp / "not_a_checkpoint.ckpt").write_text("just some text, not a checkpoint\n")
    (tmp / "broken.yaml").write_text("model:\n  init_args: {temperature: 1.0\n")
    (tmp / "sweep.yaml").write_text("name: s\ncommand: [validate]\ngrid: {x: [1]}\nsurprise: 1\n")

    def jsonl(name, rows):
        (tmp / name).write_text("".join(json.dumps(r) + "\n" for r in rows))

    jsonl("good.jsonl", [{"segments": ["one two.", "three four."]}])
    jsonl("string_segments.jsonl", [{"segments": "one two three"}])
    jsonl("float_offsets.jsonl", [{"text": "one two. three four.", "bounds": [9.5]}])
    jsonl("null_bounds.jsonl", [{"text": "one two. three four.", "bounds": None}])
    jsonl("outside.jsonl", [{"text": "one two. three four.", "bounds": [400]}])


def fit(*overrides: str) -> list[str]:
    return ["fit", "--config", FULL, "--data.init_args.dataset_path={tmp}/none", *overrides]


CASES = [
    # segment
    Case("segment: missing file", ["segment", "{tmp}/nope.txt", "--method", "fixed"], ["nope.txt"]),
    Case("segment: binary input", ["segment", "{tmp}/binary.txt", "--method", "fixed"], ["binary.txt", "NUL"]),
    Case("segment: threshold nan", ["segment", "{tmp}/doc.txt", "--method", "fixed", "--threshold", "nan"],
         ["threshold", "nan"]),
    Case("segment: threshold 2", ["segment", "{tmp}/doc.txt", "--method", "fixed", "--threshold", "2"],
         ["threshold", "2"]),
    Case("segment: max below 2 x min", ["segment", "{tmp}/doc.txt", "--method", "fixed", "--min-block-tokens", "50",
                                        "--max-block-tokens", "60"], ["max_block_tokens", "60"]),
    Case("segment: a missing tokenizer folder", ["segment", "{tmp}/doc.txt", "--method", "fixed", "--tokenizer",
                                                 "./no/such/tokenizer"], ["./no/such/tokenizer"]),
    Case("segment: a text file as checkpoint", ["segment", "{tmp}/doc.txt", "--checkpoint",
                                                "{tmp}/not_a_checkpoint.ckpt"], ["not_a_checkpoint.ckpt"]),
    # data
    Case("data build over the user's folder", ["data", "build", "--output", "{tmp}/mydocs"],
         ["mydocs", "not written by lit-block", "--overwrite"]),
    Case("data build: min_tokens 0", ["data", "build", "--output", "{tmp}/ds", "--min-tokens", "0"], ["min_tokens"]),
    Case("data build: unknown source", ["data", "build", "--output", "{tmp}/ds", "--sources", "nope"], ["nope"]),
    Case("data import over its own source", ["data", "import", "{tmp}/mydocs", "--output", "{tmp}/mydocs",
                                             "--segments-column", "s"], ["own source"]),
    Case("data import over the user's folder", ["data", "import", "{tmp}/good.jsonl", "--output", "{tmp}/mydocs",
                                                "--segments-column", "segments"], ["mydocs", "--overwrite"]),
    Case("data import: missing column", ["data", "import", "{tmp}/good.jsonl", "--output", "{tmp}/out",
                                         "--segments-column", "paragraphs"], ["'paragraphs'", "segments"]),
    Case("data import: segments as one string", ["data", "import", "{tmp}/string_segments.jsonl", "--output",
                                                 "{tmp}/out", "--segments-column", "segments"],
         ["row 0", "'segments'", "list of segment texts"]),
    Case("data import: fractional offsets", ["data", "import", "{tmp}/float_offsets.jsonl", "--output", "{tmp}/out",
                                             "--boundaries-column", "bounds"], ["row 0", "9.5", "whole number"]),
    Case("data import: null boundaries", ["data", "import", "{tmp}/null_bounds.jsonl", "--output", "{tmp}/out",
                                          "--boundaries-column", "bounds"], ["row 0", "'bounds'", "None"]),
    Case("data import: offset outside the text", ["data", "import", "{tmp}/outside.jsonl", "--output", "{tmp}/out",
                                                  "--boundaries-column", "bounds"], ["400", "outside the text"]),
    Case("data import: bad --level-columns", ["data", "import", "{tmp}/good.jsonl", "--output", "{tmp}/out",
                                              "--segments-column", "segments", "--level-columns", "coarse"],
         ["--level-columns", "LEVEL=COLUMN"]),
    Case("data import: unsupported file", ["data", "import", "{tmp}/doc.txt", "--output", "{tmp}/out",
                                           "--segments-column", "s"], ["doc.txt", ".txt"]),
    # fit: settings checked where they are declared (the culprit's class named, jsonargparse's wrapping dropped)
    Case("fit: temperature 0", fit("--model.init_args.temperature=0"), ["temperature", "0"], {"mlflow.db"}),
    Case("fit: temperature -1", fit("--model.init_args.temperature=-1"), ["temperature", "-1"], {"mlflow.db"}),
    Case("fit: learning rate -1", fit("--model.init_args.learning_rate=-1"), ["learning_rate", "-1"], {"mlflow.db"}),
    Case("fit: negative isolated_weight", fit("--model.init_args.isolated_weight=-0.5"), ["isolated_weight"],
         {"mlflow.db"}),
    Case("fit: negative ce_weight", fit("--model.init_args.ce_weight=-1"), ["ce_weight"], {"mlflow.db"}),
    Case("fit: chunk_size 0", fit("--model.init_args.chunk_size=0"), ["chunk_size", "0"], {"mlflow.db"}),
    Case("fit: unknown divergence", fit("--model.init_args.divergence=kl"), ["divergence", "'kl'"], {"mlflow.db"}),
    Case("fit: block dropout past 1", fit('--trainer.callbacks+={"class_path": "callbacks.BlockDropoutScheduler", '
                                          '"init_args": {"end": 1.5}}'), ["BlockDropoutScheduler", "end", "1.5"],
         {"mlflow.db"}),
    Case("fit: global block as long as the sample", fit("--data.init_args.global_tokens=2048"),
         ["global_tokens", "2048"], {"mlflow.db"}),
    Case("fit (fine-tuning): learning rate -1", ["fit", "--config", FULL, "--config", FINETUNE,
                                                 "--model.init_args.learning_rate=-1"], ["learning_rate"],
         {"mlflow.db"}),
    # evaluation commands
    Case("eval-lm: --models without =", ["eval-lm", "--models", "student"], ["--models", "NAME=PATH", "student"]),
    Case("eval-lm: a reserved text", ["eval-lm", "--texts", "{tmp}/r-cran-janeaustenr/emma.txt"],
         ["janeaustenr", "reserved for independent checks"]),
    Case("eval-lm: a missing model folder", ["eval-lm", "--models", "s={tmp}/gone/student"], ["gone/student"]),
    Case("eval-rag: --models without =", ["eval-rag", "--models", "student"], ["--models", "NAME=PATH"]),
    Case("eval-rag: the same name twice", ["eval-rag", "--models", "a={model}", "a={model}"], ["'a'", "twice"]),
    Case("eval-rag: a bad benchmark", ["eval-rag", "--tasks", "", "--benchmark", "hotpotqa"],
         ["--benchmark", "NAME=PATH"]),
    Case("eval-rag: zero store", ["eval-rag", "--store-gib", "0"], ["--store-gib", "0"]),
    # workflow
    Case("sweep: missing file", ["sweep", "{tmp}/nope.yaml"], ["nope.yaml"]),
    Case("sweep: unknown key", ["sweep", "{tmp}/sweep.yaml"], ["sweep.yaml", "surprise"]),
    Case("pipeline: unknown option", ["pipeline", "--nope", "1"], ["nope"]),
    Case("pipeline: missing profile", ["pipeline", "--config", "{tmp}/nope.yaml"], ["nope.yaml"]),
]


def snapshot(folder) -> dict[str, tuple[int, bytes]]:
    return {p.relative_to(folder).as_posix(): (p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_exits_2_naming_the_culprit_and_touches_nothing(case, tmp_path, monkeypatch, capsys,
                                                                  tiny_model_dir):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    make_inputs(tmp_path)
    before = snapshot(tmp_path)
    argv = [a.replace("{tmp}", str(tmp_path)).replace("{model}", str(tiny_model_dir)) for a in case.argv]
    assert main(argv) == 2  # returned, not raised: no traceback
    reported = [line for line in capsys.readouterr().err.splitlines() if line.startswith("lit-block ")]
    assert len(reported) == 1, reported
    message = reported[0]
    for fragment in case.culprit:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    after = snapshot(tmp_path)
    changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    touched = {k.split("/")[0] for k in changed}
    if "mlflow.db" in case.allowed:  # the tracking store and its lock file
        touched -= {"mlflow.db", "mlflow.db.lock"}
    assert touched <= case.allowed, changed


def test_debug_shows_the_traceback(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(DEBUG_ENV, "")  # --debug sets it in this process: restored to what it was afterwards
    (tmp_path / "doc.txt").write_text("some text")
    with pytest.raises(UsageError, match="threshold"):
        main(["segment", "doc.txt", "--method", "fixed", "--threshold", "2", "--debug"])


# ---------------------------------------------------------------- the Python API


@pytest.fixture(scope="module")
def tiny_lm():
    from lit_block.model import BlockAttentionLM

    torch.manual_seed(0)
    return BlockAttentionLM.from_pretrained(tiny_config(vocab_size=128), num_sink_tokens=1).eval()


@pytest.mark.parametrize("kwargs, culprit", [
    ({"max_new_tokens": 2.5}, "max_new_tokens"), ({"max_new_tokens": 0}, "max_new_tokens"),
    ({"temperature": 0.0}, "temperature"), ({"top_p": 1.5}, "top_p"), ({"top_k": -1}, "top_k"),
    ({"seed": -3}, "seed"), ({"stop": "\n"}, "stop"),
])
def test_generation_settings_are_checked(kwargs, culprit):
    from lit_block.serving import GenerationConfig

    with pytest.raises(UsageError, match=culprit):
        GenerationConfig(**kwargs)


@pytest.mark.parametrize("block, query, culprit", [
    ([5, 6, 128], [7], "token id 128"), ([5, 6], [-1], "token id -1"), ([[5, 6]], [7], "flat list"),
    ([5.0, 6.0], [7], "integer token ids"),
])
def test_generate_names_token_ids_outside_the_vocabulary(tiny_lm, block, query, culprit):
    from lit_block.serving import GenerationConfig, generate

    with pytest.raises(UsageError, match=culprit):
        generate(tiny_lm, [block], query, GenerationConfig(max_new_tokens=2))
