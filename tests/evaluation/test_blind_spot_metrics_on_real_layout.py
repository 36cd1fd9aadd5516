"""The blind-spot metrics and cfbench_score on a real-layout split (the two public NIH test images as priors and
targets, a pseudo_masks.npz in the dataset folder as MS-CXR boxes are), checked against values computed here."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cfbench.core.images import load_image
from cfbench.datasets.edit_dataset import DatasetWriter, EditDataset
from cfbench.datasets.pseudo_masks import DATASET_MASKS, PseudoMasks
from cfbench.evaluation.evaluate import evaluate_run
from cfbench.evaluation.results import load_table
from cfbench.metrics.minimality import relative_change_outside, w1_outside
from cfbench.metrics.score import cfbench_score
from cfbench.runs.generate import RunSettings, generate
from tests.helpers.datasets import REAL_CXR_DIR, make_samples
from tests.helpers.fake_models import RegionStatisticsEvaluator

SIZE = 64


@pytest.fixture(scope="module")
def real_layout(tmp_path_factory):
    root = tmp_path_factory.mktemp("nih-layout") / "data"
    images = [load_image(path, SIZE) for path in sorted(REAL_CXR_DIR.glob("*.png"))]
    writer = DatasetWriter(root)
    for index, sample in enumerate(make_samples(6)):
        writer.add(sample, images[index % 2], images[(index + 1) % 2])
    writer.close(info={"kind": "real-layout test fixture"})
    effusion = np.zeros((SIZE, SIZE), bool)
    effusion[SIZE // 2:, : SIZE // 2] = True
    PseudoMasks({"pleural effusion": effusion, "edema": ~effusion}, SIZE, "test boxes").save(root / DATASET_MASKS)
    runs = {}
    for model in ("identity", "tests.helpers.fake_models:NoisyEditModel"):
        out = tmp_path_factory.mktemp("runs") / model.split(":")[-1]
        generate(RunSettings(model=model, split="holdout", data_dir=root, out=out, resolution=SIZE), progress=False)
        runs[model] = out
    return root, runs


def test_new_metrics_on_real_layout_data(real_layout, tmp_path):
    root, runs = real_layout
    report = evaluate_run(runs["tests.helpers.fake_models:NoisyEditModel"], evaluator=RegionStatisticsEvaluator(),
                          cache_dir=tmp_path, progress=False)
    metrics = report["metrics"]
    dataset = EditDataset(root, "holdout", SIZE)
    masks = PseudoMasks.load(root / DATASET_MASKS)
    relative, w1 = [], []
    for sample in dataset:
        generated = load_image(runs["tests.helpers.fake_models:NoisyEditModel"] / "images" / f"{sample.sample_id}.png",
                               SIZE)
        region = masks.mask_for(sample.operations, SIZE)
        relative.append(relative_change_outside(generated, dataset.past_image(sample), region))
        w1.append(w1_outside(generated, dataset.past_image(sample), region))
    assert metrics["relative_change_outside_pseudo_mask"]["value"] == pytest.approx(np.nanmean(relative))
    assert metrics["w1_outside_pseudo_mask"]["value"] == pytest.approx(np.nanmean(w1))
    assert "change_outside_lesion" not in metrics  # no true lesions on real data
    table = load_table(runs["tests.helpers.fake_models:NoisyEditModel"])
    assert set(table.inputs) == {"pathology", "race", "sex", "age"}
    assert np.abs(table.inputs["age"] - table.generated["age"]).mean() == pytest.approx(metrics["age_change"]["value"])
    for name in ("effect_error", "race_change", "sex_change", "feature_distance", "cfbench_score"):
        entry = metrics[name]
        assert entry["ci_low"] <= entry["value"] <= entry["ci_high"], name
    values = {name: entry["value"] for name, entry in metrics.items()}
    assert metrics["cfbench_score"]["value"] == pytest.approx(cfbench_score(values).value)
    assert report["components"]["cfbench_score"]["terms"] == pytest.approx(cfbench_score(values).terms)
    assert json.loads((runs["tests.helpers.fake_models:NoisyEditModel"] / "metrics.json").read_text())[
        "metrics"]["cfbench_score"]["value"] == pytest.approx(metrics["cfbench_score"]["value"])


def test_the_identity_makes_no_change_and_misses_the_effect(real_layout, tmp_path):
    root, runs = real_layout
    report = evaluate_run(runs["identity"], evaluator=RegionStatisticsEvaluator(), cache_dir=tmp_path, progress=False)
    metrics = report["metrics"]
    for name in ("age_change", "race_change", "sex_change", "relative_change_outside_pseudo_mask",
                 "w1_outside_pseudo_mask"):
        assert metrics[name]["value"] == 0.0, name
    table = load_table(runs["identity"])
    edited = np.isfinite(table.edits)
    real_change = np.abs(table.real["pathology"] - table.inputs["pathology"])
    per_sample = [real_change[i][edited[i]].mean() for i in range(len(table)) if edited[i].any()]
    assert metrics["effect_error"]["value"] == pytest.approx(np.mean(per_sample))  # 0 change vs the target's
