"""ICG-CXR pair folders (JSON + *-ref-reg.png + *-flu-reg.png) converted into the dataset layout."""

import json

import numpy as np
from PIL import Image

from cfbench.core.findings import CHEXPERT_COLUMNS, Operation
from cfbench.datasets.edit_dataset import EditDataset
from cfbench.datasets.icg import build_icg_dataset


def write_pair(root, name, past_labels, current_labels, split="test", broken=False):
    folder = root / name
    folder.mkdir(parents=True)
    document = {
        "progression-description": "The pleural effusion on the left is expected to increase.",
        "changes-of-findings": "New left pleural effusion; the heart size is unchanged.",
        "reference-report": {"findings": "Clear lungs.", "impression": "No acute process."},
        "followup-report": {"findings": "Left effusion.", "impression": "New small left pleural effusion."},
        "reference-dicom-id": f"{name}-ref", "followup-dicom-id": f"{name}-flu",
        "age": 67, "sex": "F", "race": "White", "split": split,
        "reference-diseases": past_labels, "followup-diseases": current_labels,
    }
    if broken:
        del document["followup-diseases"]
    (folder / f"{name}.json").write_text(json.dumps(document))
    rng = np.random.default_rng(0)
    for suffix in ("ref-reg", "flu-reg"):
        Image.fromarray(rng.integers(0, 255, (512, 512), dtype=np.uint8)).save(folder / f"{name}-{suffix}.png")


def test_icg_pairs_become_samples(tmp_path):
    none = [0.0] * 14
    effusion = list(none)
    effusion[CHEXPERT_COLUMNS.index("Pleural Effusion")] = 1.0
    effusion[CHEXPERT_COLUMNS.index("Edema")] = -100
    write_pair(tmp_path / "icg", "pair-0001", none, effusion)
    write_pair(tmp_path / "icg", "pair-0002", {"Cardiomegaly": 1.0}, {"Cardiomegaly": 0.0}, split="validation")
    write_pair(tmp_path / "icg", "pair-0003", none, none, broken=True)
    counts = build_icg_dataset(tmp_path / "icg", tmp_path / "out", resolution=64, progress=False)
    assert counts["written"] == 2 and "followup-diseases" in counts["failed"][0]
    test = EditDataset(tmp_path / "out", "test", resolution=64)
    sample = test["pair-0001"]
    assert sample.operations == [Operation("add", "pleural effusion")]
    assert sample.progression == sample.instruction == "The pleural effusion on the left is expected to increase."
    assert sample.reference_explanation.startswith("New left pleural effusion")
    assert sample.target_report == "New small left pleural effusion."
    assert sample.labels["Pleural Effusion"] == 1.0 and sample.labels["Edema"] is None  # -100 = missing
    assert (sample.age, sample.sex, sample.race) == (67.0, "F", "White")
    assert test.past_image(sample).shape == (64, 64)
    val = EditDataset(tmp_path / "out", "val", resolution=64)
    assert val["pair-0002"].operations == [Operation("remove", "cardiomegaly")]


def test_cli_build_icg(tmp_path, capsys):
    from cfbench.cli import main

    write_pair(tmp_path / "icg", "pair-0001", [0.0] * 14, [1.0] + [0.0] * 13)
    assert main(["--quiet", "data", "build", "icg", "--root", str(tmp_path / "icg"), "--out", str(tmp_path / "out"),
                 "--resolution", "64"]) == 0
    assert "wrote 1 of 1 ICG-CXR pairs" in capsys.readouterr().out
