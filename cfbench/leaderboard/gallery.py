"""A static HTML gallery of N samples: input | target | each run's output, its difference map |output - input|
(and guidance-map overlay), so input and target sit beside every output whatever the number of models.

The reader picks the models shown (``#model=NAME`` in the address shows one, as the leaderboard site links
it), the finding, and pages through large splits (25 samples a page by default) with a small inline script.
One folder that opens from disk with no server: ``index.html`` (inline CSS and script, no external
resource) and ``img/`` with 8-bit PNG thumbnails (``thumbnail`` pixels square; the run folders keep the
full 16-bit images). Every link is relative. Each sample row shows the instruction, the sample id, and
under each output the model's explanation when it gave one; under the target, the dataset's reference
explanation when there is one.

Guidance overlay: the model's output in grey with its guidance map (values in [0, 1]) in red on top,
alpha = 0.6 x guidance, as the InstructX2X figures show it. Models without guidance maps get no column.

Difference map: |output - input| in the colour map ``DIFFERENCE_CMAP`` (magma: perceptually uniform, readable
by colour-blind readers and in grey), on one scale for the whole page (0 to the largest difference shown,
written under the colour bar at the top), so an unchanged output is black and edits of different models
compare directly. The target column is named after the dataset's kind (a phantom's rendered follow-up, a
real later study).
"""

from __future__ import annotations

import hashlib
import html
import re
from pathlib import Path

import numpy as np
from PIL import Image

from cfbench.core.images import load_image, resize
from cfbench.core.storage import atomic_write_text
from cfbench.evaluation.results import open_run_dataset
from cfbench.leaderboard.table_model import RunSummary
from cfbench.runs.manifest import RunFiles
from cfbench.runs.store import read_results

DEFAULT_SAMPLES = 8
DEFAULT_THUMBNAIL = 192
OVERLAY_ALPHA = 0.6
DIFFERENCE_CMAP = "magma"
TARGET_TITLES = {
    "phantom": "target: phantom follow-up (rendered with the change, new pose and noise)",
    "mimic-edit-instruction": "target: real later study (MIMIC-CXR)",
    "nih-edit": "target: real later study (NIH ChestX-ray14)",
    "icg-cxr": "target: real follow-up study (ICG-CXR)",
}
"""Title of the target column per ``dataset.json`` kind; other kinds: "target: the pair's current image"."""


class GalleryError(RuntimeError):
    pass


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "x"


def thumbnail_name(sample_id: str, what: str) -> str:
    """The thumbnail's file name: readable, and collision-free (ids ``X`` and ``X_`` read the same once made
    safe, so a hash of the exact id is part of the name)."""
    digest = hashlib.sha256(sample_id.encode("utf-8", "surrogatepass")).hexdigest()[:10]
    return f"{_safe(sample_id)[:80]}-{digest}__{_safe(what)[:80]}.png"


def grey_thumbnail(image: np.ndarray, size: int) -> Image.Image:
    """float32 HxW in [0, 1] -> 8-bit grayscale PIL image, size x size."""
    small = resize(image, size)
    return Image.fromarray(np.round(np.clip(small, 0, 1) * 255).astype(np.uint8), mode="L")


def overlay_thumbnail(image: np.ndarray, guidance: np.ndarray, size: int, alpha: float = OVERLAY_ALPHA) -> Image.Image:
    """The image in grey with the guidance map in red (per-pixel alpha = alpha x guidance), RGB 8-bit."""
    grey = np.clip(resize(image, size), 0, 1)[..., None].repeat(3, axis=2)
    weight = (alpha * np.clip(resize(guidance, size), 0, 1))[..., None]
    red = np.array([1.0, 0.0, 0.0], np.float32)
    rgb = grey * (1 - weight) + red * weight
    return Image.fromarray(np.round(rgb * 255).astype(np.uint8), mode="RGB")


def difference_thumbnail(output: np.ndarray, image: np.ndarray, size: int, vmax: float) -> Image.Image:
    """|output - input| coloured with DIFFERENCE_CMAP on [0, vmax] (one scale for the page), RGB 8-bit."""
    from matplotlib import colormaps

    difference = np.abs(resize(output, size).astype(np.float64) - resize(image, size).astype(np.float64))
    rgb = colormaps[DIFFERENCE_CMAP](np.clip(difference / vmax, 0, 1))[..., :3]
    return Image.fromarray(np.round(rgb * 255).astype(np.uint8), mode="RGB")


def colour_bar(width: int = 256, height: int = 14) -> Image.Image:
    """The difference colour map from 0 (left) to the page's maximum (right)."""
    from matplotlib import colormaps

    row = colormaps[DIFFERENCE_CMAP](np.linspace(0, 1, width))[:, :3]
    return Image.fromarray(np.round(np.repeat(row[None], height, axis=0) * 255).astype(np.uint8), mode="RGB")


def _breakable(text: str) -> str:
    """HTML-escaped, with a line-break opportunity after '.', ':' and '@' (long plugin names wrap in headers)."""
    return re.sub(r"([.:@])", r"\1<wbr>", html.escape(text))


def target_title(kind: str | None) -> str:
    return TARGET_TITLES.get(kind or "", "target: the pair's current image")


def pick_samples(sample_ids: list[str], n: int) -> list[str]:
    """n ids spread evenly over the list (deterministic; all of them when n >= len)."""
    if n >= len(sample_ids):
        return list(sample_ids)
    positions = np.linspace(0, len(sample_ids) - 1, n).round().astype(int)
    return [sample_ids[p] for p in sorted(set(positions.tolist()))]


def _finished(run: RunSummary) -> dict[str, dict]:
    return {record["sample_id"]: record for record in read_results(run.run_dir)}


CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.3em; } p.note { font-size: 0.85em; color: #555; max-width: 70em; }
table { border-collapse: collapse; }
th { font-size: 0.85em; padding: 4px; vertical-align: bottom; background: #f3f3f3; max-width: 12em;
     overflow-wrap: anywhere; }
td { padding: 4px; vertical-align: top; text-align: center; border-top: 1px solid #ddd; }
td.instruction { text-align: left; font-size: 0.9em; background: #fafafa; padding-top: 0.8em; }
img { display: block; margin: 0 auto; image-rendering: auto; }
.explanation { font-size: 0.75em; max-width: 14em; text-align: left; color: #333; margin: 0.3em auto 0; }
.missing { font-size: 0.75em; color: #999; }
code { font-size: 0.95em; }
th code { font-size: 0.9em; font-weight: normal; }
p.note code { font-size: 1.1em; }
.sample-id { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 1em; color: #333; }
.scale { display: flex; align-items: center; gap: 0.6em; font-size: 0.9em; margin: 0.6em 0 1em; }
.scale img { display: inline-block; margin: 0; border: 1px solid #999; }
.controls { display: flex; flex-wrap: wrap; gap: 0.6em 1.2em; align-items: center; font-size: 0.9em;
            background: #f6f6f6; padding: 0.5em 0.8em; border-radius: 6px; margin: 0.6em 0; }
.controls fieldset { border: 0; margin: 0; padding: 0; } .controls label { white-space: nowrap; margin-right: 0.6em; }
[hidden] { display: none !important; }
.instruction-text { width: 0; min-width: 100%; }  /* wraps to the image columns instead of widening them */
"""


PAGE_SIZES = (10, 25, 50, 100)


def _controls(labels: list[str], findings: list[str], n_samples: int) -> str:
    """The reader's choices: which models, which finding, how many samples a page (no request leaves the page)."""
    models = "".join(f'<label><input type="checkbox" data-pick-model="{index}" checked> {html.escape(label)}</label>'
                     for index, label in enumerate(labels))
    options = "".join(f'<option value="{html.escape(f)}">{html.escape(f)}</option>' for f in findings)
    sizes = "".join(f'<option value="{size}"{" selected" if size == PAGE_SIZES[1] else ""}>{size}</option>'
                    for size in PAGE_SIZES)
    return ('<div class="controls"><fieldset><span>models:</span> ' + models + "</fieldset>"
            f'<label>finding <select id="pick-finding"><option value="">all</option>{options}</select></label>'
            f'<label>per page <select id="page-size">{sizes}</select></label>'
            '<button type="button" id="previous-page">&larr; previous</button><span id="page-info"></span>'
            f'<button type="button" id="next-page">next &rarr;</button> <span class="count">{n_samples} samples</span>'
            "</div>")


SCRIPT = r"""
const samples = Array.from(document.querySelectorAll("tbody.sample"));
const picks = Array.from(document.querySelectorAll("[data-pick-model]"));
const finding = document.getElementById("pick-finding"), size = document.getElementById("page-size");
let page = 0;
const wanted = decodeURIComponent((location.hash.match(/model=([^&]*)/) || [])[1] || "");
if (wanted) for (const box of picks) box.checked = box.parentElement.textContent.trim() === wanted;
function update() {
  for (const box of picks) for (const cell of document.querySelectorAll('[data-model="' + box.dataset.pickModel + '"]'))
    cell.hidden = !box.checked;
  const matching = samples.filter(s => !finding.value || s.dataset.findings.split("|").includes(finding.value));
  const perPage = parseInt(size.value, 10), pages = Math.max(1, Math.ceil(matching.length / perPage));
  page = Math.min(page, pages - 1);
  for (const s of samples) s.hidden = true;
  matching.slice(page * perPage, (page + 1) * perPage).forEach(s => { s.hidden = false; });
  document.getElementById("page-info").textContent = " page " + (page + 1) + " of " + pages + " (" +
    matching.length + " samples) ";
}
for (const box of picks) box.addEventListener("change", update);
finding.addEventListener("change", () => { page = 0; update(); });
size.addEventListener("change", () => { page = 0; update(); });
document.getElementById("previous-page").addEventListener("click", () => { page = Math.max(0, page - 1); update(); });
document.getElementById("next-page").addEventListener("click", () => { page += 1; update(); });
update();
"""


def write_gallery(runs: list[RunSummary], out: str | Path, n_samples: int = DEFAULT_SAMPLES,
                  thumbnail: int = DEFAULT_THUMBNAIL, title: str = "cfbench gallery") -> Path:
    """Write out/index.html and out/img/*.png for n_samples samples finished in every run; returns index.html.

    The input and target images come from the dataset of the first run (its CSV must be unchanged);
    runs made on another dataset are left out and listed in the page."""
    if not runs:
        raise GalleryError("no runs to show")
    out = Path(out)
    images_dir = out / "img"
    images_dir.mkdir(parents=True, exist_ok=True)
    for old in images_dir.glob("*.png"):
        old.unlink()
    _, dataset = open_run_dataset(runs[0].run_dir)
    csv_sha = runs[0].metrics.get("run", {}).get("dataset_csv_sha256")
    shown = [run for run in runs if run.metrics.get("run", {}).get("dataset_csv_sha256") == csv_sha]
    left_out = [run for run in runs if run not in shown]
    finished = {run.label: _finished(run) for run in shown}
    common = [s.sample_id for s in dataset if all(s.sample_id in done for done in finished.values())]
    if not common:
        raise GalleryError("no sample is finished in every run")
    chosen = pick_samples(common, n_samples)
    resolution = dataset.resolution
    with_guidance = {run.label: any(finished[run.label][s].get("has_guidance") for s in chosen) for run in shown}
    outputs = {(run.label, sample_id): load_image(RunFiles(run.run_dir).image(sample_id), resolution)
               for run in shown for sample_id in chosen}
    inputs = {sample_id: dataset.past_image(dataset[sample_id]) for sample_id in chosen}
    largest = max(float(np.abs(resize(out_image, thumbnail).astype(np.float64)
                               - resize(inputs[sample_id], thumbnail).astype(np.float64)).max())
                  for (_, sample_id), out_image in outputs.items())
    vmax = largest if largest > 0 else 1.0
    colour_bar().save(images_dir / "difference_scale.png", optimize=True)

    def write(image: Image.Image, sample_id: str, what: str) -> str:
        name = thumbnail_name(sample_id, what)
        image.save(images_dir / name, optimize=True)
        return f"img/{name}"

    def img(src: str, alt: str) -> str:
        return (f'<img src="{html.escape(src)}" alt="{html.escape(alt)}" width="{thumbnail}" '
                f'height="{thumbnail}" loading="eager">')

    header = ["<th>input</th>", f"<th>{html.escape(target_title(dataset.info.get('kind')))}</th>"]
    for index, run in enumerate(shown):
        label = _breakable(run.label)
        model = f'data-model="{index}"'
        header.append(f"<th {model}>{label}<br><code>{_breakable(run.run_id)}</code></th>")
        header.append(f'<th class="difference" {model}>{label}<br>|output &minus; input|</th>')
        if with_guidance[run.label]:
            header.append(f"<th {model}>{_breakable(run.label)}<br>guidance map overlay</th>")
    width = len(header)
    body = []
    finding_names = sorted({op.finding for sample_id in chosen for op in dataset[sample_id].operations if op.finding})
    for position, sample_id in enumerate(chosen):
        sample = dataset[sample_id]
        operations = ", ".join(sorted({op.op for op in sample.operations})) or "none"
        findings = "|".join(sorted({op.finding for op in sample.operations if op.finding}))
        body.append(f'<tbody class="sample" data-position="{position}" data-findings="{html.escape(findings)}">')
        body.append(f'<tr><td class="instruction" colspan="{width}"><div class="instruction-text">'
                    f'<b>{html.escape(sample.instruction)}</b> &nbsp;&middot; sample <span class="sample-id">'
                    f"{html.escape(sample_id)}</span> &middot; operations: {html.escape(operations)}</div></td></tr>")
        target = img(write(grey_thumbnail(dataset.current_image(sample), thumbnail), sample_id, "target"), "target")
        if sample.reference_explanation:
            target += f'<p class="explanation">reference: {html.escape(sample.reference_explanation)}</p>'
        cells = [f"<td>{img(write(grey_thumbnail(inputs[sample_id], thumbnail), sample_id, 'input'), 'input')}</td>",
                 f"<td>{target}</td>"]
        for index, run in enumerate(shown):
            record = finished[run.label][sample_id]
            output = outputs[(run.label, sample_id)]
            tag = f"{index:02d}_{run.label}"
            model = f'data-model="{index}"'
            cell = img(write(grey_thumbnail(output, thumbnail), sample_id, tag), f"{run.label} output")
            if record.get("explanation"):
                cell += f'<p class="explanation">{html.escape(record["explanation"])}</p>'
            cells.append(f"<td {model}>{cell}</td>")
            difference = difference_thumbnail(output, inputs[sample_id], thumbnail, vmax)
            cells.append(f'<td class="difference" {model}>'
                         f'{img(write(difference, sample_id, tag + "_difference"), run.label + " difference")}</td>')
            if with_guidance[run.label]:
                guidance_path = RunFiles(run.run_dir).guidance_map(sample_id)
                if record.get("has_guidance") and guidance_path.is_file():
                    overlay = overlay_thumbnail(output, load_image(guidance_path, resolution), thumbnail)
                    cells.append(f"<td {model}>{img(write(overlay, sample_id, tag + '_guidance'), run.label + ' guidance')}</td>")
                else:
                    cells.append(f'<td {model}><span class="missing">no guidance map</span></td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
        body.append("</tbody>")
    controls = _controls([run.label for run in shown], finding_names, len(chosen))
    notes = [f"{len(chosen)} of {len(common)} samples finished in every run (spread evenly over the split "
             f"<code>{html.escape(dataset.split)}</code>), {thumbnail} px 8-bit thumbnails; the run folders hold "
             "the full-resolution 16-bit images."]
    notes.append("Difference maps: |output &minus; input| per pixel on one colour scale for the whole page "
                 "(black: unchanged).")
    if any(with_guidance.values()):
        notes.append(f"Guidance overlay: the output in grey, the guidance map in red (alpha = {OVERLAY_ALPHA} x "
                     "guidance).")
    if left_out:
        notes.append("Left out (made on another dataset): " + ", ".join(html.escape(r.label) for r in left_out))
    page = "\n".join([
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">', '<link rel="icon" href="data:,">',
        f"<title>{html.escape(title)}</title>", f"<style>{CSS}</style>", "</head>", "<body>",
        f"<h1>{html.escape(title)}</h1>", *[f'<p class="note">{note}</p>' for note in notes],
        '<div class="scale">|output &minus; input|: <span>0</span>'
        f'<img src="img/difference_scale.png" alt="difference colour scale" width="256" height="14">'
        f'<span>{vmax:.3f}</span> <span class="note">(pixel intensity, images in [0, 1])</span></div>',
        controls, "<table>", "<thead><tr>" + "".join(header) + "</tr></thead>", *body, "</table>",
        f"<script>{SCRIPT}</script>", "</body>", "</html>", ""])
    index_path = out / "index.html"
    atomic_write_text(index_path, page)
    return index_path
