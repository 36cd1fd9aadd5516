import numpy as np
import pandas as pd
import pytest

from cfbench.core.images import ImageReadError
from cfbench.datasets.edit_dataset import DatasetError, DatasetWriter, EditDataset
from tests.helpers.datasets import make_samples, write_random_dataset


def test_layout_round_trip(tmp_path):
    rng = np.random.default_rng(3)
    samples = make_samples(5)
    writer = DatasetWriter(tmp_path)
    images = {}
    for sample in samples:
        past, current = rng.random((24, 24), dtype=np.float32), rng.random((24, 24), dtype=np.float32)
        images[sample.sample_id] = (past, current)
        writer.add(sample, past, current)
    writer.close(info={"kind": "test"})

    table = pd.read_csv(tmp_path / "instructions.csv")
    assert list(table.columns[:4]) == ["instruction", "past_dicom_id", "current_dicom_id", "split"]
    assert (tmp_path / "past" / "d000a.png").is_file() and (tmp_path / "current" / "d000b.png").is_file()

    dataset = EditDataset(tmp_path, "holdout", resolution=24)
    assert len(dataset) == 5 and dataset.info == {"kind": "test"}
    for original, loaded in zip(samples, dataset):
        assert loaded.sample_id == original.sample_id
        assert loaded.instruction == original.instruction
        assert loaded.operations == original.operations
        assert loaded.labels == original.labels  # 1.0, 0.0, None (blank) and -1.0 all survive
        assert loaded.past_labels["Atelectasis"] == 0.0
        assert (loaded.age, loaded.sex, loaded.race) == (original.age, original.sex, original.race)
        assert loaded.target_report == original.target_report and loaded.progression is None
        past, current = images[loaded.sample_id]
        assert np.abs(dataset.past_image(loaded) - past).max() < 1e-4
        assert np.abs(dataset.current_image(loaded) - current).max() < 1e-4


def test_official_columns_only(tmp_path):
    """The official release has just four columns: sample ids and operations are derived."""
    write_random_dataset(tmp_path, n=3)
    table = pd.read_csv(tmp_path / "instructions.csv")
    table[["instruction", "past_dicom_id", "current_dicom_id", "split"]].to_csv(tmp_path / "instructions.csv", index=False)
    dataset = EditDataset(tmp_path, "holdout", resolution=32)
    first = dataset.samples[0]
    assert first.sample_id == "d000a_d000b"
    assert first.operations[0].op == "add" and first.labels == {}


def test_missing_column_is_named(tmp_path):
    write_random_dataset(tmp_path, n=2)
    table = pd.read_csv(tmp_path / "instructions.csv").drop(columns=["current_dicom_id"])
    table.to_csv(tmp_path / "instructions.csv", index=False)
    with pytest.raises(DatasetError, match="missing required column\\(s\\) current_dicom_id"):
        EditDataset(tmp_path, "holdout")


def test_missing_image_names_file_and_sample(tmp_path):
    write_random_dataset(tmp_path, n=3)
    (tmp_path / "past" / "d001a.png").unlink()
    dataset = EditDataset(tmp_path, "holdout", resolution=32)
    dataset.past_image(dataset.samples[0])  # others still load
    with pytest.raises(ImageReadError, match=r"sample 's001' \(row 2 .*\): image not found: .*past/d001a.png"):
        dataset.past_image(dataset.samples[1])


def test_bad_rows_are_named(tmp_path):
    write_random_dataset(tmp_path, n=3)
    table = pd.read_csv(tmp_path / "instructions.csv", dtype=str)
    table.loc[2, "Cardiomegaly"] = "yes"
    table.to_csv(tmp_path / "instructions.csv", index=False)
    dataset = EditDataset(tmp_path, "holdout")  # the bad row is left out, with its reason
    assert [s.row for s in dataset] == [1, 2]
    assert [str(r) for r in dataset.skipped_rows] == [
        "row 3 (s002): column 'Cardiomegaly': label 'yes' is not 1.0, 0.0, -1.0 or blank"]
    with pytest.raises(DatasetError, match="row 3: column 'Cardiomegaly': label 'yes'"):
        EditDataset(tmp_path, "holdout", strict=True)


def test_split_errors(tmp_path, random_dataset):
    with pytest.raises(DatasetError, match="unknown split 'validation'"):
        EditDataset(random_dataset, "validation")
    with pytest.raises(DatasetError, match="split 'train' has no usable rows"):
        EditDataset(random_dataset, "train")
    with pytest.raises(DatasetError, match="no such dataset folder"):
        EditDataset(tmp_path / "nowhere", "holdout")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no instructions.csv"):
        EditDataset(tmp_path / "empty", "holdout")
