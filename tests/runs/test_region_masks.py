"""--region-masks pseudo: each request carries the pseudo mask of its instruction's findings, and the run
config records it (a run without it keeps the config it had before the option existed)."""

from __future__ import annotations

import numpy as np

from cfbench.cli import main
from cfbench.core.images import load_image
from cfbench.datasets.edit_dataset import EditDataset
from cfbench.datasets.pseudo_masks import default_pseudo_masks
from cfbench.runs.manifest import RunManifest

MODEL = "tests.helpers.fake_models:RegionEchoModel"


def test_pseudo_masks_reach_the_adapter_through_the_request(random_dataset, tmp_path):
    out = tmp_path / "run"
    assert main(["--quiet", "generate", "--model", MODEL, "--split", "holdout", "--data", str(random_dataset),
                 "--resolution", "32", "--out", str(out), "--region-masks", "pseudo"]) == 0
    dataset = EditDataset(random_dataset, "holdout", 32)
    masks = default_pseudo_masks(random_dataset, 32)
    for sample in dataset:
        expected = masks.mask_for(sample.operations, 32)
        assert 0 < expected.mean() < 1
        assert np.array_equal(load_image(out / "images" / f"{sample.sample_id}.png", 32) > 0.5, expected)
    assert RunManifest.read(out).config.region_masks == "pseudo"
    plain = tmp_path / "plain"
    assert main(["--quiet", "generate", "--model", MODEL, "--split", "holdout", "--data", str(random_dataset),
                 "--resolution", "32", "--out", str(plain)]) == 0
    assert np.allclose(load_image(plain / "images" / "s000.png", 32), 0.5, atol=1e-3)
    assert "region_masks" not in RunManifest.read(plain).config.to_dict()
