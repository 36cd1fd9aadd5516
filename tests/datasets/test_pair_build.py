"""The pair engine: corrupt and missing images are recorded with their path, good pairs are written."""

import numpy as np
from PIL import Image

from cfbench.core.images import load_image
from cfbench.datasets.pair_engine import PairJob, PairSettings, process_pairs, read_outcomes
from cfbench.phantom.render import render_pair
from cfbench.phantom.scenario import sample_pair


def test_bad_images_are_recorded_and_good_ones_written(tmp_path):
    rendered = render_pair(sample_pair(3), 64)
    for name, image in (("past.png", rendered.past), ("current.png", rendered.current)):
        Image.fromarray((image * 255).round().astype(np.uint8)).save(tmp_path / name)
    (tmp_path / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    jobs = [PairJob("good", str(tmp_path / "past.png"), str(tmp_path / "current.png"), "p", "c"),
            PairJob("corrupt", str(tmp_path / "past.png"), str(tmp_path / "corrupt.jpg"), "p", "x"),
            PairJob("missing", str(tmp_path / "nowhere.png"), str(tmp_path / "current.png"), "n", "y")]
    outcomes = process_pairs(jobs, tmp_path / "out", PairSettings(resolution=32, register=False), progress=False)
    assert outcomes["good"].status == "written" and outcomes["good"].mutual_information is None
    assert outcomes["corrupt"].status == "failed" and str(tmp_path / "corrupt.jpg") in outcomes["corrupt"].error
    assert outcomes["missing"].status == "failed" and str(tmp_path / "nowhere.png") in outcomes["missing"].error
    assert read_outcomes(tmp_path / "out") == outcomes
    written = load_image(tmp_path / "out" / "current" / "c.png")
    assert written.shape == (32, 32) and np.abs(written - load_image(tmp_path / "current.png", 32)).max() < 1e-4
    assert not (tmp_path / "out" / "current" / "x.png").exists()


def test_a_pair_that_cannot_be_registered_fails_alone(tmp_path):
    rendered = render_pair(sample_pair(3), 64)
    for name, image in (("past.png", rendered.past), ("current.png", rendered.current),
                        ("blank.png", np.zeros_like(rendered.current))):
        Image.fromarray((image * 255).round().astype(np.uint8)).save(tmp_path / name)
    jobs = [PairJob("blank", str(tmp_path / "past.png"), str(tmp_path / "blank.png"), "p", "b"),
            PairJob("good", str(tmp_path / "past.png"), str(tmp_path / "current.png"), "p", "c")]
    outcomes = process_pairs(jobs, tmp_path / "out", PairSettings(resolution=64), progress=False)
    assert outcomes["blank"].status == "failed"
    assert str(tmp_path / "blank.png") in outcomes["blank"].error and "registering" in outcomes["blank"].error
    assert outcomes["good"].status in ("written", "discarded") and outcomes["good"].mutual_information < 0
