"""Reversibility through a derived split: the inverse instructions, and the distance the second run measures."""

from __future__ import annotations

import json

import pytest

from cfbench.cli import main
from cfbench.datasets.edit_dataset import EditDataset
from cfbench.phantom.dataset import build_phantom_dataset


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    return build_phantom_dataset(tmp_path_factory.mktemp("rev") / "data", 8, seed=5, resolution=32,
                                 fractions={"holdout": 1.0}, progress=False)


@pytest.mark.parametrize("model, expected", [("true-counterfactual", 0.0), ("degrade-over-edit", None)])
def test_edit_then_inverse_edit(phantom, tmp_path, model, expected):
    first, reversed_split, second = tmp_path / "first", tmp_path / "reversed", tmp_path / "second"
    options = ["--option", "severity=0.5"] if model.startswith("degrade") else []
    common = ["--split", "holdout", "--resolution", "32", "--bootstrap", "20", "--fid-bootstrap", "0"]
    assert main(["--quiet", "run", "--model", model, "--data", str(phantom), "--out", str(first), *options,
                 *common]) == 0
    assert main(["--quiet", "reverse", "--run", str(first), "--out", str(reversed_split)]) == 0
    source, derived = EditDataset(phantom, "holdout", 32), EditDataset(reversed_split, "holdout", 32)
    for original, inverse in zip(source, derived):
        assert [op.inverted() for op in reversed(original.operations)] == inverse.operations
        assert inverse.labels == original.past_labels
    assert main(["--quiet", "run", "--model", model, "--data", str(reversed_split), "--out", str(second), *options,
                 *common]) == 0
    metrics = json.loads((second / "metrics.json").read_text())["metrics"]
    distance = metrics["mae_to_target"]["value"]
    assert distance == pytest.approx(metrics["mae_to_true_counterfactual"]["value"])
    if expected is not None:
        assert distance == pytest.approx(expected, abs=1e-4)  # x* of x* is the input again (PNG rounding)
    else:  # an over-edit overshoots both ways: it does not come back
        assert distance > 0.001
