"""The NIH public variant end to end, on a Data_Entry fixture in the real schema and small images."""

import numpy as np
import pandas as pd
from PIL import Image

from cfbench.cli import main
from cfbench.core.findings import Operation
from cfbench.datasets.edit_dataset import EditDataset
from cfbench.datasets.nih import build_nih_dataset, consecutive_pairs, patient_split
from cfbench.datasets.pair_engine import PairSettings
from cfbench.phantom.render import render_pair
from cfbench.phantom.scenario import sample_pair

HEADER = ["Image Index", "Finding Labels", "Follow-up #", "Patient ID", "Patient Age", "Patient Gender",
          "View Position", "OriginalImage[Width", "Height]", "OriginalImagePixelSpacing[x", "y]"]


def write_fixture(folder):
    rows = [
        # patient 1: three PA images, file names NOT in follow-up order
        ["00000001_002.png", "No Finding", 0, 1, 57, "M", "PA", 2682, 2749, 0.143, 0.143],
        ["00000001_000.png", "Effusion", 1, 1, 58, "M", "PA", 2894, 2729, 0.143, 0.143],
        ["00000001_001.png", "Effusion|Edema", 2, 1, 58, "M", "PA", 2500, 2048, 0.168, 0.168],
        # same labels twice: no pair
        ["00000002_000.png", "Cardiomegaly", 0, 2, 81, "F", "PA", 2048, 2500, 0.171, 0.171],
        ["00000002_001.png", "Cardiomegaly", 1, 2, 81, "F", "PA", 2048, 2500, 0.171, 0.171],
        # AP views are not used
        ["00000003_000.png", "No Finding", 0, 3, 30, "F", "AP", 3056, 2544, 0.139, 0.139],
        ["00000003_001.png", "Pneumothorax", 1, 3, 30, "F", "AP", 3056, 2544, 0.139, 0.139],
        # image missing on disk: logged and skipped
        ["00000004_000.png", "No Finding", 0, 4, 45, "F", "PA", 2048, 2500, 0.171, 0.171],
        ["00000004_001.png", "Atelectasis|Pneumothorax", 1, 4, 45, "F", "PA", 2048, 2500, 0.171, 0.171],
    ]
    table = pd.DataFrame(rows, columns=HEADER)
    table.to_csv(folder / "Data_Entry_2017_v2020.csv.gz", index=False)
    images = folder / "images"
    images.mkdir()
    for name, patient, follow_up in zip(table["Image Index"], table["Patient ID"], table["Follow-up #"]):
        if name == "00000004_001.png":
            continue
        rendered = render_pair(sample_pair(int(patient)), 128)  # one phantom patient per NIH patient
        image = (rendered.past, rendered.current, rendered.counterfactual)[int(follow_up) % 3]
        Image.fromarray((image * 255).round().astype(np.uint8)).save(images / name)
    return folder / "Data_Entry_2017_v2020.csv.gz", images


def test_pairs_follow_up_order_and_operations(tmp_path):
    data_entry, _ = write_fixture(tmp_path)
    pairs = consecutive_pairs(pd.read_csv(data_entry, dtype={"Patient ID": str}))
    assert [(p.past, p.current) for p in pairs] == [("00000001_002.png", "00000001_000.png"),
                                                    ("00000001_000.png", "00000001_001.png"),
                                                    ("00000004_000.png", "00000004_001.png")]
    assert patient_split("1") == patient_split("1") and patient_split("1") in {"train", "holdout", "test", "val"}


def test_build_and_run_end_to_end(tmp_path, capsys):
    data_entry, images = write_fixture(tmp_path)
    counts = build_nih_dataset(images, tmp_path / "nih", data_entry=data_entry, settings=PairSettings(resolution=64),
                               progress=False)
    assert counts["pairs"] == 3 and counts["written"] == 2
    assert str(images / "00000004_001.png") in counts["failed"][0]
    table = pd.read_csv(tmp_path / "nih" / "instructions.csv")
    split = table["split"].iloc[0]
    dataset = EditDataset(tmp_path / "nih", split, resolution=64)
    first = dataset["00000001_002_00000001_000"]
    assert first.instruction == "Add the finding of pleural effusion"
    assert first.labels["Pleural Effusion"] == 1.0 and first.past_labels["Pleural Effusion"] == 0.0
    assert (first.age, first.sex, first.race) == (58.0, "M", None)
    second = dataset["00000001_000_00000001_001"]
    assert second.operations == [Operation("add", "edema")]
    status = main(["--quiet", "run", "--model", "identity", "--split", split, "--data", str(tmp_path / "nih"),
                   "--resolution", "64", "--out", str(tmp_path / "run"), "--evaluator", "none", "--bootstrap", "20"])
    assert status == 0, capsys.readouterr().err


def test_cli_build_nih(tmp_path, capsys):
    data_entry, images = write_fixture(tmp_path)
    assert main(["--quiet", "data", "build", "nih", "--images", str(images), "--out", str(tmp_path / "out"),
                 "--data-entry", str(data_entry), "--resolution", "64", "--workers", "2"]) == 0
    captured = capsys.readouterr()
    assert "wrote 2 of 3 NIH pairs" in captured.out and "00000004_001.png" in captured.err
