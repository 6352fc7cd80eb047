"""Plots of MLflow runs for ``lit-block compare``, readable without the code.

Axes are labelled from :data:`METRICS` and :data:`PARAMS` (what a logged key is, in which unit it is
logged, and whether lower or higher is better); a key not in them is shown by its last dotted part
with underscores as spaces. Swept values are plotted on numeric axes with ticks at the values
themselves (``64``, ``128``, ``256``; a log2 scale when they are powers of two). The per-category
segmentation scores are heatmaps (categories by levels, each cell annotated).

Each plot has a ``*_figure`` function that returns the matplotlib figure (for tests and notebooks)
and a ``plot_*`` function that saves it and returns the path.
"""

from __future__ import annotations

import math
import re
import textwrap
from numbers import Real
from pathlib import Path
from typing import NamedTuple

from lit_block.errors import UsageError

SEG_METRIC = re.compile(r"^(?P<method>[^.]+)\.(?P<level>coarse|middle|fine)\.(?P<category>.+)\.(?P<metric>pk|windowdiff)$")
LEVELS = ("coarse", "middle", "fine")  # the segmenter's levels, coarsest first (not alphabetical)
STAGES = {"train": "train", "val": "validation", "test": "test"}  # Lightning's metric prefixes
NATS = "nats/token"  # NLL and KL are natural-log means over the scored tokens

# Logged metric names (after a ``val/``-style stage prefix, or the last part of a dotted eval-* key):
# (what it is, unit as logged, which direction is better). Fractions are logged as 0..1, not percent.
METRICS: dict[str, tuple[str, str, str | None]] = {
    # block distillation (val/, test/), eval-lm (<model>.<name>), the pipeline (distilled.<name>): lit_block.quality
    "kl_gap_closed": ("KL gap closed", "fraction, 1 = full attention", "higher"),
    "kl_gap_closed_low": ("KL gap closed, 95% CI low", "fraction", "higher"),
    "kl_gap_closed_high": ("KL gap closed, 95% CI high", "fraction", "higher"),
    "own_gap_closed": ("own NLL gap closed", "fraction", "higher"),
    "nll_gap_closed_vs_teacher": ("NLL gap closed vs teacher", "fraction", "higher"),
    "gap_closed_vs_control": ("NLL gap closed vs full-attention control", "fraction", "higher"),
    "kl_teacher": ("KL to full-attention teacher", NATS, "lower"),
    "kl_teacher_block": ("KL, teacher block vs full attention", NATS, "lower"),
    "nll": ("NLL", NATS, "lower"),
    "nll_student": ("student NLL, block attention", NATS, "lower"),
    "nll_student_full": ("student NLL, full attention", NATS, "lower"),
    "nll_teacher_full": ("teacher NLL, full attention", NATS, "lower"),
    "nll_teacher_block": ("teacher NLL, block attention", NATS, "lower"),
    "nll_block": ("NLL, block attention", NATS, "lower"),
    "nll_full": ("NLL, full attention", NATS, "lower"),
    "nll_control_full": ("control NLL, full attention", NATS, "lower"),
    "nll_gap": ("NLL gap, block - full attention", NATS, "lower"),
    "block_gap": ("teacher NLL gap, block - full attention", NATS, "lower"),
    "student_gap": ("student block NLL - teacher full NLL", NATS, "lower"),
    "attention_cost": ("attention cost", "fraction of full attention's pairs", "lower"),
    "tokens": ("scored tokens", "count", None),
    # training
    "loss": ("loss", "", "lower"),
    "release_probability": ("block release probability", "probability", None),
    "grad_norm": ("gradient norm", "", None),
    "lr": ("learning rate", "", None),
    "step_time_s": ("step time", "s", "lower"),
    "tokens_per_s": ("throughput", "tokens/s", "higher"),
    # segmentation (val/pk_<level> of the segmenter's fit; <method>.<level>.<category>.<name> of eval-seg)
    "pk": ("Pk", "error probability", "lower"),
    "windowdiff": ("WindowDiff", "error fraction", "lower"),
    "f1": ("F1", "fraction", "higher"),  # boundary F1 (eval-seg) or token F1 of answers (eval-rag)
    "f1_tol": ("boundary F1 within tolerance", "fraction", "higher"),
    "length_error": ("block length error", "relative to target", "lower"),
    # eval-rag (<model>.<task>.<name>, <model>.ttft_ms)
    "exact_match": ("exact match", "fraction", "higher"),
    "substring": ("substring match", "fraction", "higher"),
    "count": ("samples", "count", None),
    "ttft_ms": ("median time to first token", "ms", "lower"),
    # bench ttft (ttft.<prompt tokens>.<name>)
    "full_ms": ("TTFT, full prefill", "ms", "lower"),
    "cold_ms": ("TTFT, block cache cold", "ms", "lower"),
    "warm_ms": ("TTFT, block cache warm", "ms", "lower"),
    "warm_eager_ms": ("TTFT, block cache warm, no CUDA graphs", "ms", "lower"),
    "warm_over_full": ("TTFT warm / full prefill", "ratio", "lower"),
    "store_mib": ("block KV store size", "MiB", None),
}
# Swept or logged parameters (full keys; ``sweep.`` is dropped first): (what it is, unit).
PARAMS: dict[str, tuple[str, str]] = {
    "data.init_args.granularity": ("target block size", "tokens"),  # level names read "segmenter level" (axis_label)
    "granularity": ("target block size", "tokens"),  # the same, as a run tag or eval-lm param
    "data.init_args.block_tokens": ("block size", "tokens"),
    "block-tokens": ("block size", "tokens"),  # bench ttft's flag
    "block_tokens": ("block size", "tokens"),
    "data.init_args.min_block_tokens": ("minimum block size", "tokens"),
    "data.init_args.max_block_tokens": ("maximum block size", "tokens"),
    "data.init_args.sample_tokens": ("sample length", "tokens"),
    "data.init_args.global_tokens": ("global block length", "tokens"),
    "data.init_args.max_documents": ("documents per split", "count"),
    "model.init_args.num_sink_tokens": ("sink tokens per block", "count"),
    "model.init_args.learning_rate": ("learning rate", ""),
    "model.init_args.sink_learning_rate": ("sink learning rate", ""),
    "model.init_args.temperature": ("distillation temperature", ""),
    "model.init_args.isolated_weight": ("isolated-block loss weight", ""),
    "model.init_args.lora_rank": ("LoRA rank", ""),
    "trainer.max_steps": ("training steps", "count"),
    "max-new-tokens": ("answer length limit", "tokens"),
    "query-tokens": ("query length", "tokens"),
}


class Label(NamedTuple):
    what: str  # "KL gap closed"
    unit: str  # "" when none
    better: str | None  # "lower", "higher" or None
    context: str  # where it was measured: "validation", "teacher full attention, all", ...

    def text(self, unit: bool = True) -> str:
        """``context: what (unit)``, the form used on axes."""
        name = f"{self.context}: {self.what}" if self.context else self.what
        return f"{name} ({self.unit})" if unit and self.unit else name


def readable(part: str) -> str:
    """A key part as words: ``teacher_full_attention`` -> ``teacher full attention``."""
    return part.replace("_", " ").replace("-", " ").strip()


def describe(key: str) -> Label:
    """What a metric, parameter or swept key is: from the tables, else its last dotted part made readable."""
    key = key.removeprefix("sweep.")
    if key in PARAMS:
        return Label(*PARAMS[key], None, "")
    stage, slash, name = key.partition("/")
    if slash and stage in STAGES:  # val/kl_gap_closed, val/pk_coarse, train/lr_1
        context = STAGES[stage]
        m = re.fullmatch(r"(pk|f1)_(\w+)|(lr)_(\d+)", name)
        if name in METRICS:
            return Label(*METRICS[name], context)
        if m and m[1]:  # the segmenter's validation scores per level
            return Label(*METRICS[m[1]], f"{context}, {m[2]} level")
        if m:
            return Label(*METRICS["lr"], f"{context}, parameter group {m[4]}")
        return Label(readable(name), "", None, context)
    parts = key.split(".")
    if parts[0] not in ("data", "model", "trainer") and len(parts) > 1 and parts[-1] in METRICS:
        if parts[0] == "ttft" and parts[1].isdigit():  # bench ttft: ttft.<prompt tokens>.<what>
            return Label(*METRICS[parts[-1]], f"{parts[1]}-token prompt")
        return Label(*METRICS[parts[-1]], ", ".join(readable(p) for p in parts[:-1]))
    if key in METRICS:
        return Label(*METRICS[key], "")
    return Label(readable(parts[-1]) or key, "", None, "")  # unknown: its last dotted part


def axis_label(key: str, values=()) -> str:
    """The label of an axis showing ``key``; granularity given as level names is the segmenter's level."""
    if key.removeprefix("sweep.").split(".")[-1] == "granularity" and values and \
            all(isinstance(v, str) and v in LEVELS for v in values):
        return "segmenter level (" + " / ".join(LEVELS) + ")"
    return describe(key).text()


def better_note(key: str) -> str:
    """``" (lower is better)"`` where the direction is known (or the name says gap, loss, NLL, ...), else ``""``."""
    better = describe(key).better
    if better is None and any(w in key.lower() for w in ("gap", "kl", "nll", "loss", "pk", "windowdiff", "_ms")):
        better = "lower" if "closed" not in key else "higher"  # unknown keys: the old name-based guess
    return f" ({better} is better)" if better else ""


def as_number(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


def label(value) -> str:
    """A value as a label: ``64`` rather than ``64.0``."""
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def value_of(run, key: str):
    """A run's value for a tag, param or metric name (tags first)."""
    for source in (run.data.tags, run.data.params, run.data.metrics):
        if key in source:
            return as_number(source[key])
    return None


def is_number(v) -> bool:
    return isinstance(v, Real) and not isinstance(v, bool)


def tick_text(v) -> str:
    """A tick or point label: ``64``, ``0.001``, ``coarse`` (never ``2^6`` or ``64.0``)."""
    return label(float(v)) if is_number(v) and float(v).is_integer() else f"{v:.3g}" if is_number(v) else str(v)


def _order(v):
    """Numbers first (ascending), then the segmenter's levels coarsest first, then other strings."""
    if is_number(v):
        return (0, float(v), "")
    return (1, LEVELS.index(v), "") if v in LEVELS else (2, 0.0, str(v))


def _sorted_xy(runs, x: str, y: str):
    pts = [(value_of(r, x), value_of(r, y)) for r in runs]
    pts = [(a, b) for a, b in pts if a is not None and is_number(b)]
    return sorted(pts, key=lambda p: _order(p[0]))


def describe_runs(runs) -> str:
    """Which runs a plot shows: ``sweep 'granularity', 4 runs``, ``run 'name'`` or ``4 runs``."""
    sweeps = {r.data.tags.get("lit_block.sweep") for r in runs}
    if len(runs) == 1:
        return f"run {runs[0].info.run_name!r}"
    if len(sweeps) == 1 and None not in sweeps:
        return f"sweep {sweeps.pop()!r}, {len(runs)} runs"
    return f"{len(runs)} runs"


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend (no display here)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def wrap(text: str, width: int) -> str:
    """Long labels on several lines, so that they fit their axis and do not run into the next panel."""
    return textwrap.fill(text, width, break_on_hyphens=False)


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=110, bbox_inches="tight")  # tight: long labels are not cut off
    pyplot().close(fig)
    return Path(path)


def set_value_axis(ax, values) -> None:
    """An x axis with a tick at each value, labelled as the value: numeric (log2 for powers of two) or categories."""
    from matplotlib.ticker import FixedFormatter, FixedLocator, NullLocator, ScalarFormatter

    xs = sorted(set(values), key=_order)
    if not all(is_number(v) for v in xs):
        return  # categories: plotted at 0..n-1 by the caller, labelled there
    if len(xs) > 1 and min(xs) > 0 and all(math.log2(v).is_integer() for v in xs):
        ax.set_xscale("log", base=2)  # equal steps for doubling block sizes
    elif len(xs) > 2 and min(xs) > 0 and max(xs) / min(xs) >= 100:
        ax.set_xscale("log")  # e.g. learning rates spanning decades
    if len(xs) <= 12:  # a tick at every value, read as the number itself (not 2^6, not 64.0)
        ax.xaxis.set_major_locator(FixedLocator([float(v) for v in xs]))
        ax.xaxis.set_major_formatter(FixedFormatter([tick_text(v) for v in xs]))
        ax.xaxis.set_minor_locator(NullLocator())  # log axes would add unlabelled or 2^k-labelled minor ticks
    elif ax.get_xscale() == "log":
        ax.xaxis.set_major_formatter(ScalarFormatter())  # many values: matplotlib's ticks, still as plain numbers


def _plot_against(ax, pts) -> None:
    """One line of (x, y) points: numeric x on a value axis, anything else as ordered categories."""
    xs = [a for a, _ in pts]
    if all(is_number(a) for a in xs):
        ax.plot([float(a) for a in xs], [b for _, b in pts], marker="o")
        set_value_axis(ax, xs)
    else:
        ax.plot(range(len(xs)), [b for _, b in pts], marker="o")
        ax.set_xticks(range(len(xs)), [tick_text(a) for a in xs])


def metrics_figure(runs, x: str, metrics: list[str]):
    """Each metric against swept key ``x``, one panel per metric (up to 3 a row)."""
    plt = pyplot()
    cols = min(3, len(metrics))
    rows = math.ceil(len(metrics) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.6 * rows), squeeze=False)
    xs = [value_of(r, x) for r in runs if value_of(r, x) is not None]
    for ax, metric in zip(axes.flat, metrics):
        pts = _sorted_xy(runs, x, metric)
        _plot_against(ax, pts)
        if not pts:
            ax.text(0.5, 0.5, "no run has this metric", ha="center", va="center", transform=ax.transAxes)
        ax.set_xlabel(wrap(axis_label(x, xs), 50))
        ax.set_ylabel(wrap(describe(metric).text(), 40), fontsize=9)
        ax.set_title(wrap(describe(metric).text(unit=False) + better_note(metric), 50), fontsize=9)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(metrics):]:
        ax.set_visible(False)  # the empty panels of the last row
    fig.suptitle(f"{describe_runs(runs)}: metrics against {axis_label(x, xs)}", fontsize=10)
    fig.tight_layout()
    return fig


def plot_metrics(runs, x: str, metrics: list[str], path: Path) -> Path:
    return _save(metrics_figure(runs, x, metrics), path)


def tradeoff_figure(runs, cost: str, quality: str, label_key: str):
    """Quality against cost, one point per run, labelled by its ``label_key`` value (else its run name)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    for r in runs:
        c, q = value_of(r, cost), value_of(r, quality)
        if is_number(c) and is_number(q):
            ax.scatter(c, q, color="tab:blue")
            v = value_of(r, label_key)
            ax.annotate(r.info.run_name if v is None else tick_text(v), (c, q), textcoords="offset points",
                        xytext=(4, 4), fontsize=8)
    ax.set_xlabel(wrap(describe(cost).text() + better_note(cost), 75))
    ax.set_ylabel(wrap(describe(quality).text() + better_note(quality), 45))
    ax.grid(alpha=0.3)
    by = "run name" if label_key == "run" else axis_label(label_key, [value_of(r, label_key) for r in runs])
    ax.set_title(wrap(f"{describe(quality).text(unit=False)} vs {describe(cost).text(unit=False)}", 80) + "\n"
                 + wrap(f"{describe_runs(runs)}; points labelled by {by}", 80), fontsize=9)
    fig.tight_layout()
    return fig


def plot_tradeoff(runs, cost: str, quality: str, label_key: str, path: Path) -> Path:
    return _save(tradeoff_figure(runs, cost, quality, label_key), path)


def segmentation_scores(run, method: str | None):
    """``(method, {metric: {(category, level): value}})`` from an ``eval-seg`` run's metrics.

    ``method`` defaults to the trained segmenter where the run has it, else the first method by name."""
    found: dict[str, dict[str, dict[tuple[str, str], float]]] = {}
    for key, value in run.data.metrics.items():
        m = SEG_METRIC.match(key)
        if m:
            found.setdefault(m["method"], {}).setdefault(m["metric"], {})[(m["category"], m["level"])] = value
    if not found:
        raise UsageError(f"run {run.info.run_name!r} has no eval-seg scores (<method>.<level>.<category>.pk)")
    method = method or ("segmenter" if "segmenter" in found else sorted(found)[0])
    if method not in found:
        raise UsageError(f"--method {method!r}: run {run.info.run_name!r} has scores of {', '.join(sorted(found))}")
    return method, found[method]


def draw_heatmap(fig, ax, grid, rows: list[str], columns: list[str], colorbar_label: str) -> None:
    """``grid`` [rows, columns] as coloured cells, each annotated with its value (NaN: a grey "–"); a row named
    ``all`` (the overall score), when last, is set apart by a line."""
    import numpy as np

    plt = pyplot()
    cmap = plt.get_cmap("YlOrRd").with_extremes(bad="0.9")  # missing cells grey
    finite = grid[np.isfinite(grid)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    image = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, vmin=lo, vmax=hi if hi > lo else lo + 1e-9, aspect="auto")
    for i, j in np.ndindex(grid.shape):
        v = grid[i, j]
        dark = np.isfinite(v) and hi > lo and (v - lo) / (hi - lo) > 0.6  # white text on the darkest cells
        ax.text(j, i, "–" if np.isnan(v) else f"{v:.3f}", ha="center", va="center", fontsize=8,
                color="white" if dark else "black")
    ax.set_xticks(range(len(columns)), columns)
    ax.set_yticks(range(len(rows)), rows)
    if rows and rows[-1] == "all" and len(rows) > 1:
        ax.axhline(len(rows) - 1.5, color="black", linewidth=1.5)  # sets the overall row apart
    fig.colorbar(image, ax=ax, fraction=0.08, pad=0.03).set_label(colorbar_label, fontsize=8)


def segmentation_figure(run, method: str | None):
    """Pk and WindowDiff of one method as heatmaps: categories as rows (``all`` last), levels as columns."""
    import numpy as np

    plt = pyplot()
    method, scores = segmentation_scores(run, method)
    cells = {k for values in scores.values() for k in values}
    categories = sorted({c for c, _ in cells}, key=lambda c: (c == "all", c))  # the overall score last
    levels = [lv for lv in LEVELS if any(lv == level for _, level in cells)]
    fig, axes = plt.subplots(1, 2, figsize=(4.2 + 1.3 * len(levels) * 2, 1.6 + 0.36 * len(categories)), squeeze=False)
    for ax, metric in zip(axes[0], ("pk", "windowdiff")):
        grid = np.array([[scores.get(metric, {}).get((c, lv), np.nan) for lv in levels] for c in categories])
        what, unit, better, _ = describe(metric)
        draw_heatmap(fig, ax, grid, [readable(c) for c in categories], levels, f"{what} ({unit})")  # eval-seg logs spaces as _
        ax.set_xlabel("segmenter level")
        ax.set_title(f"{what} ({better} is better)", fontsize=9)
    axes[0][0].set_ylabel("document category")
    fig.suptitle(f"Segmentation error per category and level: method {method!r}, "
                 f"eval-seg run {run.info.run_name!r} ({run.info.run_id[:8]})", fontsize=10)
    fig.tight_layout()
    return fig


def plot_segmentation(run, method: str | None, path: Path) -> Path:
    """Pk and WindowDiff per category and level, from one ``eval-seg`` run's metrics, as heatmaps."""
    return _save(segmentation_figure(run, method), path)
