"""The plugin side of issue 21: the oracle capability, the answer key, the degradation models, run labels."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cfbench import AnswerKey, Capabilities, LoadContext
from cfbench.api.registry import get_model_class
from cfbench.cli import main
from cfbench.datasets.edit_dataset import EditDataset
from cfbench.leaderboard.table_model import default_label, load_runs
from cfbench.models.degradations import FAMILIES
from cfbench.phantom.dataset import build_phantom_dataset
from cfbench.runs.generate import RunSettings, generate
from cfbench.runs.manifest import RunManifest, set_run_label


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    return build_phantom_dataset(tmp_path_factory.mktemp("ph") / "data", 6, seed=3, resolution=32,
                                 fractions={"holdout": 1.0}, progress=False)


def test_oracles_declare_the_capability_and_read_the_answer_key(phantom, random_dataset):
    for name in ("ground-truth", "true-counterfactual", "degrade-contrast"):
        assert get_model_class(name).capabilities.oracle, name
    assert not get_model_class("identity").capabilities.oracle and not Capabilities().oracle
    dataset = EditDataset(phantom, "holdout", 32)
    key = AnswerKey.from_context(LoadContext(dataset=dataset), "x", needs_counterfactuals=True)
    sample = dataset.samples[0]
    np.testing.assert_array_equal(key.true_counterfactual(sample.sample_id), dataset.counterfactual_image(sample))
    assert key.lesion_mask(sample.sample_id).dtype == bool
    assert key.attributes(sample.sample_id).age == sample.age
    with pytest.raises(ValueError, match="'x' needs exact counterfactuals"):
        AnswerKey.from_context(LoadContext(dataset=EditDataset(random_dataset, "holdout", 32)), "x", True)
    with pytest.raises(ValueError, match="run it on a split"):
        AnswerKey.from_context(LoadContext(), "x")


def test_degradations_are_the_formulas_and_severity_zero_is_the_exact_answer(phantom):
    dataset = EditDataset(phantom, "holdout", 32)
    sample = dataset.samples[1]
    x, exact = dataset.past_image(sample), dataset.counterfactual_image(sample)
    from cfbench.runs.generate import make_request

    request = make_request(sample, dataset, 0)
    for family in FAMILIES:
        model = get_model_class(f"degrade-{family}").load(LoadContext(dataset=dataset))
        np.testing.assert_allclose(model.edit([request])[0].image, exact, atol=1e-6, err_msg=family)
    contrast = get_model_class("degrade-contrast").load(LoadContext(dataset=dataset, options={"severity": "0.1"}))
    np.testing.assert_allclose(contrast.edit([request])[0].image, 0.9 * exact + 0.05, atol=1e-6)
    over = get_model_class("degrade-over-edit").load(LoadContext(dataset=dataset, options={"severity": "0.5"}))
    np.testing.assert_allclose(over.edit([request])[0].image, np.clip(x + 1.5 * (exact - x), 0, 1), atol=1e-6)
    with pytest.raises(ValueError, match="severity must be >= 0"):
        get_model_class("degrade-blur").load(LoadContext(dataset=dataset, options={"severity": "-1"}))


def test_labels_default_stored_and_given(phantom, tmp_path, capsys):
    assert default_label("degrade-contrast", {"severity": "0.1"}) == "degrade-contrast (severity=0.1)"
    assert default_label("degrade-contrast", {"severity": "0"}) == "degrade-contrast"  # the default is not shown
    assert default_label("tests.helpers.fake_models:NoisyEditModel", {}) == "noisy-edit"
    out = tmp_path / "run"
    assert main(["--quiet", "generate", "--model", "degrade-noise", "--option", "severity=0.03", "--split", "holdout",
                 "--data", str(phantom), "--resolution", "32", "--out", str(out), "--label", "noise 3%"]) == 0
    assert RunManifest.read(out).label == "noise 3%"
    assert json.loads((out / "manifest.json").read_text())["label"] == "noise 3%"
    generate(RunSettings(model="degrade-noise", split="holdout", data_dir=phantom, out=out, resolution=32,
                         options={"severity": "0.03"}), progress=False)  # resuming keeps the label
    assert RunManifest.read(out).label == "noise 3%"
    assert main(["--quiet", "eval", "--run", str(out), "--bootstrap", "20", "--fid-bootstrap", "0"]) == 0
    runs = load_runs([out])
    assert runs[0].label == "noise 3%" and runs[0].oracle
    assert load_runs([out], {"run": "renamed"})[0].label == "renamed"
    set_run_label(out, None)
    assert load_runs([out])[0].label == "degrade-noise (severity=0.03)"
    board = tmp_path / "board"
    assert main(["leaderboard", str(out), "--out", str(board), "--no-plots", "--no-gallery", "--no-reported",
                 "--label", "run=my noise"]) == 0
    assert "my noise" in (board / "summary.md").read_text()
    assert "| 1 | my noise |" in (board / "summary.md").read_text()
    assert main(["leaderboard", str(out), "--out", str(board), "--label", "nope=x", "--no-plots"]) == 2
    assert "not among the run folders" in capsys.readouterr().err
