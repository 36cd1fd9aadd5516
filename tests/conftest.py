"""Shared fixtures: small datasets written in the real layout, isolated cfbench settings."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from cfbench.datasets.edit_dataset import DatasetWriter, Sample
from cfbench.core.findings import Operation, render_instruction

TESTS_DIR = Path(__file__).parent
REAL_CXR_DIR = TESTS_DIR.parent.parent / "shared" / "data" / "real-cxr"

# tests/ on sys.path so that subprocesses and `module:Class` model paths find tests/fake_models.py
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))


@pytest.fixture(autouse=True)
def isolated_settings(tmp_path_factory, monkeypatch):
    """Every test gets its own config file, cache and runs folder; no user settings leak in."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("CFBENCH_CONFIG", str(home / "config.toml"))
    monkeypatch.setenv("CFBENCH_CACHE_DIR", str(home / "cache"))
    monkeypatch.setenv("CFBENCH_RUNS_DIR", str(home / "runs"))
    monkeypatch.setenv("CFBENCH_WEIGHTS_DIR", str(home / "weights"))
    monkeypatch.delenv("CFBENCH_DATA_DIR", raising=False)
    return home


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


@pytest.fixture
def random_dataset(tmp_path) -> Path:
    return write_random_dataset(tmp_path / "data")


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny networks gain nothing from threads, and on a shared machine threads contend badly: modules that
    run them use ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
