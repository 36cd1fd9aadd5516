"""The leaderboard site (index.html): its data, its links, and the page as headless Chromium renders it
(sorting, filtering, choosing metrics; the gallery's model and finding choices and paging)."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cfbench.leaderboard.site import site_data, render_site
from cfbench.leaderboard.table_model import load_runs
from cfbench.leaderboard.write import write_leaderboard
from tests.helpers.browser import find_chromium, render
from tests.helpers.runs import make_evaluated_runs

SCREENSHOTS = None  # set CFBENCH_SCREENSHOTS=DIR to keep the screenshots for a look


@pytest.fixture(scope="module")
def board(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("site")
    runs = make_evaluated_runs(root, n=12, size=64)
    out = root / "board"
    write_leaderboard(list(runs.values()), out, gallery_samples=12, thumbnail=64, title="test board",
                      breakdown_resamples=20)
    return out


def _page_data(page: str) -> dict:
    payload = re.search(r'<script type="application/json" id="site-data">(.*?)</script>', page, re.S).group(1)
    return json.loads(payload.replace("<\\/", "</"))


def test_site_is_self_contained_and_links_every_run(board):
    page = (board / "index.html").read_text()
    assert not re.search(r"<script src|https?://|<link rel=\"stylesheet\"", page)
    data = _page_data(page)
    assert [row["model"] for row in data["rows"]] == ["identity", "noisy-edit",
                                                      "ground-truth"]
    assert [row["kind"] for row in data["rows"]] == ["measured", "measured", "oracle"]
    for row in data["rows"]:
        for link in (row["manifest"], row["metrics_json"]):
            assert not link.startswith("/") and (board / link).resolve().is_file()
            assert link.startswith("runs/")  # a copy inside the folder: the links survive moving it
        assert row["dataset"] == "phantom / holdout" and row["settings"]["resolution"] == "64 px"
    assert (board / data["gallery"]).is_file() and all((board / src).is_file() for src in data["plots"])
    assert len(data["plots"]) >= 3
    metrics = [m["key"] for m in data["metrics"]]
    assert metrics[:3] == ["cfbench_score", "pathology_mean_auroc", "race_auroc"] and "/" not in "".join(metrics)
    patho = data["rows"][0]["values"]["pathology_mean_auroc"]
    measured = json.loads((board.parent / "runs" / "identity" / "metrics.json").read_text())
    assert patho["value"] == pytest.approx(100 * measured["metrics"]["pathology_mean_auroc"]["value"])  # x 100
    assert data["varying_settings"] == []  # all runs share their settings: no settings columns


def test_the_default_score_comes_first_and_differing_settings_become_columns(board, tmp_path):
    runs = load_runs([board.parent / "runs" / name for name in ("identity", "NoisyEditModel")])
    runs[1].settings["steps"] = "100"
    runs[1].metrics["metrics"]["cfbench_score"] = {"value": 61.5, "ci_low": 58.0, "ci_high": 64.9, "terms": {}}
    del runs[0].metrics["metrics"]["cfbench_score"]  # a run evaluated before the score existed
    data = site_data(runs, tmp_path, [], None, "t")
    assert data["metrics"][0]["key"] == "cfbench_score" and data["varying_settings"] == ["steps"]
    assert data["rows"][1]["values"]["cfbench_score"]["text"].startswith("61.5")
    assert data["rows"][0]["values"]["cfbench_score"] is None
    assert "All runs share" not in render_site(data)


needs_chromium = pytest.mark.skipif(find_chromium() is None, reason="no Chromium binary (chromium / google-chrome "
                                    "on PATH, or CFBENCH_CHROMIUM); install Debian's `chromium` package")


def _keep(name: str, screenshot: bytes, tmp_path: Path) -> Image.Image:
    import os

    folder = Path(os.environ.get("CFBENCH_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(screenshot)
    return Image.open(io.BytesIO(screenshot))


ROW_MODELS = "JSON.stringify(Array.from(document.querySelectorAll('#board tbody tr')).map(r => r.dataset.model))"


@needs_chromium
def test_site_sorts_filters_and_renders_in_headless_chromium(board, tmp_path):
    click = ("document.querySelector('#board th[data-key=\"{key}\"]').click(), " + ROW_MODELS)
    actions = [ROW_MODELS,  # the first metric (cfbench_score, higher is better), best first
               click.format(key="mae_to_true_counterfactual"),  # lower is better: best first
               click.format(key="mae_to_true_counterfactual"),  # again: the other way
               "(() => { const s = document.querySelector('select[data-filter=\"kind\"]'); s.value = 'oracle';"
               " s.dispatchEvent(new Event('change')); return " + ROW_MODELS + "; })()",
               "(() => { const s = document.querySelector('select[data-filter=\"kind\"]'); s.value = '';"
               " s.dispatchEvent(new Event('change'));"
               " const box = document.querySelector('input[data-metric=\"fid\"]'); box.click();"
               " return Array.from(document.querySelectorAll('#board th')).map(h => h.dataset.key); })()"]
    images, problems, screenshot = render(board / "index.html", tmp_path / "profile", actions)
    assert problems == []
    assert all(complete and width > 0 for _, complete, width, _ in images)
    data = _page_data((board / "index.html").read_text())
    values = {row["model"]: row["values"] for row in data["rows"]}

    def order(metric, best_first_high):
        return sorted(values, key=lambda m: values[m][metric]["value"], reverse=best_first_high)

    first, mae_best, mae_worst, oracle_only, headers = (json.loads(v) if isinstance(v, str) else v
                                                        for v in render.values)
    assert first == order("cfbench_score", True)
    assert mae_best == order("mae_to_true_counterfactual", False) and mae_worst == mae_best[::-1]
    assert oracle_only == ["ground-truth"]
    assert "fid" not in headers and "pathology_mean_auroc" in headers and "links" in headers
    shot = _keep("site.png", screenshot, tmp_path)
    pixels = np.asarray(shot.convert("L"))
    assert shot.size == (1400, 900) and pixels.std() > 20 and (pixels < 128).mean() > 0.02


@needs_chromium
def test_gallery_lets_the_reader_pick_models_and_findings_and_pages(board, tmp_path):
    gallery = board / "gallery" / "index.html"
    visible = ("JSON.stringify([Array.from(document.querySelectorAll('tbody.sample')).filter(s => !s.hidden).length,"
               " Array.from(document.querySelectorAll('thead th')).filter(h => !h.hidden).length])")
    pick = ("(() => {{ const s = document.getElementById('{id}'); s.value = '{value}';"
            " s.dispatchEvent(new Event('change')); return " + visible + "; }})()")
    findings = sorted({f for f in re.findall(r'data-findings="([^"]*)"', gallery.read_text()) for f in f.split("|")} - {""})
    actions = [visible, pick.format(id="page-size", value="10"),
               "(document.getElementById('next-page').click(), " + visible + ")",
               pick.format(id="page-size", value="25"), pick.format(id="pick-finding", value=findings[0])]
    images, problems, screenshot = render(gallery, tmp_path / "profile", actions, url_suffix="#model=identity")
    assert problems == [] and all(complete and width > 0 for _, complete, width, _ in images)
    counts = [json.loads(v) for v in render.values]
    # #model=identity: input, target and identity's output and difference map; the other models hidden
    assert counts[0] == [12, 4]
    assert counts[1][0] == 10 and counts[2][0] == 2 and counts[3][0] == 12  # pages of 10: 10 + 2
    page = gallery.read_text()
    expected = sum(findings[0] in block.split("|") for block in re.findall(r'data-findings="([^"]*)"', page))
    assert 0 < counts[4][0] == expected < 12
    shot = _keep("gallery.png", screenshot, tmp_path)
    assert np.asarray(shot.convert("L")).std() > 20
    # the target sits beside the input, left of every model column
    rects = render.rects
    target = next(src for src in rects if src.endswith("__target.png"))
    source = next(src for src in rects if src.endswith("__input.png"))
    outputs = [rect[0] for src, rect in rects.items() if src.endswith("_identity.png") and rect[2] > 0]
    assert rects[source][0] < rects[target][0] < min(outputs)
    assert rects[target][0] + 64 < 1400 / 2  # on the first screen, not off to the right
