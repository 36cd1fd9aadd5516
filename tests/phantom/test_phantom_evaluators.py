"""The shipped phantom evaluator CNN: targets on fresh phantoms, the Evaluator contract, weights-file
errors, and an end-to-end tiny training run (deterministic)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from cfbench.api.evaluator import OUTPUT_KEYS
from cfbench.core.findings import EVALUATED_FINDINGS
from cfbench.phantom.evaluator import (
    DEFAULT_WEIGHTS,
    INPUT_SIZE,
    SCORES_NAME,
    WEIGHTS_NAME,
    PhantomEvaluator,
    PhantomNet,
    load_net,
    resize_to_input,
    weights_metadata,
)
from cfbench.phantom.evaluator_training import (
    TARGET_AGE_PEARSON,
    TARGET_AUROC,
    TEST_STREAM,
    PhantomExamples,
    example_labels,
    render_example,
    render_examples,
    sample_example,
    score_outputs,
    stack_examples,
    train_phantom_evaluators,
)
from cfbench.phantom.render import render
from cfbench.phantom.scenario import GROUPS, PHANTOM_VERSION

N_FRESH = 160  # fresh held-out phantoms, rendered at the benchmark's default 512 px
FRESH_SIZE = 512


@pytest.fixture(scope="module")
def evaluator() -> PhantomEvaluator:
    return PhantomEvaluator.from_file()


@pytest.fixture(scope="module")
def fresh_set() -> tuple[np.ndarray, PhantomExamples]:
    """Full-size images (for predict) and labels of phantoms from the tests' own seed stream."""
    images, labels = [], []
    for index in range(N_FRESH):
        patient, findings, pose, noise_seed = sample_example(0, TEST_STREAM, index)
        images.append(render(patient, findings, pose, noise_seed, FRESH_SIZE))
        labels.append(example_labels(patient, findings))
    return np.stack(images), stack_examples([image[::4, ::4] for image in images], labels)


def test_shipped_files_exist_and_are_small():
    assert DEFAULT_WEIGHTS.is_file()
    assert DEFAULT_WEIGHTS.stat().st_size < 5 * 1024 * 1024
    assert (DEFAULT_WEIGHTS.parent / SCORES_NAME).is_file()


def test_recorded_heldout_scores_meet_targets(evaluator):
    record = json.loads((DEFAULT_WEIGHTS.parent / SCORES_NAME).read_text())
    held = record["heldout"]
    for finding in EVALUATED_FINDINGS:
        assert held["auroc"][finding] >= TARGET_AUROC, finding
    assert held["group_auroc"] >= TARGET_AUROC
    assert held["age_pearson"] >= TARGET_AGE_PEARSON
    assert held["targets_met"] is True
    assert record["weights_sha256"] == evaluator.identity()["weights_sha256"]
    assert record["phantom_version"] == PHANTOM_VERSION


def test_shipped_weights_meet_targets_on_fresh_phantoms(evaluator, fresh_set):
    images, labels = fresh_set
    scores = score_outputs(evaluator.predict(images), labels)
    for finding in EVALUATED_FINDINGS:
        assert scores["auroc"][finding] >= 0.90, (finding, scores["auroc"])
    assert scores["group_auroc"] >= 0.90
    assert scores["sex_auroc"] >= 0.90
    assert scores["age_pearson"] >= 0.85


def test_identity(evaluator):
    identity = evaluator.identity()
    assert identity["evaluator"] == "phantom-cnn"
    assert len(identity["weights_sha256"]) == 64
    assert identity["phantom_version"] == PHANTOM_VERSION
    assert identity["input_size"] == INPUT_SIZE == 128


@pytest.mark.parametrize("size", [64, 256, 512])
def test_output_contract(evaluator, size):
    rng = np.random.default_rng(size)
    images = rng.uniform(0.0, 1.0, size=(3, size, size)).astype(np.float32)
    out = evaluator.predict(images)
    assert set(out) == set(PhantomEvaluator.outputs) <= set(OUTPUT_KEYS)
    assert evaluator.race_classes == GROUPS
    shapes = {"pathology": (3, 5), "features": (3, evaluator.net.feature_dim), "race": (3, 3), "sex": (3,), "age": (3,)}
    for key, shape in shapes.items():
        assert out[key].shape == shape, key
        assert out[key].dtype == np.float32, key
        assert np.isfinite(out[key]).all(), key
    for key in ("pathology", "race", "sex"):
        assert (out[key] >= 0).all() and (out[key] <= 1).all(), key
    np.testing.assert_allclose(out["race"].sum(axis=1), 1.0, atol=1e-5)
    assert (out["features"] >= 0).all()


def test_batched_equals_one_by_one(evaluator, fresh_set):
    images = fresh_set[0][:5]
    batched = evaluator.predict(images)
    single = [evaluator.predict(image[None]) for image in images]
    for key in batched:
        np.testing.assert_allclose(batched[key], np.concatenate([s[key] for s in single]), atol=1e-5, rtol=1e-5)


def test_rejects_wrongly_scaled_input(evaluator, fresh_set):
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        evaluator.predict(fresh_set[0][:2] * 2.0 - 1.0)


def test_resize_is_antialiased_bilinear():
    image = torch.rand(2, 512, 512)
    expected = torch.nn.functional.interpolate(image[:, None], size=(128, 128), mode="bilinear", antialias=True,
                                               align_corners=False)
    assert torch.equal(resize_to_input(image), expected)
    assert resize_to_input(image[:, :128, :128]).shape == (2, 1, 128, 128)


def test_missing_weights_file_names_it(tmp_path):
    path = tmp_path / "nothing.safetensors"
    with pytest.raises(FileNotFoundError, match="nothing.safetensors"):
        PhantomEvaluator.from_file(path)


def test_wrong_weights_file_names_it(tmp_path):
    # tensors of a narrower network, metadata claiming the default architecture
    small = PhantomNet(channels=(8, 16, 32, 64, 128))
    path = tmp_path / "wrong.safetensors"
    save_file({k: v.contiguous() for k, v in small.state_dict().items()}, str(path),
              metadata=weights_metadata(PhantomNet()))
    with pytest.raises(ValueError, match="wrong.safetensors.*do not match"):
        PhantomEvaluator.from_file(path)
    # a safetensors file that is not a phantom evaluator at all
    other = tmp_path / "other.safetensors"
    save_file({"weight": torch.zeros(3, 3)}, str(other))
    with pytest.raises(ValueError, match="other.safetensors.*not a phantom evaluator"):
        load_net(other)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file at all")
    with pytest.raises(ValueError, match="garbage.safetensors"):
        load_net(garbage)


def test_parallel_rendering_matches_serial():
    serial = render_examples(3, 5, TEST_STREAM, resolution=32, weak_fraction=0.5, workers=1, progress=False)
    parallel = render_examples(3, 5, TEST_STREAM, resolution=32, weak_fraction=0.5, workers=2, progress=False)
    np.testing.assert_array_equal(serial.images, parallel.images)
    np.testing.assert_array_equal(serial.findings, parallel.findings)
    image, *_ = render_example((5, TEST_STREAM, 0, 32, 0.5))
    assert image.shape == (INPUT_SIZE, INPUT_SIZE) and image.dtype == np.float16


def test_tiny_training_run_is_deterministic_and_loadable(tmp_path):
    kwargs = dict(n_train=48, n_val=24, epochs=1, seed=3, resolution=64, workers=1, progress=False, batch_size=16)
    first = train_phantom_evaluators(tmp_path / "a", **kwargs)
    second = train_phantom_evaluators(tmp_path / "b", **kwargs)
    for folder in ("a", "b"):
        assert (tmp_path / folder / WEIGHTS_NAME).is_file() and (tmp_path / folder / SCORES_NAME).is_file()
    assert first["weights_sha256"] == second["weights_sha256"]
    recorded = json.loads((tmp_path / "a" / SCORES_NAME).read_text())
    assert recorded["training"]["n_train"] == 48 and recorded["training"]["resolution"] == 64
    assert set(recorded["heldout"]["auroc"]) == set(EVALUATED_FINDINGS)
    loaded = PhantomEvaluator.from_file(tmp_path / "a" / WEIGHTS_NAME)
    out = loaded.predict(np.full((2, 64, 64), 0.5, np.float32))
    assert out["pathology"].shape == (2, 5)
    net_a, _ = load_net(tmp_path / "a" / WEIGHTS_NAME)
    net_b, _ = load_net(tmp_path / "b" / WEIGHTS_NAME)
    for (name, a), (_, b) in zip(net_a.state_dict().items(), net_b.state_dict().items()):
        assert torch.equal(a, b), name
