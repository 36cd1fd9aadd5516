"""Small datasets written in the real layout, and where the repository's test data lies."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cfbench.core.findings import Operation, render_instruction
from cfbench.datasets.edit_dataset import DatasetWriter, Sample

TEST_DATA_DIR = Path(__file__).resolve().parents[1] / "data"
REAL_CXR_DIR = TEST_DATA_DIR / "real-cxr"  # two public NIH ChestX-ray14 images (see the README there)
PAPER_TABLES_DIR = TEST_DATA_DIR / "paper-tables"  # the papers' result tables, verbatim


def make_samples(n: int, split: str = "holdout") -> list[Sample]:
    findings = ["pleural effusion", "edema", "cardiomegaly", "pneumothorax", "atelectasis"]
    samples = []
    for index in range(n):
        operations = [Operation("add", findings[index % 5], "left" if index % 2 else None, None,
                                "small" if index % 3 == 0 else None)]
        if index % 4 == 1:
            operations.append(Operation("remove", findings[(index + 1) % 5]))
        samples.append(Sample(
            sample_id=f"s{index:03d}", split=split, instruction=render_instruction(operations),
            operations=operations, past_dicom_id=f"d{index:03d}a", current_dicom_id=f"d{index:03d}b",
            row=index + 1, subject_id=f"{10000000 + index}",
            labels={"Atelectasis": 1.0, "Cardiomegaly": 0.0, "Edema": None, "Pleural Effusion": -1.0,
                    "Pneumothorax": 0.0},
            past_labels={"Atelectasis": 0.0}, age=40.0 + index, sex="F" if index % 2 else "M",
            race=("Asian", "Black", "White")[index % 3], target_report=f"impression {index}",
        ))
    return samples


def write_random_dataset(root: Path, n: int = 6, size: int = 32, split: str = "holdout", seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    writer = DatasetWriter(root)
    for sample in make_samples(n, split):
        writer.add(sample, rng.random((size, size), dtype=np.float32), rng.random((size, size), dtype=np.float32))
    writer.close(info={"kind": "random test fixture"})
    return root
