"""``lit-block compare``: MLflow runs side by side, as a table and plots.

    lit-block compare --experiment sweeps --sweep granularity           # a sweep's child runs
    lit-block compare --experiment block-distillation --filter "tags.variant = 'full'" --metrics val/gap_recovered
    lit-block compare --experiment eval-seg --segmentation              # Pk / WindowDiff per category and level

Runs are selected by experiment, then by a sweep's parent run (``--parent RUN_ID`` or ``--sweep
NAME``, its latest), ``--tags key=value`` and an MLflow ``--filter`` string. The table has the
swept values (``sweep.*`` tags), chosen ``--params`` and ``--metrics``. Plots, saved under
``--output`` and logged as artifacts (to the sweep's parent run, else to a new ``compare`` run):

* ``metrics_vs_<x>.png``: each metric against ``--x`` (default: the first swept key);
* ``tradeoff.png``: a quality metric against a cost metric, one labelled point per run
  (``--quality``/``--cost``; by default the block-attention NLL gap against the attention work);
* ``segmentation_by_category.png``: Pk and WindowDiff per category across levels, from
  ``lit-block eval-seg`` runs (``--segmentation``).
"""

from __future__ import annotations

import sys
from pathlib import Path

from lit_block.errors import UsageError, one_line
from lit_block.plots import SEG_METRIC, label, plot_metrics, plot_segmentation, plot_tradeoff, value_of

COST_DEFAULTS = ("val/attention_cost", "test/attention_cost")
QUALITY_DEFAULTS = ("val/block_gap", "test/block_gap", "val/nll_gap", "test/nll_gap")


def select_runs(client, experiment: str, parent: str | None, sweep: str | None, tags: list[str], filter_string: str,
                finished_only: bool = True):
    """The runs to compare (finished ones unless told otherwise), and the parent run id they hang from (if any)."""
    from mlflow.exceptions import MlflowException

    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise ValueError(f"no MLflow experiment named {experiment!r} in this tracking store")
    if filter_string:  # checked alone (one run asked for), so that its error names it and not our clauses
        try:
            client.search_runs([exp.experiment_id], filter_string=filter_string, max_results=1)
        except MlflowException as err:
            raise UsageError(f"--filter {filter_string!r} is not a valid MLflow filter: {one_line(err)}") from err
    clauses = [filter_string] if filter_string else []
    if finished_only:
        clauses.append("attributes.status = 'FINISHED'")
    if sweep and not parent:
        parents = client.search_runs([exp.experiment_id], filter_string=f"tags.`lit_block.sweep` = '{sweep}' and "
                                     "tags.`lit_block.subcommand` = 'sweep'", order_by=["attributes.start_time DESC"])
        if not parents:
            raise ValueError(f"no sweep named {sweep!r} in experiment {experiment!r}")
        parent = parents[0].info.run_id
    if parent:
        clauses.append(f"tags.`mlflow.parentRunId` = '{parent}'")
    for item in tags:
        if "=" not in item:
            raise ValueError(f"--tags takes KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        clauses.append(f"tags.`{key}` = '{value}'")
    runs = client.search_runs([exp.experiment_id], filter_string=" and ".join(clauses), order_by=["attributes.start_time ASC"])
    return [r for r in runs if r.data.tags.get("lit_block.subcommand") not in ("sweep", "compare")], parent


def swept_keys(runs) -> list[str]:
    keys = {k for r in runs for k in r.data.tags if k.startswith("sweep.") and k != "sweep.point"}
    return sorted(keys)


def table(runs, columns: list[str]) -> str:
    lines = ["| run | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for r in runs:
        cells = []
        for c in columns:
            v = value_of(r, c)
            cells.append("-" if v is None else label(v) if c.startswith("sweep.") else f"{v:.4g}" if isinstance(v, float)
                         else str(v))
        lines.append(f"| {r.info.run_name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def build_parser():
    from lit_block.command_line import command_parser

    p = command_parser("lit-block compare", __doc__)
    p.add_argument("--experiment", required=True, help="the MLflow experiment whose runs are compared")
    p.add_argument("--parent", help="a sweep's parent run id")
    p.add_argument("--sweep", help="a sweep's name (its latest parent run)")
    p.add_argument("--tags", nargs="*", default=[], help="KEY=VALUE tag filters")
    p.add_argument("--filter", default="", help="an MLflow filter string, e.g. \"metrics.`val/nll_student` < 2.5\"")
    p.add_argument("--all-statuses", action="store_true", help="also failed, killed and running runs")
    p.add_argument("--params", nargs="*", default=[], help="parameters shown as columns (besides the swept ones)")
    p.add_argument("--metrics", nargs="*", default=None, help="default: up to 6 metrics every run has")
    p.add_argument("--x", default=None, help="x axis of metrics_vs_<x>.png (default: the first swept key)")
    p.add_argument("--cost", default=None, help="cost metric of tradeoff.png")
    p.add_argument("--quality", default=None, help="quality metric of tradeoff.png")
    p.add_argument("--segmentation", action="store_true", help="plot an eval-seg run's per-category scores")
    p.add_argument("--method", default=None, help="segmentation method for --segmentation (default: segmenter)")
    p.add_argument("--output", default=None, help="folder for table.md and the plots (default: compare/<name>)")
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    import mlflow

    from lit_block.tracking import tracking_uri

    client = mlflow.MlflowClient(tracking_uri=tracking_uri(create=False))  # never an empty database where none was
    try:
        runs, parent = select_runs(client, args.experiment, args.parent, args.sweep, args.tags, args.filter,
                                   finished_only=not args.all_statuses)
    except ValueError as err:
        print(f"lit-block compare: {err}", file=sys.stderr)
        return 2
    if not runs:
        print("lit-block compare: no runs match", file=sys.stderr)
        return 2
    keys = swept_keys(runs)
    runs.sort(key=lambda r: [(isinstance(value_of(r, k), str), value_of(r, k) or 0) for k in keys])
    common = set.intersection(*(set(r.data.metrics) for r in runs))
    metrics = args.metrics if args.metrics is not None else sorted(common)[:6]
    text = table(runs, keys + args.params + metrics)
    print(f"{len(runs)} runs in experiment {args.experiment!r}\n\n{text}")
    out = Path(args.output or Path("compare") / (args.sweep or parent or args.experiment))
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(text + "\n")
    files = [out / "table.md"]
    x = args.x or (keys[0] if keys else None)
    if x and metrics:
        files.append(plot_metrics(runs, x, metrics, out / f"metrics_vs_{x.removeprefix('sweep.').replace('.', '_')}.png"))
    cost = args.cost or next((c for c in COST_DEFAULTS if c in common), None)
    quality = args.quality or next((q for q in QUALITY_DEFAULTS if q in common), None)
    if cost and quality:
        files.append(plot_tradeoff(runs, cost, quality, x or "run", out / "tradeoff.png"))
    if args.segmentation:
        scored = [r for r in runs if any(SEG_METRIC.match(k) for k in r.data.metrics)]
        if not scored:
            print("lit-block compare: --segmentation: no selected run has eval-seg scores", file=sys.stderr)
            return 2
        files.append(plot_segmentation(scored[-1], args.method, out / "segmentation_by_category.png"))
    target = parent or client.create_run(client.get_experiment_by_name(args.experiment).experiment_id,
                                         run_name="compare", tags={"lit_block.subcommand": "compare"}).info.run_id
    for f in files:
        client.log_artifact(target, str(f), "compare")
    if not parent:
        client.set_terminated(target)
    print(f"\nwrote {', '.join(str(f) for f in files)}; logged to run {target} (artifacts/compare)")
    return 0
