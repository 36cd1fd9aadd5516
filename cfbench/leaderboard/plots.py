"""Leaderboard plots (matplotlib, Agg canvas, no pyplot state): each written as PNG (150 dpi) and PDF.

- ``metric_bars``: one panel per headline metric (InstructX2X layout, the papers' scale), one row per
  measured run: a marker at the value and whiskers for the bootstrap interval (a dot plot, so a zero KL or
  FID is as visible as any value and the axis can zoom to where the values differ), value written beside it;
  oracle rows hollow.
- ``tradeoff``: pathology accuracy (the CMIG accuracy mean a, 0-100) against attribute preservation (the
  retention mean f, 0-100), with CMIG iso-lines sqrt(a * f) = c; vertical whiskers = the pathology AUROC
  interval when AUROC is the only accuracy term. Points that would cover each other are nudged apart (a note
  says so) and every run has its own marker shape; the legend sits outside the axes.
- ``finding_heatmap``: pathology AUROC per finding (rows: runs, columns: findings), values written in.
- ``by_operation``: per operation kind (add / remove / change), the metrics recomputed from each run's
  per-sample table with intervals (:func:`cfbench.leaderboard.table_model.by_operation`), as dot plots.

Conventions of published figures: every axis labelled with its unit, 7-9 pt text at a column width of about
3.5 in per panel, the Okabe-Ito colour-blind-safe palette plus one marker shape per run (colour is never the
only cue), legends outside the data. Each ``*_figure`` function returns the matplotlib Figure (tests inspect
it); the plain functions write it as PNG and PDF.

Only measured rows are plotted: the papers' values come from other test sets and, for KL, another scale.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from cfbench.core.findings import EVALUATED_FINDINGS
from cfbench.evaluation.metric_names import metric_name
from cfbench.leaderboard.styles import model_styles
from cfbench.leaderboard.table_model import (
    BREAKDOWN_METRICS,
    LAYOUTS,
    RunSummary,
    format_value,
    per_finding_auroc,
)

OPERATION_TITLES = {"add": "add", "remove": "remove", "change": "change level"}

FONT = 8  # points; titles 9


def _paper_scale(metric: str) -> float:
    """The factor the InstructX2X table prints the metric with (AUROC and r x 100), else 1."""
    return next((c.scale for c in LAYOUTS["instructx2x"].columns if c.metric == metric), 1.0)


def _wrap(label: str, width: int = 20) -> str:
    """A run label broken after ':', '.', ' ', '[' or '-' so it stays readable at column width."""
    pieces = re.split(r"(?<=[:. \[-])", label)
    lines, line = [], ""
    for piece in pieces:
        if line and len(line) + len(piece) > width:
            lines.append(line)
            line = ""
        line += piece
    lines.append(line)
    return "\n".join(lines)


def _axis_label(metric: str, scale: float) -> str:
    """"KL (nats)", "Patho (AUROC x 100)": the metric's title and its unit on the plotted scale."""
    info = metric_name(metric)
    unit = info.unit
    if scale != 1.0:
        unit = {"AUROC in [0, 1]": "AUROC", "Pearson r in [-1, 1]": "Pearson r", "cosine in [-1, 1]": "cosine"}.get(
            unit, unit) + f" x {scale:g}"
    return f"{info.title} ({unit})"


def _bounds(metric: str, scale: float) -> tuple[float | None, float | None]:
    """The scale's natural limits (axes never run past them)."""
    if metric in ("kl_divergence", "fid"):
        return 0.0, None
    if metric in ("pathology_mean_auroc", "race_auroc", "sex_auroc", "f1_macro") or "/" in metric:
        return 0.0, 1.0 * scale
    if metric == "cmig":
        return 0.0, 100.0
    if metric == "age_pearson":
        return -1.0 * scale, 1.0 * scale
    return None, None


def _value_range(points: list[float], floor: float | None, ceiling: float | None) -> tuple[float, float]:
    """Axis limits around the values and their intervals with a margin (never a fixed 0-100), so 99.6 and 100
    are told apart; not beyond the scale's bounds except for a small margin that keeps markers off the frame."""
    low, high = min(points), max(points)
    span = high - low
    if span == 0:
        span = max(abs(high) * 0.02, 1e-3 if ceiling is None or ceiling <= 1 else 0.5)
    low, high = low - 0.15 * span, high + 0.15 * span
    edge = 0.08 * (high - low)  # keeps a marker at the bound off the frame
    if floor is not None:
        low = max(low, floor - edge)
    if ceiling is not None:
        high = min(high, ceiling + edge)
    return low, high


def save(figure: Figure, stem: Path) -> list[Path]:
    """Write stem.png and stem.pdf (no timestamps in the files, so re-runs give the same bytes)."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    png, pdf = stem.with_suffix(".png"), stem.with_suffix(".pdf")
    figure.savefig(png, dpi=200, bbox_inches="tight", metadata={"Software": None})
    figure.savefig(pdf, bbox_inches="tight", metadata={"CreationDate": None, "Creator": None, "Producer": None})
    return [png, pdf]


def _entry(run: RunSummary, metric: str) -> dict | None:
    entry = run.metrics.get("metrics", {}).get(metric)
    return entry if entry and entry.get("value") is not None else None


def _whiskers(values: list[float], lows: list[float | None], highs: list[float | None]) -> np.ndarray:
    """matplotlib xerr / yerr (2, n): distances below / above; 0 where the interval is unknown."""
    below = [0.0 if low is None else max(v - low, 0.0) for v, low in zip(values, lows)]
    above = [0.0 if high is None else max(high - v, 0.0) for v, high in zip(values, highs)]
    return np.array([below, above])


def _scaled(entry: dict, scale: float) -> tuple[float, float | None, float | None]:
    def s(x):
        return None if x is None else x * scale

    return entry["value"] * scale, s(entry.get("ci_low")), s(entry.get("ci_high"))


def _run_style(runs: list[RunSummary]) -> dict[str, dict]:
    """One colour and one marker per run (oracle rows hollow), the same in every plot and leaderboard
    (:mod:`cfbench.leaderboard.styles`: a function of the registry name)."""
    styles = model_styles([run.label for run in runs])
    return {run.label: {"color": styles[run.label][0], "marker": styles[run.label][1], "oracle": run.oracle}
            for i, run in enumerate(runs)}


def _point(axes, x, y, style, xerr=None, yerr=None, size=6.5, label=None, zorder=3, see_through=False):
    """One marker with whiskers; oracle rows hollow. ``see_through``: filled markers are half transparent and
    hollow ones have no face, so a marker drawn over another never hides it."""
    from matplotlib.colors import to_rgba

    if see_through:
        face = "none" if style["oracle"] else to_rgba(style["color"], 0.4)
    else:
        face = "white" if style["oracle"] else style["color"]
    return axes.errorbar(x, y, xerr=xerr, yerr=yerr, fmt=style["marker"], color=style["color"], markersize=size,
                         markerfacecolor=face, markeredgecolor=style["color"], markeredgewidth=1.4, capsize=2.5,
                         elinewidth=1.0, label=label, zorder=zorder)


def metric_bars_figure(runs: list[RunSummary]) -> Figure:
    """One dot-plot panel per headline metric: runs on the vertical axis, the value (marker, written beside it)
    and its bootstrap interval (whiskers) on the horizontal axis, labelled with the metric and its unit."""
    columns = [c for c in LAYOUTS["instructx2x"].columns if any(_entry(run, c.metric) for run in runs)]
    if not columns:
        raise ValueError("no run has any of the headline metrics")
    n_columns = min(3, len(columns))
    n_rows = math.ceil(len(columns) / n_columns)
    height = max(1.9, 0.42 * len(runs) + 1.1)
    figure = Figure(figsize=(3.3 * n_columns + 0.9, height * n_rows + 0.5), layout="constrained")
    styles = _run_style(runs)
    labels = [_wrap(run.label) for run in runs]
    for index, column in enumerate(columns):
        axes = figure.add_subplot(n_rows, n_columns, index + 1)
        points = []
        for position, run in enumerate(runs):
            entry = _entry(run, column.metric)
            if entry is None:
                axes.text(0.5, position, "not computed", transform=axes.get_yaxis_transform(), ha="center",
                          va="center", fontsize=FONT - 1, color="0.35", style="italic")
                continue
            value, low, high = _scaled(entry, column.scale)
            points += [value] + [v for v in (low, high) if v is not None]
            _point(axes, [value], [position], styles[run.label], xerr=_whiskers([value], [low], [high]))
            axes.annotate(format_value(value, column.decimals), (value, position), xytext=(0, 7),
                          textcoords="offset points", ha="center", va="bottom", fontsize=FONT - 1)
        floor, ceiling = _bounds(column.metric, column.scale)
        axes.set_xlim(*_value_range(points, floor, ceiling))
        axes.set_ylim(len(runs) - 0.4, -0.75)  # first run on top; room for the value labels
        axes.set_yticks(range(len(runs)), labels if index % n_columns == 0 else [""] * len(runs), fontsize=FONT)
        axes.set_xlabel(_axis_label(column.metric, column.scale), fontsize=FONT)
        axes.set_ylabel("run" if index % n_columns == 0 else "", fontsize=FONT)
        direction = {True: "higher is better", False: "lower is better", None: ""}[column.higher_is_better]
        axes.set_title(f"{column.title} {column.arrow}".strip() + (f"  ({direction})" if direction else ""),
                       fontsize=FONT + 1)
        axes.tick_params(axis="x", labelsize=FONT - 1)
        axes.grid(axis="x", linewidth=0.3, alpha=0.6)
        axes.set_axisbelow(True)
    level = runs[0].metrics.get("protocol", {}).get("confidence_level", 0.95)
    figure.suptitle(f"Headline metrics: marker = value, whiskers = {round(100 * level)}% bootstrap interval; "
                    "hollow markers = oracle rows", fontsize=FONT + 1)
    return figure


def metric_bars(runs: list[RunSummary], stem: Path) -> list[Path]:
    return save(metric_bars_figure(runs), stem)


def _term_titles(terms) -> str:
    names = []
    for term in terms:
        try:
            names.append(metric_name(term).title + {"age_pearson": " r"}.get(term, " AUROC" if "auroc" in term else ""))
        except KeyError:
            names.append(term)
    return " and ".join(names)


def tradeoff_figure(runs: list[RunSummary], levels: tuple[float, ...] = (50, 60, 70, 80, 90, 95)) -> Figure:
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
                       tuple(cmig.get("retention_terms", {})), tuple(cmig.get("accuracy_terms", {}))))
    if not points:
        raise ValueError("no run has CMIG components (accuracy and retention means)")
    figure = Figure(figsize=(6.4, 4.2), layout="constrained")
    axes = figure.add_subplot(1, 1, 1)
    xs = [p[1] for p in points]
    ys = [p[2] for p in points] + [v for p in points for v in (p[3], p[4]) if v is not None]
    x_low, x_high = _value_range(xs + [min(xs) - 5], 0.0, 100.0)
    y_low, y_high = _value_range(ys + [min(ys) - 5], 0.0, 100.0)
    f = np.linspace(max(x_low, 1e-3), x_high, 400)
    for level in levels:
        a = level ** 2 / f
        visible = (a >= y_low) & (a <= y_high)
        if not visible.any():
            continue
        axes.plot(f, a, color="0.55", linewidth=0.7, linestyle="--", zorder=1)
        inside = np.flatnonzero(visible)
        i = int(inside[len(inside) // 3])
        axes.annotate(f"CMIG {level:g}", (f[i], a[i]), fontsize=FONT - 1, color="0.35", ha="left", va="bottom",
                      xytext=(2, 1), textcoords="offset points", zorder=2)
    styles = _run_style(runs)
    for index, (run, x, y, low, high, _, _) in enumerate(points):
        # never moved: each run has its own shape and size (the first largest, drawn first), hollow or
        # see-through faces, so coinciding points show as nested outlines
        yerr = None if low is None else np.array([[max(y - low, 0.0)], [max(high - y, 0.0)]])
        score = (_entry(run, "cfbench_score") or {}).get("value")
        label = _wrap(run.label, 28) + ("" if score is None else f"\ncfbench score {score:.1f}")
        _point(axes, [x], [y], styles[run.label], yerr=yerr, size=max(5.0, 12.0 - 2.2 * index),
               label=label, zorder=3 + index, see_through=True)
    axes.set_xlim(x_low, x_high)
    axes.set_ylim(y_low, y_high)
    retention = sorted({p[5] for p in points})
    accuracy = sorted({p[6] for p in points})
    axes.set_xlabel("preservation f (x 100): geometric mean of "
                    + " / ".join(_term_titles(terms) for terms in retention), fontsize=FONT)
    axes.set_ylabel("pathology accuracy a (x 100): " + " / ".join(_term_titles(terms) for terms in accuracy),
                    fontsize=FONT)
    axes.set_title("Pathology change vs patient preservation; dashed: CMIG = sqrt(a f)", fontsize=FONT + 1)
    axes.tick_params(labelsize=FONT - 1)
    axes.grid(linewidth=0.3, alpha=0.6)
    title = "run (hollow: oracle;\nnested outlines: points\nthat coincide)"
    axes.legend(fontsize=FONT - 1, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, title=title,
                title_fontsize=FONT - 1, frameon=False)
    return figure


def tradeoff(runs: list[RunSummary], stem: Path, levels: tuple[float, ...] = (50, 60, 70, 80, 90, 95)) -> list[Path]:
    return save(tradeoff_figure(runs, levels), stem)


def finding_heatmap_figure(runs: list[RunSummary]) -> Figure:
    table = per_finding_auroc(runs)
    labels = [run.label for run in runs if any(v is not None for v in table[run.label].values())]
    if not labels:
        raise ValueError("no run has per-finding pathology AUROCs")
    scale = _paper_scale("pathology_mean_auroc")  # the tables' and dot plots' scale (AUROC x 100)
    matrix = np.array([[math.nan if table[m][f] is None else scale * table[m][f] for f in EVALUATED_FINDINGS]
                       for m in labels])
    figure = Figure(figsize=(1.15 * len(EVALUATED_FINDINGS) + 3.0, 0.5 * len(labels) + 1.9), layout="constrained")
    axes = figure.add_subplot(1, 1, 1)
    image = axes.imshow(np.ma.masked_invalid(matrix), cmap="viridis", vmin=0.5 * scale, vmax=1.0 * scale,
                         aspect="auto")
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            value = matrix[i, j]
            text = "–" if math.isnan(value) else f"{value:.1f}"
            axes.text(j, i, text, ha="center", va="center", fontsize=FONT,
                      color="black" if not math.isnan(value) and value > 0.8 * scale else "white")
    axes.set_xticks(range(len(EVALUATED_FINDINGS)), EVALUATED_FINDINGS, rotation=25, ha="right", fontsize=FONT)
    axes.set_yticks(range(len(labels)), [_wrap(label, 28) for label in labels], fontsize=FONT)
    axes.set_xlabel("finding (target-study label)", fontsize=FONT)
    axes.set_ylabel("run", fontsize=FONT)
    colourbar = figure.colorbar(image, ax=axes, shrink=0.9)
    colourbar.set_label(f"AUROC x {scale:g}, as in the tables (colour clipped to [{0.5 * scale:g}, {scale:g}])",
                        fontsize=FONT)
    colourbar.ax.tick_params(labelsize=FONT - 1)
    axes.set_title("Pathology AUROC per finding (generated image vs target labels)", fontsize=FONT + 1)
    return figure


def finding_heatmap(runs: list[RunSummary], stem: Path) -> list[Path]:
    return save(finding_heatmap_figure(runs), stem)


def by_operation_figure(breakdowns: dict[str, dict], runs: list[RunSummary]) -> Figure:
    """breakdowns: run label -> :func:`cfbench.leaderboard.table_model.by_operation` result."""
    metrics = [m for m in BREAKDOWN_METRICS
               if any(isinstance(b.get(kind, {}).get(m), dict) for b in breakdowns.values() for kind in b)]
    if not metrics:
        raise ValueError("no per-operation metrics (each kind needs at least 2 samples)")
    kinds = list(OPERATION_TITLES)
    figure = Figure(figsize=(3.3 * len(metrics) + 1.6, 3.2), layout="constrained")
    styles = _run_style(runs)
    width = 0.7 / max(len(runs), 1)
    handles = {}
    for index, metric in enumerate(metrics):
        axes = figure.add_subplot(1, len(metrics), index + 1)
        scale = _paper_scale(metric)
        points = []
        for position, run in enumerate(runs):
            breakdown = breakdowns.get(run.label, {})
            for k, kind in enumerate(kinds):
                entry = breakdown.get(kind, {}).get(metric)
                if not isinstance(entry, dict) or entry.get("value") is None:
                    continue
                value, low, high = _scaled(entry, scale)
                points += [value] + [v for v in (low, high) if v is not None]
                x = k - 0.35 + width * (position + 0.5)
                handles[run.label] = _point(axes, [x], [value], styles[run.label],
                                            yerr=_whiskers([value], [low], [high]), size=5.5)
        counts = []
        for kind in kinds:
            ns = {b.get(kind, {}).get("n", 0) for b in breakdowns.values()}
            counts.append("/".join(str(n) for n in sorted(ns)))
        axes.set_xticks(range(len(kinds)), [f"{OPERATION_TITLES[k]}\nn={c}" for k, c in zip(kinds, counts)],
                        fontsize=FONT - 1)
        axes.set_xlim(-0.5, len(kinds) - 0.5)
        if points:
            axes.set_ylim(*_value_range(points, *_bounds(metric, scale)))
        info = metric_name(metric)
        axes.set_ylabel(_axis_label(metric, scale), fontsize=FONT)
        axes.set_xlabel("operation in the instruction", fontsize=FONT)
        axes.set_title(f"{info.title} {info.arrow}".strip(), fontsize=FONT + 1)
        axes.tick_params(axis="y", labelsize=FONT - 1)
        axes.grid(axis="y", linewidth=0.3, alpha=0.6)
        axes.set_axisbelow(True)
    figure.legend([handles[r.label] for r in runs if r.label in handles],
                  [_wrap(r.label, 28) for r in runs if r.label in handles], loc="outside right upper",
                  fontsize=FONT - 1, frameon=False, title="run (hollow: oracle)", title_fontsize=FONT - 1)
    figure.suptitle("By operation in the instruction (a sample counts in every kind it contains; whiskers: "
                    "bootstrap interval)", fontsize=FONT + 1)
    return figure


def by_operation_plot(breakdowns: dict[str, dict], runs: list[RunSummary], stem: Path) -> list[Path]:
    return save(by_operation_figure(breakdowns, runs), stem)
