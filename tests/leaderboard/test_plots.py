"""The leaderboard figures as a reader sees them, checked through matplotlib's objects: every axis labelled (with
its unit), zero values drawn, axes zoomed to where values differ, the colour-blind-safe palette and one marker per
run, markers that cannot hide each other, legends outside the data, readable run labels."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest

from cfbench.leaderboard.styles import OKABE_ITO
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_hex
from matplotlib.lines import Line2D

from cfbench.leaderboard import plots
from cfbench.leaderboard.table_model import RunSummary, by_operation, load_runs
from tests.helpers.runs import make_evaluated_runs


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return load_runs(list(make_evaluated_runs(tmp_path_factory.mktemp("plots"), n=24, size=48).values()))


def variant(run: RunSummary, label: str, values: dict[str, float]) -> RunSummary:
    metrics = copy.deepcopy(run.metrics)
    for name, value in values.items():
        metrics["metrics"][name] = {**metrics["metrics"][name], "value": value, "ci_low": value, "ci_high": value}
    return RunSummary(Path(label), f"{label}@00000000", label, metrics)


def figures(runs):
    breakdowns = {run.label: by_operation(run, n_resamples=20) for run in runs}
    return {"metric_bars": plots.metric_bars_figure(runs), "tradeoff": plots.tradeoff_figure(runs),
            "finding_heatmap": plots.finding_heatmap_figure(runs),
            "by_operation": plots.by_operation_figure(breakdowns, runs)}


def data_axes(figure):
    return [axes for axes in figure.axes if axes.get_label() != "<colorbar>"]


def markers(axes) -> list[Line2D]:
    return [line for line in axes.get_lines() if line.get_marker() not in (None, "None", "", " ", "_", "|")
            and line.get_linestyle() in ("None", "", " ") and len(line.get_xdata()) == 1]


def test_every_axis_has_a_label_with_its_unit(runs):
    for name, figure in figures(runs).items():
        for axes in data_axes(figure):
            assert axes.get_xlabel(), f"{name}: an x axis without label"
            if any(t.get_text() for t in axes.get_yticklabels()) or name != "metric_bars":
                assert axes.get_ylabel(), f"{name}: a y axis without label"
        if name == "metric_bars":
            labels = {axes.get_xlabel() for axes in figure.axes}
            assert {"KL (nats)", "Patho (AUROC x 100)", "CMIG (0-100)", "Age (Pearson r x 100)"} <= labels
        if name == "finding_heatmap":
            colourbar = [axes for axes in figure.axes if axes.get_label() == "<colorbar>"][0]
            assert colourbar.get_ylabel().startswith("AUROC") and colourbar.yaxis.label.get_size() >= 8
    tradeoff = figures(runs)["tradeoff"].axes[0]
    assert "_" not in tradeoff.get_xlabel() + tradeoff.get_ylabel()  # titles, not code identifiers


def test_zero_values_are_drawn_inside_the_axes(runs):
    figure = plots.metric_bars_figure(runs)
    kl = next(axes for axes in figure.axes if axes.get_xlabel() == "KL (nats)")
    truth = next(i for i, run in enumerate(runs) if run.model == "ground-truth")
    assert runs[truth].metrics["metrics"]["kl_divergence"]["value"] == pytest.approx(0.0, abs=1e-12)
    at_zero = [line for line in markers(kl) if line.get_ydata()[0] == truth]
    assert at_zero and at_zero[0].get_xdata()[0] == pytest.approx(0.0, abs=1e-12)
    low, high = kl.get_xlim()
    assert low < 0.0 < high and at_zero[0].get_markersize() >= 5  # a visible marker, not a zero-height bar
    assert any(text.get_text() == "0.000" for text in kl.texts)  # and its value written beside it


def test_axes_zoom_to_where_values_differ(runs):
    close = [variant(runs[0], "a", {"pathology_mean_auroc": 0.996}), variant(runs[0], "b", {"pathology_mean_auroc": 1.0})]
    figure = plots.metric_bars_figure(close)
    patho = next(axes for axes in figure.axes if axes.get_xlabel().startswith("Patho"))
    low, high = patho.get_xlim()
    assert high - low < 2.0 and low > 98.0  # 99.6 and 100 are told apart (no fixed 0-100 axis)
    xs = [line.get_xdata()[0] for line in markers(patho)]
    assert all(low < x < high for x in xs) and max(xs) < high - 0.03 * (high - low)  # off the frame edge


def test_palette_markers_and_no_marker_hidden(runs):
    figure = plots.tradeoff_figure(runs)
    axes = figure.axes[0]
    points = markers(axes)
    assert len(points) == len(runs)
    assert {to_hex(line.get_color()) for line in points} <= {c.lower() for c in OKABE_ITO}
    assert len({line.get_marker() for line in points}) == len(points)  # colour is never the only cue
    # points at the same place: each stays visible (see-through or hollow faces, decreasing sizes)
    same = [variant(run, run.label, {}) for run in runs]
    for run in same:
        run.metrics["components"]["cmig"] = dict(same[0].metrics["components"]["cmig"])
    stacked = markers(plots.tradeoff_figure(same).axes[0])
    assert len({(line.get_xdata()[0], line.get_ydata()[0]) for line in stacked}) == 1
    sizes = [line.get_markersize() for line in stacked]
    assert sizes == sorted(sizes, reverse=True) and len(set(sizes)) == len(sizes)
    for line in stacked[:-1]:  # every marker drawn under another lets it show through
        face = line.get_markerfacecolor()
        assert face == "none" or (len(face) == 4 and face[3] < 0.5)


@pytest.mark.parametrize("name", ["tradeoff", "by_operation"])
def test_legend_is_outside_the_data(runs, name):
    figure = figures(runs)[name]
    FigureCanvasAgg(figure).draw()
    legend = (figure.axes[0].get_legend() or figure.legends[0]).get_window_extent()
    for axes in data_axes(figure):
        assert not legend.overlaps(axes.get_window_extent()), f"{name}: the legend covers an axes"
        for text in axes.texts:  # iso-line labels (CMIG 80 ...) stay visible
            assert not legend.overlaps(text.get_window_extent())


def test_run_labels_are_readable(runs):
    figure = plots.metric_bars_figure(runs)
    FigureCanvasAgg(figure).draw()
    labels = [t for t in figure.axes[0].get_yticklabels() if t.get_text()]
    assert len(labels) == len(runs) and all(t.get_rotation() == 0 for t in labels)
    assert all(max(len(line) for line in t.get_text().splitlines()) <= 24 for t in labels)  # long names wrapped
    assert all(t.get_fontsize() >= 7 for t in labels)
    boxes = [t.get_window_extent() for t in labels]
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])


def test_pngs_are_written(runs, tmp_path):
    for path in plots.metric_bars(runs, tmp_path / "bars") + plots.tradeoff(runs, tmp_path / "trade"):
        assert path.stat().st_size > 1000
    assert np.isfinite(1.0)


def test_a_model_keeps_its_colour_and_marker_across_leaderboards():
    from cfbench.leaderboard.styles import model_styles

    alone = model_styles(["instructx2x", "identity"])
    crowded = model_styles(["zeta-model", "identity", "alpha-model", "instructx2x", "ground-truth"])
    assert alone["instructx2x"] == crowded["instructx2x"] and alone["identity"] == crowded["identity"]
    many = model_styles([f"model-{i}" for i in range(64)])
    assert len(set(many.values())) == 64  # clashes move to a free combination while any is left
    assert model_styles(["instructx2x [run-a]", "instructx2x [run-b]"])["instructx2x [run-a]"] == alone["instructx2x"]
