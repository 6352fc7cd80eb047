"""lit_block.plots: axis labels with units, block sizes as plain numbers, the per-category heatmap, files written."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from lit_block import plots
from lit_block.errors import UsageError


def fake_run(name: str, tags=None, params=None, metrics=None, run_id: str = "0123456789abcdef"):
    """The parts of an ``mlflow.entities.Run`` the plots read."""
    return SimpleNamespace(info=SimpleNamespace(run_name=name, run_id=run_id),
                           data=SimpleNamespace(tags=tags or {}, params=params or {}, metrics=metrics or {}))


def granularity_sweep(values=(64, 128, 256), key="data.init_args.granularity"):
    """Child runs of a sweep over ``key`` as ``lit-block sweep`` tags them (values as strings)."""
    return [fake_run(f"granularity: {v}", tags={"lit_block.sweep": "granularity", f"sweep.{key}": str(v)},
                     metrics={"val/block_gap": 0.5 / i, "val/attention_cost": 0.1 * i, "val/kl_gap_closed": 0.2 * i})
            for i, v in enumerate(values, start=1)]


def drawn(fig):
    fig.canvas.draw()  # tick labels are only final after a draw
    return fig


def tick_texts(ax, axis="x"):
    labels = ax.get_xticklabels() if axis == "x" else ax.get_yticklabels()
    return [t.get_text() for t in labels]


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plots.pyplot().close("all")


def test_known_keys_are_labelled_with_their_units():
    assert plots.axis_label("sweep.data.init_args.granularity") == "target block size (tokens)"
    assert plots.axis_label("model.init_args.num_sink_tokens") == "sink tokens per block (count)"
    assert plots.axis_label("val/block_gap") == "validation: teacher NLL gap, block - full attention (nats/token)"
    assert plots.axis_label("val/kl_gap_closed") == "validation: KL gap closed (fraction, 1 = full attention)"
    assert plots.axis_label("test/attention_cost") == "test: attention cost (fraction of full attention's pairs)"
    assert plots.axis_label("val/pk_coarse") == "validation, coarse level: Pk (error probability)"
    assert plots.axis_label("teacher_full_attention.ttft_ms") == "teacher full attention: median time to first token (ms)"
    assert plots.axis_label("ttft.2048.warm_over_full") == "2048-token prompt: TTFT warm / full prefill (ratio)"
    assert plots.axis_label("segmenter.fine.legal_text.windowdiff") == \
        "segmenter, fine, legal text: WindowDiff (error fraction)"
    assert plots.axis_label("train/tokens_per_s") == "train: throughput (tokens/s)"


def test_granularity_as_levels_reads_as_the_segmenters_level():
    assert plots.axis_label("sweep.data.init_args.granularity", ["coarse", "fine"]).startswith("segmenter level")
    assert plots.axis_label("sweep.data.init_args.granularity", [64.0, 128.0]) == "target block size (tokens)"


def test_unknown_keys_get_readable_labels():
    assert plots.axis_label("sweep.model.init_args.some_new_knob") == "some new knob"
    assert plots.axis_label("data.init_args.max_doc-len") == "max doc len"
    assert plots.axis_label("val/my_metric") == "validation: my metric"
    assert plots.axis_label("plain_key") == "plain key"
    assert "init_args" not in plots.axis_label("model.init_args.zeta") and "." not in plots.axis_label("a.b.c_d")


def test_direction_notes_come_from_the_table_or_the_name():
    assert plots.better_note("val/kl_gap_closed") == " (higher is better)"
    assert plots.better_note("val/block_gap") == " (lower is better)"
    assert plots.better_note("custom_gap_closed") == " (higher is better)"  # unknown: guessed from the name
    assert plots.better_note("val/my_metric") == ""


def test_block_size_axis_ticks_read_64_128_256():
    fig = drawn(plots.metrics_figure(granularity_sweep(), "sweep.data.init_args.granularity",
                                     ["val/block_gap", "val/attention_cost"]))
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == 2
    for ax in axes:
        assert ax.get_xscale() == "log"  # powers of two: equal steps per doubling
        assert tick_texts(ax) == ["64", "128", "256"]
        assert [t.get_text() for t in ax.get_xticklabels(minor=True)] == []  # no 2^k minor labels
        assert ax.get_xlabel() == "target block size (tokens)"
    assert axes[0].get_ylabel().endswith("(nats/token)")
    assert " ".join(axes[0].get_title().split()) == "validation: teacher NLL gap, block - full attention (lower is better)"
    assert fig._suptitle.get_text().startswith("sweep 'granularity', 3 runs")
    line = axes[0].get_lines()[0]
    assert list(line.get_xdata()) == [64.0, 128.0, 256.0]  # plotted at the values, sorted
    assert list(line.get_ydata()) == pytest.approx([0.5, 0.25, 0.5 / 3])


def test_other_numeric_axes_are_linear_with_a_tick_per_value():
    runs = granularity_sweep((0, 1, 2, 4), key="model.init_args.num_sink_tokens")
    (ax, *_) = drawn(plots.metrics_figure(runs, "sweep.model.init_args.num_sink_tokens", ["val/kl_gap_closed"])).axes
    assert ax.get_xscale() == "linear" and tick_texts(ax) == ["0", "1", "2", "4"]
    assert ax.get_xlabel() == "sink tokens per block (count)"


def test_levels_are_categories_coarsest_first():
    runs = granularity_sweep(("fine", "coarse", "middle"))
    (ax, *_) = drawn(plots.metrics_figure(runs, "sweep.data.init_args.granularity", ["val/block_gap"])).axes
    assert tick_texts(ax) == ["coarse", "middle", "fine"]  # not alphabetical
    assert list(ax.get_lines()[0].get_ydata()) == pytest.approx([0.25, 0.5 / 3, 0.5])
    assert ax.get_xlabel().startswith("segmenter level")


def test_many_metrics_wrap_into_rows():
    runs = granularity_sweep()
    fig = plots.metrics_figure(runs, "sweep.data.init_args.granularity",
                               ["val/block_gap", "val/attention_cost", "val/kl_gap_closed", "val/block_gap"])
    assert len(fig.axes) == 6 and sum(ax.get_visible() for ax in fig.axes) == 4  # 2 rows of 3, two hidden


def test_tradeoff_labels_axes_and_points_by_block_size():
    fig = drawn(plots.tradeoff_figure(granularity_sweep(), "val/attention_cost", "val/block_gap",
                                      "sweep.data.init_args.granularity"))
    (ax,) = fig.axes
    def one_line(text):  # long labels are wrapped onto several lines
        return " ".join(text.split())

    assert one_line(ax.get_xlabel()) == "validation: attention cost (fraction of full attention's pairs) (lower is better)"
    assert one_line(ax.get_ylabel()) == \
        "validation: teacher NLL gap, block - full attention (nats/token) (lower is better)"
    assert sorted(t.get_text() for t in ax.texts) == ["128", "256", "64"]  # not 64.0
    assert "points labelled by target block size (tokens)" in one_line(ax.get_title())
    assert "sweep 'granularity', 3 runs" in one_line(ax.get_title())


def test_tradeoff_without_a_swept_key_labels_points_by_run_name():
    runs = [fake_run("a", metrics={"val/attention_cost": 0.5, "val/block_gap": 0.1}),
            fake_run("b", metrics={"val/attention_cost": 0.2, "val/block_gap": 0.3})]
    (ax,) = plots.tradeoff_figure(runs, "val/attention_cost", "val/block_gap", "run").axes
    assert sorted(t.get_text() for t in ax.texts) == ["a", "b"]  # formerly "None"


SEG = {("code", "coarse"): 0.312, ("code", "fine"): 0.101, ("legal_text", "coarse"): 0.45, ("legal_text", "middle"): 0.2,
       ("legal_text", "fine"): 0.05, ("all", "coarse"): 0.38, ("all", "middle"): 0.25, ("all", "fine"): 0.075}


def seg_run(method="segmenter", extra_method=None):
    metrics = {}
    for m in filter(None, (method, extra_method)):
        for (category, level), v in SEG.items():
            metrics[f"{m}.{level}.{category}.pk"] = v
            metrics[f"{m}.{level}.{category}.windowdiff"] = v + 0.01
            metrics[f"{m}.{level}.{category}.f1"] = 0.9  # not plotted
    return fake_run("eval-seg-test", metrics=metrics, run_id="abcdef0123456789")


def test_segmentation_is_a_heatmap_with_each_cell_annotated():
    fig = drawn(plots.segmentation_figure(seg_run(extra_method="sentence"), None))
    heatmaps = [ax for ax in fig.axes if ax.images]
    assert len(heatmaps) == 2  # Pk and WindowDiff; the other two axes are their colorbars
    categories, levels = ["code", "legal text", "all"], ["coarse", "middle", "fine"]
    for ax, metric, offset in zip(heatmaps, ("Pk", "WindowDiff"), (0.0, 0.01)):
        assert tick_texts(ax, "y") == categories and tick_texts(ax) == levels  # rows: categories, "all" last
        assert ax.images[0].get_array().shape == (3, 3)
        cells = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in ax.texts}
        assert len(cells) == 9
        for i, c in enumerate(["code", "legal_text", "all"]):
            for j, lv in enumerate(levels):
                expected = SEG.get((c, lv))
                if expected is None:
                    assert cells[(i, j)] == "–"  # a missing score is shown as missing, not as 0
                else:
                    assert float(cells[(i, j)]) == pytest.approx(expected + offset, abs=5e-4)
        assert ax.get_title() == f"{metric} (lower is better)"
        assert ax.get_xlabel() == "segmenter level" and ax.get_ylabel() in ("document category", "")
    colorbars = [ax for ax in fig.axes if not ax.images]
    assert [ax.get_ylabel() for ax in colorbars] == ["Pk (error probability)", "WindowDiff (error fraction)"]
    title = fig._suptitle.get_text()
    assert "method 'segmenter'" in title and "'eval-seg-test'" in title and "abcdef01" in title


def test_segmentation_method_is_chosen_or_refused_by_name():
    fig = plots.segmentation_figure(seg_run(method="sentence", extra_method="fixed"), None)
    assert "method 'fixed'" in fig._suptitle.get_text()  # no segmenter: the first method by name
    assert "method 'sentence'" in plots.segmentation_figure(seg_run("sentence", "fixed"), "sentence")._suptitle.get_text()
    with pytest.raises(UsageError, match="--method 'semantic'.*fixed, sentence"):
        plots.segmentation_figure(seg_run("sentence", "fixed"), "semantic")
    with pytest.raises(UsageError, match="no eval-seg scores"):
        plots.segmentation_figure(fake_run("x", metrics={"val/loss": 1.0}), None)


def test_plot_functions_write_their_files(tmp_path):
    runs = granularity_sweep()
    written = [plots.plot_metrics(runs, "sweep.data.init_args.granularity", ["val/block_gap"], tmp_path / "m.png"),
               plots.plot_tradeoff(runs, "val/attention_cost", "val/block_gap", "sweep.data.init_args.granularity",
                                   tmp_path / "t.png"),
               plots.plot_segmentation(seg_run(), None, tmp_path / "s.png")]
    assert written == [tmp_path / "m.png", tmp_path / "t.png", tmp_path / "s.png"]
    for path in written:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5_000
    assert plots.pyplot().get_fignums() == []  # every figure closed after saving


def test_tick_text_never_shows_floats_of_integers():
    assert [plots.tick_text(v) for v in (64.0, 0.001, 2.5e-5, "coarse", 1024)] == ["64", "0.001", "2.5e-05", "coarse", "1024"]
    assert not math.isnan(plots.as_number("64")) and plots.as_number("coarse") == "coarse"


def test_eval_seg_pk_plot_is_one_heatmap_per_level_with_every_value(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    from lit_block.segmentation import evaluation
    from lit_block.segmentation.segmenter import LEVELS

    results = {(m, lv, c): {"pk": round(0.1 * i + 0.01 * j + 0.001 * k, 3)}
               for i, m in enumerate(("fixed", "regex")) for j, lv in enumerate(LEVELS)
               for k, c in enumerate(("legal_text", "poetry", "all"))}
    figures = []
    monkeypatch.setattr(plt, "close", figures.append)  # keep the figure to read it back
    evaluation.plot_pk(results, tmp_path / "pk.png")
    assert (tmp_path / "pk.png").stat().st_size > 0
    (fig,) = figures
    heatmaps = [ax for ax in fig.axes if ax.get_title().endswith("(lower is better)")]
    assert [ax.get_title().split()[0] for ax in heatmaps] == list(LEVELS)
    for ax, level in zip(heatmaps, LEVELS):
        assert [t.get_text() for t in ax.get_yticklabels()] == ["legal text", "poetry", "all"]  # overall row last
        shown = sorted(float(t.get_text()) for t in ax.texts)
        assert shown == sorted(v["pk"] for (m, lv, c), v in results.items() if lv == level)
