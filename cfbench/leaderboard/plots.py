"""Leaderboard plots (matplotlib, Agg canvas, no pyplot state): each written as PNG (150 dpi) and PDF.

- ``metric_bars``: one panel per headline metric (InstructX2X layout, the papers' scale), one bar per
  measured run, whiskers = bootstrap interval; oracle rows hatched.
- ``tradeoff``: pathology accuracy (the CMIG accuracy mean a, 0-100) against attribute preservation (the
  retention mean f, 0-100), with CMIG iso-lines sqrt(a * f) = c; vertical whiskers = the pathology AUROC
  interval when AUROC is the only accuracy term.
- ``finding_heatmap``: pathology AUROC per finding (rows: runs, columns: findings), values written in.
- ``by_operation``: per operation kind (add / remove / change), the metrics recomputed from each run's
  per-sample table with intervals (:func:`cfbench.leaderboard.table_model.by_operation`).

Only measured rows are plotted: the papers' values come from other test sets and, for KL, another scale.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from cfbench.core.findings import EVALUATED_FINDINGS
from cfbench.evaluation.metric_names import metric_name
from cfbench.leaderboard.table_model import BREAKDOWN_METRICS, LAYOUTS, RunSummary, is_oracle, per_finding_auroc

OPERATION_TITLES = {"add": "add", "remove": "remove", "change": "change level"}


def _paper_scale(metric: str) -> float:
    """The factor the InstructX2X table prints the metric with (AUROC and r x 100), else 1."""
    return next((c.scale for c in LAYOUTS["instructx2x"].columns if c.metric == metric), 1.0)


def _colours(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return [cmap(i % 10) for i in range(n)]


def save(figure: Figure, stem: Path) -> list[Path]:
    """Write stem.png and stem.pdf (no timestamps in the files, so re-runs give the same bytes)."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    png, pdf = stem.with_suffix(".png"), stem.with_suffix(".pdf")
    figure.savefig(png, dpi=150, bbox_inches="tight", metadata={"Software": None})
    figure.savefig(pdf, bbox_inches="tight", metadata={"CreationDate": None, "Creator": None, "Producer": None})
    return [png, pdf]


def _entry(run: RunSummary, metric: str) -> dict | None:
    entry = run.metrics.get("metrics", {}).get(metric)
    return entry if entry and entry.get("value") is not None else None


def _whiskers(values: list[float], lows: list[float | None], highs: list[float | None]) -> np.ndarray:
    """matplotlib yerr (2, n): distances below / above; 0 where the interval is unknown."""
    below = [0.0 if low is None else max(v - low, 0.0) for v, low in zip(values, lows)]
    above = [0.0 if high is None else max(high - v, 0.0) for v, high in zip(values, highs)]
    return np.array([below, above])


def metric_bars(runs: list[RunSummary], stem: Path) -> list[Path]:
    columns = [c for c in LAYOUTS["instructx2x"].columns if any(_entry(run, c.metric) for run in runs)]
    if not columns:
        raise ValueError("no run has any of the headline metrics")
    n_columns = min(3, len(columns))
    n_rows = math.ceil(len(columns) / n_columns)
    figure = Figure(figsize=(3.0 * n_columns, 3.0 * n_rows + 0.4), layout="constrained")
    colours = _colours(len(runs))
    for index, column in enumerate(columns):
        axes = figure.add_subplot(n_rows, n_columns, index + 1)
        xs, values, lows, highs, hatches, bar_colours = [], [], [], [], [], []
        for position, run in enumerate(runs):
            entry = _entry(run, column.metric)
            if entry is None:
                continue
            xs.append(position)
            values.append(entry["value"] * column.scale)
            lows.append(None if entry.get("ci_low") is None else entry["ci_low"] * column.scale)
            highs.append(None if entry.get("ci_high") is None else entry["ci_high"] * column.scale)
            hatches.append("//" if is_oracle(run.model) else "")
            bar_colours.append(colours[position])
        bars = axes.bar(xs, values, color=bar_colours, edgecolor="black", linewidth=0.5,
                        yerr=_whiskers(values, lows, highs), capsize=3, error_kw={"linewidth": 0.8})
        for bar, hatch in zip(bars, hatches):
            bar.set_hatch(hatch)
        axes.set_xticks(range(len(runs)), [run.label for run in runs], rotation=35, ha="right", fontsize=7)
        axes.set_title(f"{column.title} {column.arrow}".strip(), fontsize=9)
        axes.tick_params(axis="y", labelsize=7)
        axes.grid(axis="y", linewidth=0.3, alpha=0.6)
        axes.set_axisbelow(True)
    level = runs[0].metrics.get("protocol", {}).get("confidence_level", 0.95)
    figure.suptitle(f"Headline metrics (whiskers: {round(100 * level)}% bootstrap interval; hatched: oracle rows)",
                    fontsize=9)
    return save(figure, stem)


def tradeoff(runs: list[RunSummary], stem: Path, levels: tuple[float, ...] = (50, 60, 70, 80, 90, 95)) -> list[Path]:
    points = []
    for run in runs:
        cmig = run.metrics.get("components", {}).get("cmig")
        if not cmig or cmig.get("accuracy_mean") is None or cmig.get("retention_mean") is None:
            continue
        low = high = None
        if list(cmig.get("accuracy_terms", {})) == ["pathology_mean_auroc"]:
            entry = _entry(run, "pathology_mean_auroc")
            if entry and entry.get("ci_low") is not None and entry.get("ci_high") is not None:
                low, high = 100 * entry["ci_low"], 100 * entry["ci_high"]
        points.append((run, cmig["retention_mean"], cmig["accuracy_mean"], low, high,
                       ", ".join(cmig.get("retention_terms", {}))))
    if not points:
        raise ValueError("no run has CMIG components (accuracy and retention means)")
    figure = Figure(figsize=(5.6, 4.6), layout="constrained")
    axes = figure.add_subplot(1, 1, 1)
    xs = [p[1] for p in points]
    ys = [p[2] for p in points]
    x_low, x_high = max(0.0, min(xs) - 10), min(101.0, max(xs) + 5)
    y_low, y_high = max(0.0, min(ys) - 10), min(101.0, max(ys) + 5)
    f = np.linspace(max(x_low, 1e-3), 100, 400)
    for level in levels:
        a = level ** 2 / f
        visible = (a >= y_low) & (a <= y_high)
        if not visible.any():
            continue
        axes.plot(f, a, color="grey", linewidth=0.7, linestyle="--", zorder=1)
        i = int(np.flatnonzero(visible)[len(np.flatnonzero(visible)) // 2])
        axes.annotate(f"CMIG {level:g}", (f[i], a[i]), fontsize=7, color="dimgrey", ha="center", va="bottom")
    colours = _colours(len(runs))
    for run, x, y, low, high, _ in points:
        colour = colours[runs.index(run)]
        yerr = None if low is None else np.array([[max(y - low, 0.0)], [max(high - y, 0.0)]])
        axes.errorbar([x], [y], yerr=yerr, fmt="s" if is_oracle(run.model) else "o", color=colour, capsize=3,
                      markersize=7, markeredgecolor="black", label=run.label, zorder=3)
    axes.set_xlim(x_low, x_high)
    axes.set_ylim(y_low, y_high)
    terms = {p[5] for p in points}
    axes.set_xlabel(f"preservation f (geometric mean of {' / '.join(sorted(terms))}, x 100)", fontsize=8)
    axes.set_ylabel("pathology accuracy a (mean AUROC x 100)", fontsize=8)
    axes.set_title("Pathology change vs patient preservation; dashed: CMIG = sqrt(a f)", fontsize=9)
    axes.grid(linewidth=0.3, alpha=0.6)
    axes.legend(fontsize=7, loc="lower left")
    return save(figure, stem)


def finding_heatmap(runs: list[RunSummary], stem: Path) -> list[Path]:
    table = per_finding_auroc(runs)
    labels = [run.label for run in runs if any(v is not None for v in table[run.label].values())]
    if not labels:
        raise ValueError("no run has per-finding pathology AUROCs")
    matrix = np.array([[math.nan if table[m][f] is None else table[m][f] for f in EVALUATED_FINDINGS] for m in labels])
    figure = Figure(figsize=(1.3 * len(EVALUATED_FINDINGS) + 2.5, 0.45 * len(labels) + 1.6), layout="constrained")
    axes = figure.add_subplot(1, 1, 1)
    image = axes.imshow(np.ma.masked_invalid(matrix), cmap="viridis", vmin=0.5, vmax=1.0, aspect="auto")
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            value = matrix[i, j]
            text = "–" if math.isnan(value) else f"{value:.3f}"
            axes.text(j, i, text, ha="center", va="center", fontsize=7,
                      color="black" if not math.isnan(value) and value > 0.8 else "white")
    axes.set_xticks(range(len(EVALUATED_FINDINGS)), EVALUATED_FINDINGS, rotation=25, ha="right", fontsize=8)
    axes.set_yticks(range(len(labels)), labels, fontsize=8)
    colourbar = figure.colorbar(image, ax=axes, shrink=0.9)
    colourbar.set_label("AUROC (colour clipped to [0.5, 1])", fontsize=7)
    axes.set_title("Pathology AUROC per finding (generated image vs target labels)", fontsize=9)
    return save(figure, stem)


def by_operation_plot(breakdowns: dict[str, dict], runs: list[RunSummary], stem: Path) -> list[Path]:
    """breakdowns: run label -> :func:`cfbench.leaderboard.table_model.by_operation` result."""
    metrics = [m for m in BREAKDOWN_METRICS
               if any(isinstance(b.get(kind, {}).get(m), dict) for b in breakdowns.values() for kind in b)]
    if not metrics:
        raise ValueError("no per-operation metrics (each kind needs at least 2 samples)")
    kinds = list(OPERATION_TITLES)
    figure = Figure(figsize=(3.4 * len(metrics), 3.4), layout="constrained")
    colours = _colours(len(runs))
    width = 0.8 / max(len(runs), 1)
    for index, metric in enumerate(metrics):
        axes = figure.add_subplot(1, len(metrics), index + 1)
        scale = _paper_scale(metric)
        for position, run in enumerate(runs):
            breakdown = breakdowns.get(run.label, {})
            xs, values, lows, highs = [], [], [], []
            for k, kind in enumerate(kinds):
                entry = breakdown.get(kind, {}).get(metric)
                if not isinstance(entry, dict) or entry.get("value") is None:
                    continue
                xs.append(k - 0.4 + width * (position + 0.5))
                values.append(entry["value"] * scale)
                lows.append(None if entry.get("ci_low") is None else entry["ci_low"] * scale)
                highs.append(None if entry.get("ci_high") is None else entry["ci_high"] * scale)
            if xs:
                axes.bar(xs, values, width=width * 0.95, color=colours[position], edgecolor="black", linewidth=0.5,
                         yerr=_whiskers(values, lows, highs), capsize=2, error_kw={"linewidth": 0.7},
                         hatch="//" if is_oracle(run.model) else "", label=run.label if index == 0 else None)
        counts = []
        for kind in kinds:
            ns = {b.get(kind, {}).get("n", 0) for b in breakdowns.values()}
            counts.append("/".join(str(n) for n in sorted(ns)))
        axes.set_xticks(range(len(kinds)), [f"{OPERATION_TITLES[k]}\nn={c}" for k, c in zip(kinds, counts)],
                        fontsize=7)
        info = metric_name(metric)
        title = f"{info.title} {info.arrow}" + ("" if scale == 1.0 else " (x 100)")
        axes.set_title(title, fontsize=9)
        axes.tick_params(axis="y", labelsize=7)
        axes.grid(axis="y", linewidth=0.3, alpha=0.6)
        axes.set_axisbelow(True)
    figure.legend(loc="outside lower center", ncols=min(len(runs), 4), fontsize=7)
    figure.suptitle("By operation in the instruction (samples may count in several kinds; whiskers: bootstrap "
                    "interval)", fontsize=9)
    return save(figure, stem)
