import numpy as np
import pandas as pd
import pytest

from cfbench.core.findings import Operation
from cfbench.datasets.pseudo_masks import PseudoMasks, boxes_to_masks, nih_pseudo_masks
from cfbench.evaluation.evaluate import evaluate_run
from cfbench.runs.generate import RunSettings, generate


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
    assert masks.mask_for([Operation("add", "cardiomegaly")], resolution=128).sum() == pytest.approx(heart.sum() / 4, rel=0.05)


def test_nih_masks_from_the_torchxrayvision_wheel(tmp_path):
    masks = nih_pseudo_masks(512)
    assert {"atelectasis", "cardiomegaly", "pleural effusion", "pneumothorax"} <= set(masks.masks)
    heart = masks.masks["cardiomegaly"]
    assert heart[300, 256] and not heart[10, 10]  # central-lower, not the corner
    assert "PA" in masks.source
    masks.save(tmp_path / "masks.npz")
    loaded = PseudoMasks.load(tmp_path / "masks.npz")
    assert loaded.resolution == 512 and all(np.array_equal(loaded.masks[k], masks.masks[k]) for k in masks.masks)


def test_locality_on_real_layout_data(random_dataset, tmp_path):
    settings = RunSettings(model="identity", split="holdout", data_dir=random_dataset, out=tmp_path / "run",
                           resolution=32)
    generate(settings, progress=False)
    report = evaluate_run(settings.out, evaluator="none", cache_dir=tmp_path / "cache", progress=False)
    assert report["metrics"]["change_inside_pseudo_mask"]["value"] == 0.0  # identity changes nothing
    assert report["metrics"]["change_outside_pseudo_mask"]["value"] == 0.0
    assert report["locality_region"].startswith("pseudo masks: NIH ChestX-ray14")


def test_location_aware_masks():
    from cfbench.datasets.pseudo_masks import location_region

    masks = PseudoMasks({"pleural effusion": np.ones((8, 8), bool)}, 8, "test")
    left = masks.mask_for([Operation("add", "pleural effusion", "left")])
    assert left[:, 4:].all() and not left[:, :4].any()  # patient left = image right
    base = masks.mask_for([Operation("add", "pleural effusion", "right base")])
    assert base[4:, :4].all() and base.sum() == 16
    assert masks.mask_for([Operation("add", "pleural effusion", "bilateral")]).all()
    assert location_region("apical", 8)[:4].all() and not location_region("apical", 8)[4:].any()


def test_ms_cxr_masks_from_the_real_schema_and_cli(tmp_path, random_dataset, capsys):
    from cfbench.cli import main

    boxes = pd.DataFrame({
        "dicom_id": ["d1", "d2", "d3"], "category_name": ["Cardiomegaly", "Pleural Effusion", "Cardiomegaly"],
        "label_text": ["enlarged heart", "left effusion", "cardiomegaly"], "path": ["files/p10/..."] * 3,
        "x": [1000, 1800, 0], "y": [1500, 2500, 0], "w": [1000, 500, 100], "h": [800, 500, 100],
        "image_width": [3000, 2500, 3000], "image_height": [3000, 3000, 3000], "split": ["test"] * 3})
    boxes.to_csv(tmp_path / "MS_CXR_Local_Alignment_v1.1.0.csv", index=False)
    pd.DataFrame({"dicom_id": ["d1", "d2", "d3"], "ViewPosition": ["PA", "PA", "AP"]}).to_csv(
        tmp_path / "mimic-cxr-2.0.0-metadata.csv.gz", index=False)
    assert main(["masks", "build", "--ms-cxr", str(tmp_path / "MS_CXR_Local_Alignment_v1.1.0.csv"),
                 "--metadata", str(tmp_path / "mimic-cxr-2.0.0-metadata.csv.gz"), "--out", str(tmp_path / "m.npz"),
                 "--resolution", "300"]) == 0
    masks = PseudoMasks.load(tmp_path / "m.npz")
    heart = masks.masks["cardiomegaly"]
    assert heart[150:230, 100:200].all() and heart.sum() == 80 * 100  # the AP box (d3) is left out
    effusion = masks.masks["pleural effusion"]
    assert effusion[250:300, 216:276].all() and effusion.sum() == 50 * 60  # x scaled by 300/2500
    assert "MS-CXR" in capsys.readouterr().out
    generate(RunSettings(model="identity", split="holdout", data_dir=random_dataset, out=tmp_path / "run",
                         resolution=32), progress=False)
    assert main(["--quiet", "eval", "--run", str(tmp_path / "run"), "--evaluator", "none", "--bootstrap", "20",
                 "--pseudo-masks", str(tmp_path / "m.npz")]) == 0
    import json

    report = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert report["locality_region"].startswith("pseudo masks: MS-CXR")
