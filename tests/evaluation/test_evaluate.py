"""The evaluation pipeline with a deterministic evaluator: numbers against scikit-learn / SciPy, the
real-image cache, the files written, and paired comparisons."""

import io
import json
import threading

import numpy as np
import pandas as pd
import pytest
from scipy.stats import pearsonr
from sklearn.metrics import roc_auc_score

from cfbench.cli import main
from cfbench.core.checked_entries import stored_payload
from cfbench.core.findings import EVALUATED_FINDINGS
from cfbench.evaluation.evaluate import evaluate_run
from cfbench.evaluation.protocol import Protocol
from cfbench.evaluation.results import load_table
from cfbench.evaluation.scoring import compare_tables
from cfbench.phantom.dataset import build_phantom_dataset
from cfbench.runs.generate import RunSettings, generate
from tests.helpers.fake_models import RegionStatisticsEvaluator

FAST = Protocol(bootstrap_resamples=200, fid_bootstrap_resamples=20)


@pytest.fixture(scope="module")
def phantom_runs(tmp_path_factory):
    """A 40-pair phantom split at 64 px and three runs on it."""
    root = tmp_path_factory.mktemp("eval")
    data = build_phantom_dataset(root / "data", 40, seed=11, resolution=64, fractions={"holdout": 1.0}, progress=False)
    runs = {}
    for model in ("identity", "ground-truth", "tests.helpers.fake_models:NoisyEditModel"):
        settings = RunSettings(model=model, split="holdout", data_dir=data, out=root / model.replace(":", "_"),
                               resolution=64, batch_size=8)
        generate(settings, progress=False)
        runs[model] = settings.out
    return data, runs


def evaluate(run, tmp_path, evaluator=None, protocol=FAST):
    return evaluate_run(run, evaluator=evaluator or RegionStatisticsEvaluator(), protocol=protocol,
                        cache_dir=tmp_path / "cache", batch_size=7, progress=False)


def test_metrics_equal_reference_implementations(phantom_runs, tmp_path):
    data, runs = phantom_runs
    report = evaluate(runs["tests.helpers.fake_models:NoisyEditModel"], tmp_path)
    predictions = pd.read_csv(runs["tests.helpers.fake_models:NoisyEditModel"] / "predictions.csv")
    aurocs = []
    for finding in EVALUATED_FINDINGS:
        labels = predictions[f"label/{finding}"]
        keep = labels.isin([0.0, 1.0])  # default policy: uncertain and blank excluded per finding
        expected = roc_auc_score(labels[keep], predictions[f"generated/p({finding})"][keep])
        assert report["metrics"][f"pathology_auroc/{finding}"]["value"] == pytest.approx(expected, abs=1e-12)
        aurocs.append(expected)
    assert report["metrics"]["pathology_mean_auroc"]["value"] == pytest.approx(np.mean(aurocs), abs=1e-12)
    classes = ["group_a", "group_b", "group_c"]
    race_probabilities = predictions[[f"generated/p({c})" for c in classes]].to_numpy()
    race_probabilities /= race_probabilities.sum(axis=1, keepdims=True)
    expected_race = roc_auc_score(predictions["race_true"].map(classes.index), race_probabilities,
                                  multi_class="ovr", average="macro")
    assert report["metrics"]["race_auroc"]["value"] == pytest.approx(expected_race, abs=1e-6)
    expected_age = pearsonr(predictions["generated/age"], predictions["age_true"]).statistic
    assert report["metrics"]["age_pearson"]["value"] == pytest.approx(expected_age, abs=1e-6)
    expected_sex = roc_auc_score(predictions["sex_male_true"], predictions["generated/p(male)"])
    assert report["metrics"]["sex_auroc"]["value"] == pytest.approx(expected_sex, abs=1e-9)
    # CMIG from its own components, on the 0-100 scale
    a = 100 * report["metrics"]["pathology_mean_auroc"]["value"]
    f = np.sqrt(100 * report["metrics"]["race_auroc"]["value"] * 100 * max(expected_age, 0.0))
    assert report["metrics"]["cmig"]["value"] == pytest.approx(np.sqrt(a * f), rel=1e-9)
    for name in ("pathology_mean_auroc", "cmig", "kl_divergence", "fid", "age_pearson"):
        entry = report["metrics"][name]
        assert entry["ci_low"] <= entry["ci_high"] and entry["n"] == 40
    assert report["metrics"]["fid"]["n_resamples"] == 20 and report["metrics"]["cmig"]["n_resamples"] == 200


def test_ground_truth_row_has_zero_divergence(phantom_runs, tmp_path):
    _, runs = phantom_runs
    report = evaluate(runs["ground-truth"], tmp_path)
    assert report["metrics"]["kl_divergence"]["value"] == pytest.approx(0.0, abs=1e-12)
    assert report["metrics"]["fid"]["value"] == pytest.approx(0.0, abs=1e-5)
    assert report["metrics"]["mae_to_target"]["value"] == 0.0
    table = load_table(runs["ground-truth"])
    np.testing.assert_allclose(table.generated["pathology"], table.real["pathology"], atol=1e-6)


def test_real_outputs_are_cached_across_runs_and_keyed_on_content(phantom_runs, tmp_path):
    data, runs = phantom_runs
    first = RegionStatisticsEvaluator()
    evaluate(runs["identity"], tmp_path, first)
    assert first.calls == 120  # 40 generated + 40 real target images + 40 inputs (effect size, identity change)
    second = RegionStatisticsEvaluator()
    report = evaluate(runs["tests.helpers.fake_models:NoisyEditModel"], tmp_path, second)
    assert second.calls == 40  # real target and input outputs came from the cache
    assert report["evaluator"] == {"evaluator": "region-statistics", "version": 1}
    entries = list((tmp_path / "cache" / "evaluator-outputs").rglob("*.npz"))
    assert len(entries) == 80
    with np.load(io.BytesIO(stored_payload(entries[0])), allow_pickle=False) as archive:
        assert set(archive.files) == {"pathology", "features", "race", "sex", "age"}


def test_concurrent_evaluations_compute_each_real_image_once(phantom_runs, tmp_path):
    _, runs = phantom_runs
    evaluators = [RegionStatisticsEvaluator(), RegionStatisticsEvaluator()]
    reports = [None, None]

    def work(index, run):
        reports[index] = evaluate(run, tmp_path, evaluators[index])

    threads = [threading.Thread(target=work, args=(0, runs["identity"])),
               threading.Thread(target=work, args=(1, runs["tests.helpers.fake_models:NoisyEditModel"]))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(e.calls for e in evaluators) == 40 + 40 + 40 + 40  # the targets and inputs once, not twice
    assert all(report is not None for report in reports)


def test_files_written_and_round_trip(phantom_runs, tmp_path):
    _, runs = phantom_runs
    report = evaluate(runs["identity"], tmp_path)
    folder = runs["identity"]
    assert json.loads((folder / "metrics.json").read_text()) == report
    assert report["protocol"]["label_uncertain"] == "exclude" and report["protocol"]["bootstrap_resamples"] == 200
    assert set(report["by_operation"]) == {"add", "remove", "change"}
    assert sum(1 for _ in open(folder / "predictions.csv")) == 41
    table = load_table(folder)
    assert len(table) == 40 and table.race_classes == ("group_a", "group_b", "group_c")
    assert table.pixel["change_outside_lesion"].max() == 0.0  # identity changes nothing
    assert report["components"]["cmig"]["accuracy_terms"]["pathology_mean_auroc"] == pytest.approx(
        100 * report["metrics"]["pathology_mean_auroc"]["value"])


def test_compare_runs(phantom_runs, tmp_path, capsys):
    _, runs = phantom_runs
    for run in runs.values():
        evaluate(run, tmp_path)
    same = compare_tables(load_table(runs["identity"]), load_table(runs["identity"]), FAST)
    assert same["n_shared"] == 40
    for entry in same["differences"].values():
        assert entry["value"] == entry["ci_low"] == entry["ci_high"] == 0.0
    different = compare_tables(load_table(runs["ground-truth"]), load_table(runs["identity"]), FAST)
    mae = different["differences"]["mae_to_target"]
    assert mae["ci_high"] < 0  # the ground truth is closer to the target than the input is
    out = tmp_path / "compare.json"
    assert main(["compare", str(runs["ground-truth"]), str(runs["identity"]), "--bootstrap", "50",
                 "--fid-bootstrap", "5", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    saved = json.loads(out.read_text())
    assert saved["n_shared"] == 40
    # one scale everywhere: the console shows the leaderboard's scale with the direction (AUROC x 100)
    patho = next(line for line in printed.splitlines() if line.strip().startswith("Patho ↑"))
    assert float(patho.split()[2]) == pytest.approx(100 * saved["differences"]["pathology_mean_auroc"]["value"], abs=0.01)
    assert "AUROC x 100" in patho
    mae = next(line for line in printed.splitlines() if line.strip().startswith("MAE to target"))
    assert mae.rstrip().endswith("differs")  # descriptive: no better or worse


def test_datasets_without_labels_skip_with_reasons(tmp_path, random_dataset):
    import pandas as pd

    table = pd.read_csv(random_dataset / "instructions.csv")
    table[["instruction", "past_dicom_id", "current_dicom_id", "split", "sample_id"]].to_csv(
        random_dataset / "instructions.csv", index=False)
    settings = RunSettings(model="identity", split="holdout", data_dir=random_dataset, out=tmp_path / "run",
                           resolution=32)
    generate(settings, progress=False)
    report = evaluate(settings.out, tmp_path)
    assert "no CheXpert label columns" in report["skipped"]["pathology_mean_auroc"]
    assert "race_auroc" in report["skipped"] and "cmig" in report["skipped"]
    assert report["metrics"]["kl_divergence"]["value"] is not None


def test_text_metrics_of_explanations(tmp_path):
    pytest.importorskip("rouge_score")
    from cfbench.datasets.edit_dataset import DatasetWriter
    from cfbench.metrics.text import TextSimilarity
    from tests.helpers.datasets import make_samples

    rng = np.random.default_rng(0)
    writer = DatasetWriter(tmp_path / "data")
    samples = make_samples(6)
    for index, sample in enumerate(samples):
        sample.reference_explanation = None if index == 5 else f"edited: {sample.instruction.lower()} compared with before"
        writer.add(sample, rng.random((32, 32), dtype=np.float32), rng.random((32, 32), dtype=np.float32))
    writer.close()
    settings = RunSettings(model="tests.helpers.fake_models:NoisyEditModel", split="holdout", data_dir=tmp_path / "data",
                           out=tmp_path / "run", resolution=32)
    generate(settings, progress=False)
    report = evaluate(settings.out, tmp_path)
    expected = TextSimilarity()
    expected.update([f"edited: {s.instruction}" for s in samples[:5]], [s.reference_explanation for s in samples[:5]])
    values = expected.compute()
    for metric in ("bleu3", "meteor", "rouge_l"):
        assert report["metrics"][metric]["value"] == pytest.approx(values[metric])
        assert report["metrics"][metric]["ci_low"] <= values[metric] <= report["metrics"][metric]["ci_high"]
    assert 0.3 < values["rouge_l"] < 1.0
    predictions = pd.read_csv(settings.out / "predictions.csv")
    assert predictions["explanation"][0].startswith("edited: Add the finding")


def test_clip_i_from_an_extra_embedder(phantom_runs, tmp_path):
    from tests.helpers.fake_models import DownsampleEmbedder

    _, runs = phantom_runs
    report = evaluate_run(runs["tests.helpers.fake_models:NoisyEditModel"], evaluator=RegionStatisticsEvaluator(),
                          extra_evaluators=(DownsampleEmbedder(),), protocol=FAST, cache_dir=tmp_path / "cache",
                          progress=False)
    table = load_table(runs["tests.helpers.fake_models:NoisyEditModel"])
    g, r = table.generated["embedding"], table.real["embedding"]
    expected = np.mean([np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b) for a, b in zip(g, r)])
    assert report["metrics"]["clip_i"]["value"] == pytest.approx(expected, abs=1e-6)
    assert 0.5 < expected < 1.0
    assert report["extra_evaluators"] == [{"evaluator": "downsample-embedder"}]
    truth = evaluate_run(runs["ground-truth"], evaluator="none", extra_evaluators=(DownsampleEmbedder(),),
                         protocol=FAST, cache_dir=tmp_path / "cache", progress=False)
    assert truth["metrics"]["clip_i"]["value"] == pytest.approx(1.0, abs=1e-6)


def test_cmig_uses_sex_when_the_data_has_no_race(phantom_runs, tmp_path):
    class NoRace(RegionStatisticsEvaluator):
        outputs = ("pathology", "features", "sex", "age")

        def predict(self, images):
            outputs = super().predict(images)
            del outputs["race"]
            return outputs

    _, runs = phantom_runs
    report = evaluate(runs["identity"], tmp_path, NoRace())
    assert set(report["components"]["cmig"]["retention_terms"]) == {"sex_auroc", "age_pearson"}
    assert report["components"]["cmig"]["terms_missing"] == []


def test_fid_interval_is_the_percentile_interval_shifted_by_the_bootstrap_bias(phantom_runs, tmp_path):
    """FID is biased upwards on resamples; the reported interval is moved down by replicate_mean - value."""
    from cfbench.evaluation.scoring import _fid_metric
    from cfbench.metrics.bootstrap import bootstrap_many

    _, runs = phantom_runs
    report = evaluate(runs["tests.helpers.fake_models:NoisyEditModel"], tmp_path)
    fid = report["metrics"]["fid"]
    table = load_table(runs["tests.helpers.fake_models:NoisyEditModel"])
    raw = bootstrap_many({"fid": _fid_metric(table).compute_on}, len(table), FAST.fid_bootstrap_resamples,
                         FAST.confidence_level, FAST.bootstrap_seed)["fid"]
    bias = raw.replicate_mean - fid["value"]
    assert bias > 0  # the resampled FIDs are larger than the FID on all samples
    assert fid["ci_low"] == pytest.approx(max(0.0, raw.low - bias)) and fid["ci_high"] == pytest.approx(raw.high - bias)
    assert fid["ci_low"] <= fid["value"] <= fid["ci_high"]


def test_guidance_map_auroc_measures_the_map_against_the_true_lesion_change(tmp_path):
    """guidance_auroc = per-sample AUROC of the guidance map as a detector of the true lesion-change mask
    (scikit-learn on the same pixels), averaged: the exact mask scores 1, its complement 0."""
    from cfbench.core.images import load_image, save_png16
    from cfbench.datasets.edit_dataset import EditDataset

    data = build_phantom_dataset(tmp_path / "data", 6, seed=2, resolution=32, fractions={"holdout": 1.0},
                                 progress=False)
    settings = RunSettings(model="tests.helpers.fake_models:NoisyEditModel", split="holdout", data_dir=data,
                           out=tmp_path / "run", resolution=32)
    generate(settings, progress=False)
    report = evaluate_run(tmp_path / "run", evaluator="none", progress=False)
    dataset = EditDataset(data, "holdout", 32)
    expected = []
    for sample in dataset:
        truth = dataset.lesion_mask(sample).ravel()
        guidance = load_image(tmp_path / "run" / "guidance" / f"{sample.sample_id}.png", 32).ravel()
        if truth.any() and not truth.all():
            expected.append(roc_auc_score(truth, guidance))
    assert report["metrics"]["guidance_auroc"]["value"] == pytest.approx(np.mean(expected), abs=1e-12)
    for sample in dataset:  # now the exact masks as guidance maps: a perfect detector
        save_png16(tmp_path / "run" / "guidance" / f"{sample.sample_id}.png",
                   dataset.lesion_mask(sample).astype(np.float32))
    assert evaluate_run(tmp_path / "run", evaluator="none", progress=False)["metrics"]["guidance_auroc"][
        "value"] == pytest.approx(1.0)
