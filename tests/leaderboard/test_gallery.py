"""The HTML gallery: files and links on disk, and the page as headless Chromium renders it from file://
(every image decoded, no console error, a screenshot with content; the driver is tests/helpers/browser.py).
"""

from __future__ import annotations

import io
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cfbench.leaderboard.gallery import write_gallery
from cfbench.leaderboard.table_model import load_runs
from tests.helpers.browser import find_chromium, render
from tests.helpers.runs import make_evaluated_runs


@pytest.fixture(scope="module")
def gallery(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("gallery")
    runs = load_runs(list(make_evaluated_runs(root, n=12, size=64).values()))
    return write_gallery(runs, root / "gallery", n_samples=5, thumbnail=96, title="test gallery")


SCALE = "img/difference_scale.png"


def image_sources(page: str) -> list[str]:
    return re.findall(r'<img src="([^"]+)"', page)


def test_gallery_is_one_self_contained_folder(gallery):
    page = gallery.read_text()
    sources = image_sources(page)
    # 5 samples x (input, 3 outputs, 3 difference maps, 1 guidance overlay for the model that gives maps,
    # target) and the colour bar of the difference maps
    assert len(sources) == 5 * 9 + 1
    for source in sources:
        assert source.startswith("img/") and not source.startswith("/")
        path = gallery.parent / source
        with Image.open(path) as image:
            expected = (256, 14) if source == SCALE else (96, 96)
            assert image.format == "PNG" and image.size == expected and image.mode in ("L", "RGB")
    assert not re.search(r"<script src|https?://|<link rel=\"stylesheet\"", page)
    assert "edited: " in page  # the model's explanation under its output
    assert page.count("guidance map overlay") == 1
    overlays = [gallery.parent / s for s in sources if s.endswith("_guidance.png")]
    assert len(overlays) == 5
    with Image.open(overlays[0]) as image:
        rgb = np.asarray(image).astype(int)
    red = (rgb[..., 0] - rgb[..., 1]) > 40
    assert red[24:72, 24:72].mean() > 0.9 and red[:16].mean() == 0  # the model's central guidance square
    assert sum(p.stat().st_size for p in (gallery.parent / "img").iterdir()) < 1_000_000


def test_difference_maps_title_ids_and_target_label(gallery):
    """|output - input| on one colour scale: black for the unchanged identity output, coloured where the noisy
    model edited; the page is titled once, ids are readable, the target column is named for phantoms."""
    from matplotlib import colormaps

    page = gallery.read_text()
    sources = image_sources(page)
    assert page.count("|output &minus; input|</th>") == 3
    black = np.round(np.array(colormaps["magma"](0.0)[:3]) * 255)
    identity = [s for s in sources if s.endswith("_identity_difference.png")]
    noisy = [s for s in sources if "noisy-edit_difference" in s]
    assert len(identity) == len(noisy) == 5
    for source in identity:
        with Image.open(gallery.parent / source) as image:
            assert (np.abs(np.asarray(image).astype(float) - black) <= 1).all()  # unchanged: all black
    with Image.open(gallery.parent / noisy[0]) as image:
        assert (np.abs(np.asarray(image).astype(float) - black).sum(axis=2) > 30).mean() > 0.1  # the edit shows
    assert re.search(r'\|output &minus; input\|: <span>0</span><img src="img/difference_scale.png"[^>]*>'
                     r'<span>\d\.\d{3}</span>', page)
    assert "<h1>test gallery</h1>" in page and page.count("test gallery") == 2  # <title> and <h1>, nothing doubled
    assert page.count('<span class="sample-id">') == 5
    assert "target: phantom follow-up" in page and "real later study" not in page


needs_chromium = pytest.mark.skipif(
    find_chromium() is None,
    reason="no Chromium binary (chromium / google-chrome on PATH, or CFBENCH_CHROMIUM); install Debian's "
           "`chromium` package, as .ci/run does")


@needs_chromium
def test_gallery_renders_in_headless_chromium(gallery, tmp_path):
    images, problems, screenshot = render(gallery, tmp_path / "profile")
    assert len(images) == len(image_sources(gallery.read_text())) == 46
    broken = [src for src, complete, width, height in images if not complete or width == 0 or height == 0]
    assert broken == []
    assert all(width == (256 if src == SCALE else 96) for src, _, width, _ in images)
    assert problems == []
    (tmp_path / "screenshot.png").write_bytes(screenshot)
    with Image.open(io.BytesIO(screenshot)) as shot:
        assert shot.size == (1400, 900)
        pixels = np.asarray(shot.convert("L"))
        rgb = np.asarray(shot.convert("RGB")).astype(int)
    assert pixels.std() > 20 and (pixels < 128).mean() > 0.05  # thumbnails and text drawn, not a blank page
    # the difference column as the reader sees it: on screen, beside its output, coloured where the model edited
    sources = image_sources(gallery.read_text())
    noisy = next(s for s in sources if "noisy-edit_difference" in s)
    output = noisy.replace("_difference", "")
    x, y, width, height = (round(v) for v in render.rects[noisy])
    assert width == height == 96 and 0 <= x and x + width <= 1400 and y + height <= 900
    assert abs(render.rects[output][1] - y) < 1 and render.rects[output][0] < x  # same row, right of the output
    crop = rgb[y + 2:y + height - 2, x + 2:x + width - 2]
    assert (np.abs(crop[..., 0] - crop[..., 2]) > 30).mean() > 0.1  # magma colours, not a grey thumbnail
    scale = render.rects[SCALE]
    assert 256 <= scale[2] <= 258 and scale[1] + scale[3] <= 900  # the colour bar is on the first screen


@needs_chromium
def test_the_browser_check_catches_a_missing_image(gallery, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(gallery.parent, copy)
    missing = image_sources(gallery.read_text())[3]
    (copy / missing).unlink()
    images, problems, _ = render(copy / "index.html", tmp_path / "profile")
    assert [src for src, _, width, _ in images if width == 0] == [missing]
    assert any("ERR_FILE_NOT_FOUND" in problem for problem in problems)
