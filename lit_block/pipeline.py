"""``lit-block pipeline``: the whole workflow on the embedded defaults, in one command.

    lit-block pipeline                                            # CPU budgets (experiments/pipeline/cpu.yaml)
    lit-block pipeline --config experiments/pipeline/gpu.yaml     # the same stages with GPU budgets
    lit-block pipeline --distill-steps 200 --workdir pipeline-200  # any profile value, as an option

1. corpus      ``lit-block data build`` (an existing corpus folder is reused)
2. segmenter   a brief training of the segmenter on the corpus
3. distill     SmolLM2-135M block distillation, context cut by the trained segmenter; the student
               is exported by ``callbacks.StudentExporter``
4. evaluate    ``lit-block eval-lm``: teacher with full attention, teacher under block attention
               (untrained) and the distilled student, on held-out samples
5. sweep       a small granularity sweep (block-attention NLL gap and attention work per block size)
6. compare     ``lit-block compare`` on the sweep: table and plots

Every stage is the framework's own command with generated overlay configs (written under
``<workdir>/configs`` so a run can be repeated by hand) and logs to MLflow. A stage whose output
exists is skipped when the pipeline runs again (``--force`` redoes everything); the sweep resumes.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path

import yaml


TAGS_ENV = "LIT_BLOCK_MLFLOW_TAGS"  # lit_block.tracking.sweep_context: tags every run of this process gets
DEFAULT_PROFILE = Path(__file__).resolve().parents[1] / "experiments" / "pipeline" / "cpu.yaml"


def _option(default, help_: str):
    """A profile value with its command-line help (``lit-block pipeline --help`` shows both)."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help_})
    return field(default=default, metadata={"help": help_})


@dataclass
class PipelineConfig:
    """A pipeline profile (experiments/pipeline/*.yaml): every stage's budget. Defaults: cpu.yaml's."""

    workdir: str = _option("pipeline", "folder for checkpoints, exports, generated configs, tables and plots")
    dataset: str = _option("data/semanticseg", "corpus folder (built by stage 1 if missing)")
    teacher: str = _option("smollm2-135m", "full-attention teacher: an embedded name, a folder or a hub id")
    accelerator: str = _option("cpu", "Lightning accelerator of the training stages (cpu, gpu, auto)")
    segmenter_documents: int = _option(100, "documents per split for the segmenter")
    segmenter_epochs: int = _option(2, "segmenter training epochs")
    segmenter_layers: int = _option(2, "layers of the frozen sentence encoder the segmenter uses")
    granularity: str = _option("middle", "the segmenter level that cuts the distillation context")
    sample_tokens: int = _option(512, "tokens per distillation sample, global block included")
    global_tokens: int = _option(128, "tokens of each sample's global block")
    min_block_tokens: int = _option(32, "smallest context block (tokens)")
    max_block_tokens: int = _option(256, "largest context block (tokens)")
    distill_documents: int = _option(60, "documents per split for distillation and evaluation")
    distill_steps: int = _option(60, "distillation optimizer steps")
    distill_configs: list = _option(["experiments/distill/plain.yaml"],
                                    "overlays stacked on experiments/distill/full.yaml ([] for the full method)")
    batch_size: int = _option(1, "distillation samples per step")
    learning_rate: float = _option(5.0e-5, "distillation learning rate")
    val_batches: int = _option(8, "validation batches after distillation")
    eval_samples: int = _option(16, "held-out samples scored by eval-lm")
    sweep_granularities: list = _option([64, 128, 256], "block sizes (tokens) of the granularity sweep")
    sweep_batches: int = _option(4, "validation batches per sweep point")
    sweep_parallel: int = _option(1, "sweep points at a time")


PIPELINE_TAG = "lit_block.pipeline"  # on every stage's run: the pipeline run it belongs to


@contextmanager
def pipeline_run(cfg: PipelineConfig) -> Iterator[str]:
    """One MLflow run (experiment ``pipeline``) for the whole workflow; every stage's run, in whatever
    experiment, carries its id in the tag ``lit_block.pipeline`` (filter: ``tags.`lit_block.pipeline` = 'ID'``).
    It ends FINISHED, FAILED, or KILLED on Ctrl-C."""
    import mlflow

    from lit_block.tracking import default_artifact_location, get_or_create_experiment, process_tags, tracking_uri

    uri = tracking_uri()
    client = mlflow.MlflowClient(uri)
    experiment = get_or_create_experiment(client, "pipeline", default_artifact_location(uri))
    run_id = client.create_run(experiment, run_name=f"pipeline-{time.strftime('%Y%m%d-%H%M%S')}",
                               tags={"lit_block.subcommand": "pipeline", **process_tags()}).info.run_id
    client.log_dict(run_id, asdict(cfg), "pipeline.json")
    previous = os.environ.get(TAGS_ENV)
    inherited = json.loads(previous) if previous else {}
    os.environ[TAGS_ENV] = json.dumps({**inherited, PIPELINE_TAG: run_id})  # read by every stage's run
    status = "FAILED"
    try:
        yield run_id
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        if previous is None:
            os.environ.pop(TAGS_ENV, None)
        else:
            os.environ[TAGS_ENV] = previous
        client.set_terminated(run_id, status)


def stage(index: int, name: str, what: str) -> None:
    print(f"\n=== [{index}/6] {name}: {what}", flush=True)


def write_yaml(path: Path, content: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(content, sort_keys=False))
    return path


def run(argv: list[str]) -> None:
    """One lit-block subcommand in this process; a failure stops the pipeline with its name."""
    from lit_block.cli import main

    print("$ lit-block " + " ".join(argv), flush=True)
    code = main(argv)
    if code:
        raise RuntimeError(f"lit-block {argv[0]} exited with {code}")


def segmenter_stage(cfg: PipelineConfig, root: Path, repo: Path, force: bool) -> Path:
    ckpt = root / "checkpoints" / "segmenter.ckpt"
    if ckpt.is_file() and not force:
        print(f"reusing {ckpt}")
        return ckpt
    overlay = write_yaml(root / "configs" / "segmenter.yaml", {
        "model": {"init_args": {"encoder_layers": cfg.segmenter_layers}},
        "data": {"init_args": {"dataset_path": cfg.dataset, "max_documents": cfg.segmenter_documents}},
        "trainer": {"max_epochs": cfg.segmenter_epochs, "accelerator": cfg.accelerator, "callbacks": [{
            "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
            "init_args": {"dirpath": str(ckpt.parent), "filename": "segmenter", "monitor": "val/loss", "mode": "min",
                          "enable_version_counter": False}}]},
    })
    run(["fit", f"--config={repo / 'experiments/segmenter/segmenter.yaml'}", f"--config={overlay}"])
    return ckpt


def distill_overlay(cfg: PipelineConfig, root: Path, ckpt: Path) -> Path:
    return write_yaml(root / "configs" / "distill.yaml", {
        "model": {"init_args": {"teacher": cfg.teacher, "learning_rate": cfg.learning_rate}},
        "data": {"init_args": {"dataset_path": cfg.dataset, "method": "segmenter", "checkpoint": str(ckpt),
                               "granularity": cfg.granularity, "min_block_tokens": cfg.min_block_tokens,
                               "max_block_tokens": cfg.max_block_tokens, "sample_tokens": cfg.sample_tokens,
                               "global_tokens": cfg.global_tokens, "max_documents": cfg.distill_documents,
                               "batch_size": cfg.batch_size}},
        "trainer": {"max_steps": cfg.distill_steps, "val_check_interval": cfg.distill_steps,
                    "limit_val_batches": cfg.val_batches, "accelerator": cfg.accelerator, "enable_checkpointing": False},
    })


def distill_stage(cfg: PipelineConfig, root: Path, repo: Path, ckpt: Path, force: bool) -> Path:
    student = root / "exports" / "distilled"
    if (student / "config.json").is_file() and not force:
        print(f"reusing {student}")
        return student
    configs = [repo / "experiments/distill/full.yaml", *(repo / c for c in cfg.distill_configs), distill_overlay(cfg, root, ckpt)]
    exporter = json.dumps({"class_path": "callbacks.StudentExporter", "init_args": {"dirpath": str(student)}})
    run(["fit", *(f"--config={c}" for c in configs), f"--trainer.callbacks+={exporter}"])
    return student


def evaluate_stage(cfg: PipelineConfig, root: Path, ckpt: Path, student: Path, force: bool) -> tuple[str, dict]:
    out = root / "eval_lm.md"
    figures = root / "eval_lm.json"
    if out.is_file() and figures.is_file() and not force:
        return out.read_text(), json.loads(figures.read_text())
    from lit_block import evaluation_lm

    argv = ["--teacher", cfg.teacher, "--models", f"distilled={student}", "--dataset", cfg.dataset, "--split", "validation",
            "--method", "segmenter", "--checkpoint", str(ckpt), "--granularity", cfg.granularity,
            "--min-block-tokens", str(cfg.min_block_tokens), "--max-block-tokens", str(cfg.max_block_tokens),
            "--sample-tokens", str(cfg.sample_tokens), "--global-tokens", str(cfg.global_tokens),
            "--max-documents", str(cfg.distill_documents), "--max-samples", str(cfg.eval_samples)]
    print("$ lit-block eval-lm " + " ".join(argv), flush=True)
    table, results = evaluation_lm.run(argv)
    out.write_text(table + "\n")
    figures.write_text(json.dumps(results, indent=1))
    return table, results


def verdict(student: dict, steps: int) -> str:
    """One sentence on what the distilled student's KL gap closed shows (the interval decides, not the point)."""
    closed, low, high = (student.get(k, float("nan")) for k in ("kl_gap_closed", "kl_gap_closed_low", "kl_gap_closed_high"))
    figure = f"KL gap closed {100 * closed:.1f}% (95% interval {100 * low:.1f}% to {100 * high:.1f}%)"
    if low == low and low > 0:
        return (f"{figure}: the student recovered part of what block attention costs, on held-out samples of the "
                "corpus's own kinds of text; the GPU recipe (scripts/distill_recipe.py; README, 'Results') scores text "
                "families the corpus does not contain.")
    return (f"{figure}: after {steps} CPU steps the student is not distinguishable from the untrained model under "
            "block attention. This budget shows that the workflow runs, not that the method works: the GPU recipe "
            "(scripts/distill_recipe.py; README, 'The GPU recipe' and 'Results') does that.")


def sweep_stage(cfg: PipelineConfig, root: Path, repo: Path) -> str:
    from lit_block.sweep import load_spec, run_sweep

    spec_path = write_yaml(root / "configs" / "sweep_granularity.yaml", {
        "name": "pipeline-granularity", "experiment": "sweeps",
        "command": ["validate", "--config", str(repo / "experiments/distill/full.yaml"), "--config",
                    str(repo / "experiments/distill/references.yaml"), f"--model.init_args.teacher={cfg.teacher}",
                    f"--data.init_args.dataset_path={cfg.dataset}", f"--data.init_args.sample_tokens={cfg.sample_tokens}",
                    f"--data.init_args.global_tokens={cfg.global_tokens}", "--data.init_args.min_block_tokens=16",
                    "--data.init_args.max_block_tokens=4096", f"--data.init_args.max_documents={cfg.distill_documents}",
                    f"--trainer.limit_val_batches={cfg.sweep_batches}", f"--trainer.accelerator={cfg.accelerator}"],
        "grid": {"data.init_args.granularity": list(cfg.sweep_granularities)},
        "parallel": cfg.sweep_parallel,
    })
    parent, ok = run_sweep(load_spec(spec_path), log_root=str(root / "sweeps"))
    if not ok:
        raise RuntimeError(f"the granularity sweep had failed points; logs in {root / 'sweeps'}")
    return parent


def run_stages(cfg: PipelineConfig, root: Path, repo: Path, force: bool) -> tuple[str, dict]:
    """The six stages; returns the evaluation's table and figures."""
    stage(1, "corpus", cfg.dataset)
    if Path(cfg.dataset).is_dir() and not force:
        print(f"reusing {cfg.dataset}")
    else:
        run(["data", "build", "--output", cfg.dataset])
    stage(2, "segmenter", f"{cfg.segmenter_epochs} epochs over {cfg.segmenter_documents} documents per split")
    ckpt = segmenter_stage(cfg, root, repo, force)
    variant = " + ".join(Path(c).stem for c in cfg.distill_configs) or "full method"
    stage(3, "distill", f"{cfg.teacher} ({variant}), {cfg.distill_steps} steps of {cfg.batch_size} x {cfg.sample_tokens} tokens")
    student = distill_stage(cfg, root, repo, ckpt, force)
    stage(4, "evaluate", f"{cfg.eval_samples} held-out samples")
    table, results = evaluate_stage(cfg, root, ckpt, student, force)
    stage(5, "sweep", f"granularity {cfg.sweep_granularities}")
    parent = sweep_stage(cfg, root, repo)
    stage(6, "compare", "the sweep's table and plots")
    run(["compare", "--experiment", "sweeps", "--parent", parent, "--metrics", "val/block_gap", "val/attention_cost",
         "--output", str(root / "compare")])
    return table, results


def build_parser():
    from typing import get_type_hints

    from lit_block.command_line import command_parser

    p = command_parser("lit-block pipeline", __doc__, default_config_files=[str(DEFAULT_PROFILE)])
    p.add_argument("--force", action="store_true", help="redo stages whose outputs exist")
    types = get_type_hints(PipelineConfig)
    for f in fields(PipelineConfig):  # one option per profile value: --distill-steps 5, or distill_steps: 5 in YAML
        default = f.default_factory() if f.default_factory is not MISSING else f.default
        p.add_argument("--" + f.name.replace("_", "-"), type=types[f.name], default=default, help=f.metadata["help"])
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    cfg = PipelineConfig(**{f.name: args[f.name] for f in fields(PipelineConfig)})
    repo, root, start = Path(__file__).resolve().parents[1], Path(cfg.workdir), time.monotonic()
    root.mkdir(parents=True, exist_ok=True)
    (root / "pipeline.json").write_text(json.dumps(asdict(cfg), indent=1))

    with pipeline_run(cfg) as run_id:
        table, results = run_stages(cfg, root, repo, args.force)
        import mlflow

        from lit_block.tracking import default_tracking_uri

        client = mlflow.MlflowClient(default_tracking_uri())
        client.log_text(run_id, table, "eval_lm.md")
        for key, value in results["distilled"].items():
            if isinstance(value, float) and value == value:  # the student's figures; nan ones are not logged
                client.log_metric(run_id, f"distilled.{key}", value)
    print(f"\n=== done in {(time.monotonic() - start) / 60:.1f} min\n\nDistillation (held-out samples):\n\n{table}\n")
    print(verdict(results["distilled"], cfg.distill_steps) + "\n")
    print(f"Granularity sweep: {root / 'compare' / 'table.md'}; plots in {root / 'compare'}")
    print(f"MLflow: mlflow ui --backend-store-uri {default_tracking_uri()}  (pipeline run {run_id}; its stages' runs: "
          f"filter tags.`{PIPELINE_TAG}` = '{run_id}')")
    return 0
