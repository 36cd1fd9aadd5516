"""Metrics as the console prints them (``cfbench run`` / ``eval``, ``cfbench demo``): on the leaderboard's
scale (AUROC and Pearson r x 100 as in the InstructX2X table, CMIG 0-100, KL in nats, CLIP-I x 100), each
value with its bootstrap interval and n, the reason for every metric that was not computed, and a warning
on metrics computed on fewer than :data:`cfbench.evaluation.protocol.SMALL_N` samples.
"""

from __future__ import annotations

from cfbench.evaluation.metric_names import METRICS, metric_name
from cfbench.evaluation.protocol import CLIP_I_SHORT, SMALL_N, small_n_warnings
from cfbench.leaderboard.table_model import LAYOUTS, format_value


def display_scale(metric: str) -> tuple[float, int, str]:
    """(factor, decimals, unit as shown) of a metrics.json name on the leaderboard's scale."""
    family = metric.split("/")[0]
    if family == "pathology_auroc":
        return 100.0, 2, "AUROC x 100"
    if family == "f1":
        return 1.0, 4, "[0, 1]"
    if metric == "sex_auroc":
        return 100.0, 2, "AUROC x 100"
    for layout in ("summary", "instructx2x", "progemu", "locality"):
        for column in LAYOUTS[layout].columns:
            if column.metric == metric:
                unit = metric_name(metric).unit
                if column.scale != 1.0:
                    unit = {"AUROC in [0, 1]": "AUROC", "Pearson r in [-1, 1]": "Pearson r",
                            "cosine in [-1, 1]": "cosine"}.get(unit, unit) + f" x {column.scale:g}"
                return column.scale, column.decimals, unit
    return 1.0, 4, metric_name(metric).unit if _known(metric) else ""


def _known(metric: str) -> bool:
    try:
        metric_name(metric)
    except KeyError:
        return False
    return True


def display_title(metric: str, protocol: dict | None = None) -> str:
    """The metric's short title with its direction; CLIP-I names its variant ("CLIP-I (img-txt)")."""
    if not _known(metric):
        return metric
    info = metric_name(metric)
    title = info.title
    if metric == "clip_i":
        variant = (protocol or {}).get("clip_i_variant", "image-image")
        title = f"CLIP-I ({CLIP_I_SHORT.get(variant, variant)})"
    return f"{title} {info.arrow}".strip()


def _order(name: str) -> tuple:
    headline = list(METRICS)
    return (0, headline.index(name)) if name in headline else (1, name)


def metric_lines(report: dict) -> list[str]:
    """The console table of one evaluation report (metrics.json content)."""
    protocol = report.get("protocol", {})
    level = round(100 * protocol.get("confidence_level", 0.95))
    warnings = report.get("warnings") or small_n_warnings(report.get("metrics", {}))
    undefined = report.get("undefined", {})
    rows = []
    for name, entry in sorted(report.get("metrics", {}).items(), key=lambda item: _order(item[0])):
        factor, decimals, unit = display_scale(name)

        def shown(value):
            return format_value(None if value is None else value * factor, decimals)

        interval = (f"[{shown(entry.get('ci_low'))}, {shown(entry.get('ci_high'))}]"
                    if entry.get("n_resamples") and entry.get("ci_low") is not None else "")
        note = "!" if name in warnings else ""
        if entry.get("value") is None:
            note = f"not defined: {undefined.get(name, 'undefined on these samples (see metrics.json)')}"
        if entry.get("n_excluded"):
            note = (note + "; " if note else "") + f"{entry['n_excluded']} left out: {entry.get('reason', '')}"
        rows.append((display_title(name, protocol), shown(entry.get("value")), interval, str(entry.get("n", "")),
                     unit, name, note))
    for name, reason in report.get("skipped", {}).items():
        rows.append((display_title(name, protocol), "-", "", "", "", name, f"not computed: {reason}"))
    header = ("metric", "value", f"{level}% CI", "n", "scale", "metrics.json key", "")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(6)]
    lines = []
    for row in [header, *rows]:
        cells = [row[0].ljust(widths[0]), row[1].rjust(widths[1]), row[2].ljust(widths[2]), row[3].rjust(widths[3]),
                 row[4].ljust(widths[4]), row[5].ljust(widths[5]), row[6]]
        lines.append("  " + "  ".join(cells).rstrip())
    if warnings:
        n = min(report["metrics"][name]["n"] for name in warnings)
        fid = " FID especially: it is biased upwards at small n and needs hundreds of samples." if "fid" in warnings else ""
        lines.append(f"  ! computed on fewer than {SMALL_N} samples (n={n}): unstable, widen the split before "
                     f"comparing.{fid}")
    return lines


def summary_table(rows: list[dict], columns: tuple[str, ...]) -> str:
    """Markdown, one row per model: ``rows`` are {"model", "n", "protocol", "metrics": {name: metrics.json
    entry}}; each cell is the value [interval] on the leaderboard's scale, '-' when not computed."""
    header = ["model", "n"]
    for column in columns:
        unit = {"pixel intensity in [0, 1]": "pixels, [0, 1]"}.get(display_scale(column)[2], display_scale(column)[2])
        title = display_title(column, rows[0].get("protocol") if rows else None)
        header.append(f"{title} ({unit})" if unit else title)
    lines = ["| " + " | ".join(header) + " |", "|---|---:|" + "---:|" * len(columns)]
    for row in rows:
        cells = [row["model"], str(row.get("n", ""))]
        for column in columns:
            entry = row.get("metrics", {}).get(column)
            if not entry or entry.get("value") is None:
                cells.append("-")
                continue
            factor, decimals, _ = display_scale(column)
            text = format_value(entry["value"] * factor, decimals)
            if entry.get("ci_low") is not None and entry.get("ci_high") is not None:
                text += (f" [{format_value(entry['ci_low'] * factor, decimals)}, "
                         f"{format_value(entry['ci_high'] * factor, decimals)}]")
            cells.append(text)
        lines.append("| " + " | ".join(cells) + " |")
    notes = []
    for row in rows:
        for name, reason in row.get("skipped", {}).items():
            if name in columns:
                notes.append(f"- {row['model']}: {display_title(name)} not computed: {reason}")
        for name, warning in small_n_warnings(row.get("metrics", {})).items():
            if name in columns:
                notes.append(f"- {row['model']}: {display_title(name)} {warning}")
    if rows:
        level = round(100 * rows[0].get("protocol", {}).get("confidence_level", 0.95))
        notes.insert(0, f"- Brackets: {level}% bootstrap interval; n = samples evaluated. Metrics on fewer than "
                        f"{SMALL_N} samples are flagged below.")
    return "\n".join(lines + ([""] + notes if notes else []))


HEADLINE_COLUMNS: tuple[str, ...] = ("cfbench_score", "cmig", "pathology_mean_auroc", "race_auroc", "age_pearson",
                                     "fid", "mae_to_true_counterfactual")


def model_summary_line(row: dict, columns: tuple[str, ...] = HEADLINE_COLUMNS) -> str:
    """One line of a finished model's headline metrics on the leaderboard's scale (value [interval]); the
    metrics a row does not have are left out. ``row``: {"model", "n", "protocol", "metrics"} as in
    :func:`summary_table`."""
    parts = []
    for column in columns:
        entry = row.get("metrics", {}).get(column)
        if not entry or entry.get("value") is None:
            continue
        factor, decimals, _ = display_scale(column)
        text = f"{display_title(column, row.get('protocol'))} {format_value(entry['value'] * factor, decimals)}"
        if entry.get("ci_low") is not None and entry.get("ci_high") is not None:
            text += (f" [{format_value(entry['ci_low'] * factor, decimals)}, "
                     f"{format_value(entry['ci_high'] * factor, decimals)}]")
        parts.append(text)
    return f"{row['model']} (n={row.get('n', '?')}): " + ("; ".join(parts) or "no metrics")


def duration_text(seconds: float) -> str:
    """'42 s', '3.5 min', '1.2 h'."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
