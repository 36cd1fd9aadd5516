"""Realism beside FID, seed diversity and memorisation through the real runner and evaluation, on phantoms and on
a real-layout dataset: numbers against references and hand computations, a memoriser caught."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest

from cfbench.core.images import load_image
from cfbench.datasets.edit_dataset import DatasetWriter, EditDataset
from cfbench.evaluation.evaluate import evaluate_run
from cfbench.evaluation.memorisation import thumbnail
from cfbench.evaluation.protocol import Protocol
from cfbench.evaluation.results import load_table
from cfbench.metrics.diversity import ms_ssim
from cfbench.metrics.kid import KernelInceptionDistance
from cfbench.phantom.dataset import build_phantom_dataset
from cfbench.runs.generate import RunSettings, generate
from cfbench.runs.seed_pairs import SeedPairError, generate_second_seed, second_seed_folder
from cfbench.runs.store import load_generated
from tests.helpers.datasets import make_samples
from tests.helpers.fake_models import RegionStatisticsEvaluator

FAST = Protocol(bootstrap_resamples=50, fid_bootstrap_resamples=10)
COPY = "tests.helpers.fake_models:TrainingCopyModel"
NOISE = "tests.helpers.fake_models:SeedIgnoringNoiseModel"


@pytest.fixture(scope="module")
def phantom_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("realism")
    return root, build_phantom_dataset(root / "data", 48, seed=3, resolution=64,
                                       fractions={"train": 0.5, "holdout": 0.5}, progress=False)


def _run(root, data, model, seeds=1, options=None, name=None):
    settings = RunSettings(model=model, split="holdout", data_dir=data, out=root / (name or model.split(":")[-1]),
                           resolution=64, batch_size=8, options=options or {})
    generate(settings, progress=False)
    if seeds == 2:
        generate_second_seed(settings, progress=False)
    return settings


def _evaluate(run, root, **options):
    return evaluate_run(run, evaluator=RegionStatisticsEvaluator(), protocol=FAST, cache_dir=root / "cache",
                        progress=False, **options)


def test_realism_metrics_in_metrics_json_equal_their_references(phantom_data):
    prdc = pytest.importorskip("prdc", reason="the prdc package is not installed (test extra)")
    root, data = phantom_data
    settings = _run(root, data, "tests.helpers.fake_models:NoisyEditModel")
    report = _evaluate(settings.out, root, memorisation=False)
    table = load_table(settings.out)
    real, generated = table.real["features"].astype(np.float64), table.generated["features"].astype(np.float64)
    with contextlib.redirect_stdout(io.StringIO()):
        three, five = prdc.compute_prdc(real, generated, 3), prdc.compute_prdc(real, generated, 5)
    metrics = report["metrics"]
    assert metrics["manifold_precision"]["value"] == pytest.approx(three["precision"], abs=1e-6)
    assert metrics["manifold_recall"]["value"] == pytest.approx(three["recall"], abs=1e-6)
    assert metrics["density"]["value"] == pytest.approx(five["density"], abs=1e-6)
    assert metrics["coverage"]["value"] == pytest.approx(five["coverage"], abs=1e-6)
    kid = KernelInceptionDistance()
    kid.update(real, real=True)
    kid.update(generated, real=False)
    assert metrics["kid"]["value"] == pytest.approx(kid.compute(), abs=1e-9)
    for name in ("kid", "manifold_precision", "coverage"):
        assert metrics[name]["n_resamples"] == FAST.fid_bootstrap_resamples  # FID's replicates, paired with them
        assert metrics[name]["ci_low"] <= metrics[name]["ci_high"]
    assert report["components"]["kid"]["subset_size"] == len(table)  # 24 samples < 1000: one subset size N
    assert report["components"]["manifold"] == {"precision_recall_k": 3, "density_coverage_k": 5,
                                                "distance": "Euclidean, evaluator features"}
    assert "cmig" not in report["components"] or "kid" not in report["components"]["cmig"]["accuracy_terms"]


def test_a_model_that_returns_training_images_is_caught(phantom_data):
    root, data = phantom_data
    copy = _run(root, data, COPY)
    identity = _run(root, data, "identity")
    copied = _evaluate(copy.out, root, memorisation=True)
    kept = _evaluate(identity.out, root, memorisation=True)
    # the copier: every output IS a training image (distance 0), closer to it than to its own input
    assert copied["metrics"]["closer_to_train_features"]["value"] == 1.0
    assert copied["metrics"]["closer_to_train_pixels"]["value"] == 1.0
    assert copied["metrics"]["nn_ratio_pixels"]["value"] == pytest.approx(0.0, abs=1e-6)
    # identity returns its input: ratio 1 exactly (its distance to the training set is the input's), never closer
    assert kept["metrics"]["nn_ratio_features"]["value"] == pytest.approx(1.0, abs=1e-9)
    assert kept["metrics"]["closer_to_train_pixels"]["value"] == 0.0
    record = json.loads((copy.out / "memorisation.json").read_text())
    train = EditDataset(data, "train", 64)
    assert record["n_index"] == len({s.past_dicom_id for s in train} | {s.current_dicom_id for s in train})
    worst = record["worst_cases"][0]
    folder, stem = worst["nearest_training_image"].split("/")
    sample = next(s for s in train if stem in (s.past_dicom_id, s.current_dicom_id))
    truth = train.current_image(sample) if folder == "current" else train.past_image(sample)
    # hand check: the nearest training image of the worst case is the image the model copied
    np.testing.assert_allclose(load_generated(copy.out, worst["sample_id"], 64), truth, atol=1e-4)
    np.testing.assert_allclose(load_image(copy.out / worst["image"], 64), truth, atol=1e-4)
    assert copied["memorisation"]["worst_cases"][0]["sample_id"] == worst["sample_id"]


def test_seed_diversity_tells_a_seed_ignoring_model_from_a_seed_using_one(phantom_data):
    root, data = phantom_data
    ignoring = _run(root, data, NOISE, seeds=2, name="ignoring")
    using = _run(root, data, NOISE, seeds=2, options={"use_seed": "1"}, name="using")
    exact = _run(root, data, "true-counterfactual", seeds=2)
    reports = {name: _evaluate(s.out, root, memorisation=False) for name, s in
               (("ignoring", ignoring), ("using", using), ("exact", exact))}
    for name in ("ignoring", "exact"):  # no spread: the true counterfactual's
        assert reports[name]["metrics"]["seed_ms_ssim"]["value"] == pytest.approx(1.0, abs=1e-9)
        assert reports[name]["metrics"]["seed_mae"]["value"] == 0.0
    using_metrics = reports["using"]["metrics"]
    assert using_metrics["seed_ms_ssim"]["value"] < 0.9
    # hand computation from the two run folders' images
    sample_ids = load_table(using.out).sample_ids
    second = second_seed_folder(using.out, 0)
    pairs = [(load_generated(using.out, i, 64), load_generated(second, i, 64)) for i in sample_ids]
    assert using_metrics["seed_mae"]["value"] == pytest.approx(np.mean([np.abs(a - b).mean(dtype=np.float64) for a, b in pairs]),
                                                               abs=1e-9)
    assert using_metrics["seed_ms_ssim"]["value"] == pytest.approx(
        float(np.mean(ms_ssim(np.stack([a for a, _ in pairs]), np.stack([b for _, b in pairs])))), abs=1e-9)
    assert reports["using"]["seed_pair"]["n_pairs"] == len(sample_ids)
    # resumable like any run: a second call generates nothing
    settings = RunSettings(model=NOISE, split="holdout", data_dir=data, out=using.out, resolution=64,
                           options={"use_seed": "1"})
    again = generate_second_seed(settings, progress=False)
    assert again.generated == 0 and again.already_done == again.total


def test_a_foreign_second_seed_folder_is_refused(phantom_data):
    root, data = phantom_data
    settings = _run(root, data, "identity", name="foreign")
    other = RunSettings(model=NOISE, split="holdout", data_dir=data, out=second_seed_folder(settings.out, 0),
                        resolution=64, seed=1)
    generate(other, progress=False)
    with pytest.raises(SeedPairError, match="is not the second seed of .*model: 'identity'"):
        _evaluate(settings.out, root, memorisation=False)


def _real_layout(root, n_train=10, n_holdout=12, size=64):
    rng = np.random.default_rng(0)
    writer = DatasetWriter(root)
    for split, n, prefix in (("train", n_train, "t"), ("holdout", n_holdout, "h")):
        for sample in make_samples(n, split):
            sample.sample_id = prefix + sample.sample_id
            sample.past_dicom_id, sample.current_dicom_id = prefix + sample.past_dicom_id, prefix + sample.current_dicom_id
            smooth = np.cumsum(np.cumsum(rng.normal(size=(2, size, size)), axis=1), axis=2)
            images = ((smooth - smooth.min()) / np.ptp(smooth)).astype(np.float32)
            writer.add(sample, images[0], images[1])
    writer.close(info={"kind": "real-layout test fixture"})
    return root


def test_everything_runs_on_a_real_layout_dataset(tmp_path):
    data = _real_layout(tmp_path / "data")
    runs = {}
    for model in (COPY, "identity"):
        settings = RunSettings(model=model, split="holdout", data_dir=data, out=tmp_path / model.split(":")[-1],
                               resolution=64, batch_size=4)
        generate(settings, progress=False)
        generate_second_seed(settings, progress=False)
        runs[model] = _evaluate(settings.out, tmp_path, memorisation=True)
    copied, kept = runs[COPY]["metrics"], runs["identity"]["metrics"]
    assert copied["closer_to_train_pixels"]["value"] == 1.0 and kept["closer_to_train_pixels"]["value"] == 0.0
    assert kept["seed_ms_ssim"]["value"] == pytest.approx(1.0, abs=1e-9)
    for name in ("kid", "manifold_precision", "manifold_recall", "density", "coverage"):
        assert copied[name]["value"] is not None and kept[name]["value"] is not None
    # identity's outputs are the priors: the index finds each one's distance to the training set as its input's
    train = EditDataset(data, "train", 64)
    rows = np.stack([thumbnail(train.past_image(s)) for s in train] + [thumbnail(train.current_image(s)) for s in train])
    assert runs["identity"]["memorisation"]["n_index"] == len(rows) == 20
    # without a train split the measures are skipped with the reason, the rest still computed
    holdout_only = _real_layout(tmp_path / "holdout-only", n_train=0)
    settings = RunSettings(model="identity", split="holdout", data_dir=holdout_only, out=tmp_path / "h-only",
                           resolution=64)
    generate(settings, progress=False)
    report = _evaluate(settings.out, tmp_path, memorisation=True)
    assert "no train split" in report["memorisation"]["skipped"] and "closer_to_train_pixels" not in report["metrics"]


def test_phantom_data_without_a_train_split_use_the_training_stream_and_the_index_is_cached(tmp_path, monkeypatch):
    import cfbench.evaluation.memorisation as memorisation

    monkeypatch.setattr(memorisation, "PHANTOM_TRAINING_PAIRS", 40)  # the demo's 200, fewer for speed
    data = build_phantom_dataset(tmp_path / "data", 12, seed=8, resolution=64, fractions={"demo": 1.0},
                                 progress=False)
    settings = RunSettings(model="identity", split="demo", data_dir=data, out=tmp_path / "run", resolution=64)
    generate(settings, progress=False)
    first = _evaluate(settings.out, tmp_path, memorisation=True)
    assert first["memorisation"]["source"] == "phantom training stream, 40 pairs"
    assert first["memorisation"]["n_index"] == 80
    assert first["metrics"]["nn_ratio_pixels"]["value"] == pytest.approx(1.0, abs=1e-9)  # outputs = inputs
    (index_file,) = (tmp_path / "cache" / "memorisation-index").glob("*.npz")
    built = index_file.stat().st_mtime_ns
    again = _evaluate(settings.out, tmp_path, memorisation=True)
    assert index_file.stat().st_mtime_ns == built  # read back, not rebuilt
    assert again["metrics"]["nn_ratio_features"] == first["metrics"]["nn_ratio_features"]
    index_file.write_bytes(b"not an npz")  # a damaged cache entry is rebuilt, never trusted
    rebuilt = _evaluate(settings.out, tmp_path, memorisation=True)
    assert rebuilt["metrics"]["nn_ratio_features"] == first["metrics"]["nn_ratio_features"]
    with np.load(index_file) as archive:
        assert archive["thumbnails"].shape == (80, 32 * 32)


def test_leaderboard_has_the_realism_table_and_the_memorisation_page(phantom_data, tmp_path):
    from cfbench.leaderboard.write import write_leaderboard

    root, data = phantom_data
    copy = _run(root, data, COPY)
    noisy = _run(root, data, NOISE, seeds=2, options={"use_seed": "1"}, name="using")
    _evaluate(copy.out, root, memorisation=True)
    report = _evaluate(noisy.out, root)
    result = write_leaderboard([copy.out, noisy.out], tmp_path / "board", plots=False, gallery_samples=2)
    table = (tmp_path / "board" / "realism.md").read_text()
    assert "Realism and diversity" in table and "Seed MS-SSIM" in table and "Closer to train" in table
    row = next(line for line in table.splitlines() if line.startswith("| seed-noise"))
    assert f"{report['metrics']['seed_ms_ssim']['value']:.3f}" in row
    assert "realism.csv" in {p.name for p in result["written"]}
    page = (tmp_path / "board" / "gallery" / "memorisation.html").read_text()
    assert "nearest training image" in page and "training-copy" in page
    assert len(list((tmp_path / "board" / "gallery" / "img").glob("memorisation__*.png"))) == 3 * 8
    assert "gallery/memorisation.html" in (tmp_path / "board" / "README.md").read_text()


def test_cli_seeds_and_memorisation(tmp_path, capsys):
    from cfbench.cli import main

    data = _real_layout(tmp_path / "data", n_train=4, n_holdout=8)
    out = tmp_path / "run"
    arguments = ["run", "--model", NOISE, "--option", "use_seed=1", "--split", "holdout", "--data", str(data),
                 "--out", str(out), "--resolution", "64", "--seeds", "2", "--memorisation", "--evaluator", "none",
                 "--bootstrap", "20", "--fid-bootstrap", "0"]
    assert main(arguments) == 0
    printed = capsys.readouterr().out
    assert f"run folder: {out / 'seeds' / 'seed1'}" in printed
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert 0 < metrics["seed_ms_ssim"]["value"] < 1 and metrics["seed_ms_ssim"]["n"] == 8
    assert "closer_to_train_pixels" in metrics and "closer_to_train_features" not in metrics  # no evaluator
    assert main(arguments) == 0  # resumed: both folders complete, nothing generated again
    assert printed.count("8 generated now") == 2 and capsys.readouterr().out.count("8 already done") == 2
