"""The leaderboard site: ``index.html``, one static page with a sortable, filterable table of every run.

Written by ``cfbench leaderboard`` next to the tables. It opens from disk (file://) with no server and no
network: the rows are JSON inside the page, the script and the style are inline, the plots are the PNGs of
``plots/`` and every link is relative (each run's ``manifest.json`` and ``metrics.json``, copied into
``runs/<run id>/`` so that the folder keeps its links when it is moved or published alone; the gallery).

The table: one row per run; columns model (with its colour and marker, :mod:`cfbench.leaderboard.styles`),
kind (measured / oracle), dataset (kind and split), the benchmark settings that differ between the runs
(resolution, steps, precision, seed: :data:`~cfbench.leaderboard.table_model.SETTING_NAMES`), then the
metrics, ``cfbench_score`` first when metrics.json has it, each on the leaderboard's scale
(:func:`cfbench.leaderboard.console.display_scale`) as value [interval]. A click on a header sorts by it
(best first for a metric, then the other way); the controls filter by model name, kind, dataset and each
setting, and choose the metric columns shown.
"""

from __future__ import annotations

import html
import json
import math
import os
from pathlib import Path

from cfbench.core.storage import atomic_write_bytes, atomic_write_text
from cfbench.evaluation.metric_names import METRICS
from cfbench.leaderboard.console import display_scale, display_title
from cfbench.leaderboard.styles import MARKER_SYMBOLS, model_styles
from cfbench.leaderboard.table_model import SETTING_NAMES, RunSummary, format_value, varying_settings

SCORE_METRIC = "cfbench_score"  # the default score (metrics.json {"value", "ci_low", "ci_high", "terms"})


def site_metrics(runs: list[RunSummary]) -> list[str]:
    """The metric columns: ``cfbench_score`` first when any run has it, then the vocabulary's headline
    metrics (no per-finding ones) that some run has a value for, in the vocabulary's order."""
    present = {name for run in runs for name, entry in run.metrics.get("metrics", {}).items()
               if isinstance(entry, dict) and entry.get("value") is not None}
    ordered = [SCORE_METRIC] if SCORE_METRIC in present else []
    return ordered + [name for name in METRICS if name in present and name != SCORE_METRIC]


def _metric_header(name: str, protocol: dict | None) -> dict:
    if name in METRICS:
        info = METRICS[name]
        better = info.higher_is_better
    else:  # the default score before the vocabulary names it
        better = True
    title = display_title(name, protocol) if name in METRICS else "cfbench score ↑"
    unit = display_scale(name)[2] or ("0-100" if name == SCORE_METRIC else "")
    return {"key": name, "title": title, "unit": unit, "higher_is_better": better}


def _cell(entry: dict | None, metric: str) -> dict | None:
    if not isinstance(entry, dict) or entry.get("value") is None or not math.isfinite(entry["value"]):
        return None
    factor, decimals, _ = display_scale(metric)

    def shown(value):
        return None if value is None else value * factor

    text = format_value(shown(entry["value"]), decimals)
    if entry.get("ci_low") is not None and entry.get("ci_high") is not None:
        text += f" [{format_value(shown(entry['ci_low']), decimals)}, {format_value(shown(entry['ci_high']), decimals)}]"
    return {"value": shown(entry["value"]), "text": text, "n": entry.get("n")}


def _link(target: Path, out: Path) -> str:
    """A relative link from the site folder to ``target`` (URL path separators)."""
    return Path(os.path.relpath(Path(target).resolve(), Path(out).resolve())).as_posix()


RUN_FILES = ("manifest.json", "metrics.json")  # copied beside the page: a few kB each


def _run_file(run: RunSummary, name: str, out: Path) -> Path:
    """The site's copy of a run's file (``out/runs/<run id>/NAME``) when it exists, else the run's own file."""
    copy = Path(out) / "runs" / run.run_id / name
    return copy if copy.is_file() else run.run_dir / name


def copy_run_files(runs: list[RunSummary], out: Path) -> None:
    """Copy each run's :data:`RUN_FILES` into ``out/runs/<run id>/`` (atomic writes)."""
    for run in runs:
        for name in RUN_FILES:
            source = run.run_dir / name
            if source.is_file():
                atomic_write_bytes(Path(out) / "runs" / run.run_id / name, source.read_bytes())


def site_data(runs: list[RunSummary], out: Path, plot_files: list[Path], gallery_index: Path | None,
              title: str) -> dict:
    """Everything the page shows, as JSON-ready data (also written as ``site.json`` beside it)."""
    metrics = site_metrics(runs)
    protocol = runs[0].metrics.get("protocol") if runs else None
    styles = model_styles([run.label for run in runs])
    rows = []
    for run in runs:
        dataset = run.metrics.get("dataset", {})
        colour, marker = styles[run.label]
        rows.append({
            "model": run.label, "run_id": run.run_id, "kind": "oracle" if run.oracle else "measured",
            "dataset": f"{dataset.get('kind') or 'unknown'} / {dataset.get('split') or '?'}",
            "n": run.metrics.get("n_samples"), "settings": {name: run.settings.get(name, "?") for name in SETTING_NAMES},
            "colour": colour, "marker": MARKER_SYMBOLS.get(marker, marker),
            "values": {name: _cell(run.metrics.get("metrics", {}).get(name), name) for name in metrics},
            "manifest": _link(_run_file(run, "manifest.json", out), out),
            "metrics_json": _link(_run_file(run, "metrics.json", out), out),
        })
    return {
        "title": title,
        "metrics": [_metric_header(name, protocol) for name in metrics],
        "settings": list(SETTING_NAMES), "varying_settings": varying_settings(runs),
        "rows": rows,
        "plots": [_link(path, out) for path in plot_files if path.suffix == ".png"],
        "gallery": _link(gallery_index, out) if gallery_index is not None else None,
        "confidence_level": (protocol or {}).get("confidence_level", 0.95),
    }


CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.35em; margin-bottom: 0.2em; } h2 { font-size: 1.1em; margin-top: 1.6em; }
p.note { font-size: 0.85em; color: #555; max-width: 75em; }
.controls { display: flex; flex-wrap: wrap; gap: 0.8em 1.4em; align-items: center; font-size: 0.9em;
            background: #f6f6f6; padding: 0.6em 0.8em; border-radius: 6px; margin: 0.8em 0; }
.controls label { white-space: nowrap; }
.controls fieldset { border: 0; padding: 0; margin: 0; flex-basis: 100%; display: flex; flex-wrap: wrap; gap: 0.2em 0.9em; }
.scroll { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; font-size: 0.9em; }
th { background: #eee; padding: 5px 8px; cursor: pointer; user-select: none; text-align: left;
     vertical-align: bottom; white-space: nowrap; }
th .unit { display: block; font-weight: normal; font-size: 0.8em; color: #666; }
th.sorted-desc::after { content: " ▼"; } th.sorted-asc::after { content: " ▲"; }
td { padding: 4px 8px; border-top: 1px solid #ddd; white-space: nowrap; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.oracle td { color: #555; font-style: italic; }
.marker { display: inline-block; width: 1.2em; text-align: center; }
.links a { margin-right: 0.5em; font-size: 0.85em; }
.plots img { max-width: 100%; border: 1px solid #ddd; margin: 0.4em 0 1em; display: block; }
.count { color: #555; }
"""

SCRIPT = r"""
const data = JSON.parse(document.getElementById("site-data").textContent);
const state = {sort: data.metrics.length ? data.metrics[0].key : "model", descending: true,
               shown: new Set(data.metrics.map(m => m.key)), filters: {}};
if (data.metrics.length && data.metrics[0].higher_is_better === false) state.descending = false;
const el = (tag, attrs = {}, text) => { const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v); if (text !== undefined) node.textContent = text;
  return node; };
function columns() {
  const cols = [{key: "model", title: "model"}, {key: "kind", title: "kind"}, {key: "dataset", title: "dataset"}];
  for (const s of data.varying_settings) cols.push({key: "setting:" + s, title: s});
  cols.push({key: "n", title: "n", numeric: true});
  for (const m of data.metrics) if (state.shown.has(m.key)) cols.push({key: m.key, title: m.title, unit: m.unit,
                                                                          metric: m, numeric: true});
  cols.push({key: "links", title: "files", nosort: true});
  return cols;
}
function sortValue(row, key) {
  if (key.startsWith("setting:")) { const v = row.settings[key.slice(8)]; const n = parseFloat(v);
                                    return isNaN(n) ? v : n; }
  if (key in row.values) return row.values[key] ? row.values[key].value : null;
  return row[key];
}
function visible(row) {
  const f = state.filters;
  if (f.model && !row.model.toLowerCase().includes(f.model.toLowerCase())) return false;
  for (const key of ["kind", "dataset"]) if (f[key] && row[key] !== f[key]) return false;
  for (const s of data.settings) if (f["setting:" + s] && row.settings[s] !== f["setting:" + s]) return false;
  return true;
}
function render() {
  const cols = columns(); const table = document.getElementById("board");
  table.replaceChildren();
  const head = el("tr");
  for (const col of cols) {
    const th = el("th", {"data-key": col.key}, col.title);
    if (col.unit) th.appendChild(el("span", {class: "unit"}, col.unit));
    if (col.key === state.sort) th.className = state.descending ? "sorted-desc" : "sorted-asc";
    if (!col.nosort) th.addEventListener("click", () => {
      if (state.sort === col.key) state.descending = !state.descending;
      else { state.sort = col.key; state.descending = col.metric ? col.metric.higher_is_better !== false : false; }
      render(); });
    head.appendChild(th);
  }
  const thead = el("thead"); thead.appendChild(head); table.appendChild(thead);
  const rows = data.rows.filter(visible).sort((a, b) => {
    const x = sortValue(a, state.sort), y = sortValue(b, state.sort);
    if (x === null || x === undefined) return 1; if (y === null || y === undefined) return -1;
    const order = typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(String(y));
    return state.descending ? -order : order; });
  const body = el("tbody");
  for (const row of rows) {
    const tr = el("tr", {class: row.kind, "data-model": row.model});
    for (const col of cols) {
      const td = el("td");
      if (col.key === "model") { const mark = el("span", {class: "marker", title: "colour and marker in the plots"},
                                                 row.marker); mark.style.color = row.colour;
                                  td.appendChild(mark); td.appendChild(document.createTextNode(" " + row.model)); }
      else if (col.key === "links") { td.className = "links";
        td.appendChild(el("a", {href: row.manifest}, "manifest")); td.appendChild(el("a", {href: row.metrics_json}, "metrics"));
        if (data.gallery) td.appendChild(el("a", {href: data.gallery + "#model=" + encodeURIComponent(row.model)}, "gallery")); }
      else if (col.key.startsWith("setting:")) td.textContent = row.settings[col.key.slice(8)];
      else if (col.metric) { td.className = "num"; const v = row.values[col.key]; td.textContent = v ? v.text : "–"; }
      else { td.textContent = row[col.key] === null || row[col.key] === undefined ? "" : row[col.key];
             if (col.numeric) td.className = "num"; }
      tr.appendChild(td);
    }
    body.appendChild(tr);
  }
  table.appendChild(body);
  document.getElementById("count").textContent = rows.length + " of " + data.rows.length + " runs shown";
}
function select(name, values, label) {
  const wrap = el("label", {}, label + " "); const choice = el("select", {"data-filter": name});
  choice.appendChild(el("option", {value: ""}, "all"));
  for (const v of values) choice.appendChild(el("option", {value: v}, v));
  choice.addEventListener("change", () => { state.filters[name] = choice.value; render(); });
  wrap.appendChild(choice); return wrap;
}
function controls() {
  const box = document.getElementById("controls");
  const search = el("input", {type: "search", placeholder: "model name", "data-filter": "model"});
  search.addEventListener("input", () => { state.filters.model = search.value; render(); });
  const searchLabel = el("label", {}, "model "); searchLabel.appendChild(search); box.appendChild(searchLabel);
  const distinct = f => [...new Set(data.rows.map(f))].sort();
  box.appendChild(select("kind", distinct(r => r.kind), "kind"));
  box.appendChild(select("dataset", distinct(r => r.dataset), "dataset"));
  for (const s of data.settings) { const values = distinct(r => r.settings[s]);
                                   if (values.length > 1) box.appendChild(select("setting:" + s, values, s)); }
  const metrics = el("fieldset"); metrics.appendChild(el("span", {}, "metrics: "));
  for (const m of data.metrics) {
    const label = el("label"); const box2 = el("input", {type: "checkbox", "data-metric": m.key}); box2.checked = true;
    box2.addEventListener("change", () => { if (box2.checked) state.shown.add(m.key); else state.shown.delete(m.key);
                                           render(); });
    label.appendChild(box2); label.appendChild(document.createTextNode(" " + m.title + " ")); metrics.appendChild(label);
  }
  box.appendChild(metrics);
}
controls(); render();
"""


def render_site(data: dict) -> str:
    """The page: the data as JSON in the page, inline style and script, the plots, the notes."""
    level = round(100 * (data.get("confidence_level") or 0.95))
    payload = json.dumps(data, ensure_ascii=False, allow_nan=False).replace("</", "<\\/")
    plots = "".join(f'<img src="{html.escape(src)}" alt="{html.escape(Path(src).stem)}">' for src in data["plots"])
    gallery = (f'<p><a href="{html.escape(data["gallery"])}">Gallery</a>: input, target and each model\'s output '
               "side by side; choose models and findings there.</p>" if data.get("gallery") else "")
    settings = (f"Settings that differ between these runs are columns: {', '.join(data['varying_settings'])}."
                if data["varying_settings"] else "All runs share resolution, steps, precision and seed "
                                                 "(see each manifest).")
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">', '<link rel="icon" href="data:,">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(data['title'])}</title>", f"<style>{CSS}</style>", "</head>", "<body>",
        f"<h1>{html.escape(data['title'])}</h1>",
        f'<p class="note">Values on the leaderboard\'s scale (the unit under each header) with their {level}% '
        "bootstrap interval; click a header to sort (best first for a metric), filter with the controls. "
        f"Oracle rows (real target, exact answer) are in italics. {html.escape(settings)} Tables as Markdown, CSV "
        'and LaTeX: <a href="README.md">README.md</a>.</p>',
        '<div class="controls" id="controls"></div>', '<p class="count" id="count"></p>', '<div class="scroll"><table id="board"></table></div>',
        gallery, "<h2>Plots</h2>", f'<div class="plots">{plots or "<p>no plots written</p>"}</div>',
        f'<script type="application/json" id="site-data">{payload}</script>', f"<script>{SCRIPT}</script>",
        "</body>", "</html>", ""])


def write_site(runs: list[RunSummary], out: str | Path, plot_files: list[Path], gallery_index: Path | None,
               title: str) -> Path:
    """Write ``out/index.html``; returns its path."""
    out = Path(out)
    copy_run_files(runs, out)
    data = site_data(runs, out, plot_files, gallery_index, title)
    path = out / "index.html"
    atomic_write_text(path, render_site(data))
    return path
