import numpy as np
import pandas as pd
import pytest

from cfbench.evaluate import evaluate_run
from cfbench.findings import Operation
from cfbench.pseudo_masks import PseudoMasks, boxes_to_masks, nih_pseudo_masks
from cfbench.runner import RunSettings, generate


def test_union_of_boxes_rescaled():
    boxes = pd.DataFrame({"finding": ["cardiomegaly", "cardiomegaly", "pleural effusion"],
                          "x": [100, 300, 0], "y": [200, 200, 900], "w": [100, 100, 1024], "h": [100, 300, 124]})
    masks = boxes_to_masks(boxes, 1024, 256, "test")
    heart = masks.masks["cardiomegaly"]
    assert heart[50:75, 25:50].all() and heart[50:125, 75:100].all()  # both boxes at 1/4 scale
    assert heart.sum() == 25 * 25 + 25 * 75
    assert masks.masks["pleural effusion"][225:, :].all() and masks.masks["pleural effusion"].sum() == 31 * 256
    either = masks.mask_for([Operation("add", "cardiomegaly"), Operation("remove", "pleural effusion")])
    assert np.array_equal(either, heart | masks.masks["pleural effusion"])
    assert masks.mask_for([Operation("add", "edema")]).all()  # no known finding: whole image
    assert masks.mask_for([Operation("add", "cardiomegaly")], size=128).sum() == pytest.approx(heart.sum() / 4, rel=0.05)


def test_nih_masks_from_the_torchxrayvision_wheel(tmp_path):
    masks = nih_pseudo_masks(512)
    assert {"atelectasis", "cardiomegaly", "pleural effusion", "pneumothorax"} <= set(masks.masks)
    heart = masks.masks["cardiomegaly"]
    assert heart[300, 256] and not heart[10, 10]  # central-lower, not the corner
    assert "PA" in masks.source
    masks.save(tmp_path / "masks.npz")
    loaded = PseudoMasks.load(tmp_path / "masks.npz")
    assert loaded.size == 512 and all(np.array_equal(loaded.masks[k], masks.masks[k]) for k in masks.masks)


def test_locality_on_real_layout_data(random_dataset, tmp_path):
    settings = RunSettings(model="identity", split="holdout", data_dir=random_dataset, out=tmp_path / "run",
                           resolution=32)
    generate(settings, progress=False)
    report = evaluate_run(settings.out, evaluator="none", cache_dir=tmp_path / "cache", progress=False)
    assert report["metrics"]["change_inside_pseudo_mask"]["value"] == 0.0  # identity changes nothing
    assert report["metrics"]["change_outside_pseudo_mask"]["value"] == 0.0
    assert report["locality_region"].startswith("pseudo masks: NIH ChestX-ray14")
