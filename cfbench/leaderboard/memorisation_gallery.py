"""The memorisation page of the gallery: per run evaluated with ``--memorisation``, its worst cases (the outputs
with the smallest distance ratio to the training set) beside the nearest training image and the input.

``gallery/memorisation.html`` and thumbnails in ``gallery/img/memorisation__*.png``, from each run folder's
``memorisation.json`` and ``memorisation/<sample>.png`` (written by :mod:`cfbench.evaluation.memorisation`).
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from cfbench.core.images import load_image
from cfbench.core.storage import atomic_write_text
from cfbench.evaluation.memorisation import MEMORISATION_FILE
from cfbench.evaluation.results import open_run_dataset
from cfbench.leaderboard.gallery import CSS, _safe, grey_thumbnail
from cfbench.leaderboard.table_model import RunSummary
from cfbench.runs.store import load_generated


def write_memorisation_page(runs: list[RunSummary], out: str | Path, thumbnail: int = 160,
                            title: str = "Memorisation: worst cases") -> Path | None:
    """``out/memorisation.html`` (None when no run has ``memorisation.json``)."""
    out = Path(out)
    sections = []
    for run in runs:
        record_path = Path(run.run_dir) / MEMORISATION_FILE
        if not record_path.is_file():
            continue
        record = json.loads(record_path.read_text(encoding="utf-8"))
        _, dataset = open_run_dataset(Path(run.run_dir), None)
        resolution = dataset.resolution
        rows = []
        for case in record.get("worst_cases", []):
            sample_id = case["sample_id"]
            pictures = {"output": load_generated(run.run_dir, sample_id, resolution),
                        "nearest training image": load_image(Path(run.run_dir) / case["image"], resolution),
                        "input": dataset.past_image(dataset[sample_id])}
            cells = []
            for what, picture in pictures.items():
                name = f"memorisation__{_safe(run.label)}__{_safe(sample_id)}__{_safe(what)}.png"
                (out / "img").mkdir(parents=True, exist_ok=True)
                grey_thumbnail(picture, thumbnail).save(out / "img" / name, optimize=True)
                cells.append(f'<td><img src="img/{name}" alt="{html.escape(what)}" width="{thumbnail}" '
                             f'height="{thumbnail}"><br>{html.escape(what)}</td>')
            ratio = next(value for key, value in case.items() if key.startswith("nn_ratio_"))
            rows.append(f'<tr><td class="instruction" colspan="3">sample <code>{html.escape(sample_id)}</code> '
                        f"&middot; nearest training image <code>{html.escape(case['nearest_training_image'])}</code>"
                        f" &middot; {html.escape(record.get('ranked_by', 'nn_ratio'))} = {ratio:.3f}</td></tr>")
            rows.append("<tr>" + "".join(cells) + "</tr>")
        sections.append(f"<h2>{html.escape(run.label)} <code>{html.escape(run.run_id)}</code></h2>"
                        f'<p class="note">index: {html.escape(record.get("source", ""))}</p>'
                        "<table><tbody>" + "".join(rows) + "</tbody></table>")
    if not sections:
        return None
    note = ("Per run, the outputs with the smallest ratio of their distance to the nearest training image over "
            "their input's (near 0: the output is a training image), beside that training image and the input.")
    page = "\n".join(["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
                      '<link rel="icon" href="data:,">', f"<title>{html.escape(title)}</title>",
                      f"<style>{CSS}</style>", "</head>", "<body>", f"<h1>{html.escape(title)}</h1>",
                      f'<p class="note">{note}</p>', *sections, "</body>", "</html>", ""])
    path = out / "memorisation.html"
    atomic_write_text(path, page)
    return path
