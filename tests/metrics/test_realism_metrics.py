"""KID, precision/recall/density/coverage against their reference implementations (torchmetrics, prdc) and
hand-computed bootstrap replicates."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest

from cfbench.metrics.kid import KernelInceptionDistance, polynomial_kernel
from cfbench.metrics.manifold import MANIFOLD_METRICS, ManifoldEstimates


def _features(n: int = 60, d: int = 16, shift: float = 0.3, seed: int = 0):
    rng = np.random.default_rng(seed)
    real = rng.normal(size=(n, d))
    generated = rng.normal(loc=shift, scale=1.2, size=(n, d))
    return real, generated


def _kid(real, generated, **options) -> KernelInceptionDistance:
    kid = KernelInceptionDistance(**options)
    kid.update(real[:25], real=True)
    kid.update(real[25:], real=True)
    kid.update(generated, real=False)
    return kid


def test_kid_equals_torchmetrics_on_all_samples_and_on_its_subsets():
    torch = pytest.importorskip("torch")
    image_kid = pytest.importorskip("torchmetrics.image.kid", reason="torchmetrics is not installed (test extra)")
    real, generated = _features()
    identity = torch.nn.Identity()  # the features are given: torchmetrics' custom-extractor path
    reference = image_kid.KernelInceptionDistance(feature=identity, subsets=1, subset_size=len(real))
    reference.update(torch.from_numpy(real), real=True)
    reference.update(torch.from_numpy(generated), real=False)
    expected, _ = reference.compute()
    assert _kid(real, generated).compute() == pytest.approx(float(expected), abs=1e-6, rel=1e-6)

    # the anchors' subset mean and std, from the same subsets torch draws
    reference = image_kid.KernelInceptionDistance(feature=identity, subsets=7, subset_size=20)
    reference.update(torch.from_numpy(real), real=True)
    reference.update(torch.from_numpy(generated), real=False)
    torch.manual_seed(3)
    expected_mean, expected_std = reference.compute()
    torch.manual_seed(3)
    draws = [(torch.randperm(len(real))[:20].numpy(), torch.randperm(len(generated))[:20].numpy()) for _ in range(7)]
    mean, std, size = _kid(real, generated, subsets=7, subset_size=20).compute_subsets(subset_indices=draws)
    assert size == 20
    assert mean == pytest.approx(float(expected_mean), abs=1e-6, rel=1e-6)
    assert std == pytest.approx(float(expected_std), abs=1e-6, rel=1e-6)


def test_kid_replicates_are_the_distinct_pair_u_statistic():
    real, generated = _features(n=12, d=4)
    kid = _kid(real, generated)
    assert kid.compute_on(np.arange(12)) == pytest.approx(kid.compute(), abs=1e-12)
    indices = np.array([0, 0, 3, 5, 5, 5, 7, 8, 9, 10, 11, 2])
    # hand-computed over positions p, q: within terms on pairs whose samples differ; the cross term on those and
    # on each position's own matched pair (p == q), not on two positions drawing the same sample
    k_real, k_generated = polynomial_kernel(real, real), polynomial_kernel(generated, generated)
    k_cross = polynomial_kernel(real, generated)
    positions = range(len(indices))
    pairs = [(indices[p], indices[q]) for p in positions for q in positions if indices[p] != indices[q]]
    crossed = pairs + [(i, i) for i in indices]
    expected = (np.mean([k_real[a, b] for a, b in pairs]) + np.mean([k_generated[a, b] for a, b in pairs])
                - 2 * np.mean([k_cross[a, b] for a, b in crossed]))
    assert kid.compute_on(indices) == pytest.approx(expected, abs=1e-10)
    # a second draw of the same distribution: near 0 (unbiased, may be negative); a shifted one: clearly positive
    same_real, _ = _features(n=60, d=4, seed=1)
    other_real, shifted = _features(n=60, d=4, seed=2)
    assert abs(_kid(same_real, other_real).compute()) < 0.2 * _kid(same_real, shifted).compute()


def _reference_prdc(real, generated, k):
    prdc = pytest.importorskip("prdc", reason="the prdc package is not installed (test extra)")
    with contextlib.redirect_stdout(io.StringIO()):  # prdc prints the sample counts
        return prdc.compute_prdc(real, generated, nearest_k=k)


@pytest.mark.parametrize("k", [3, 5])
def test_manifold_estimates_equal_prdc(k):
    real, generated = _features(n=80, d=8)
    manifold = ManifoldEstimates(precision_recall_k=k, density_coverage_k=k)
    manifold.update(real, real=True)
    manifold.update(generated[:30], real=False)
    manifold.update(generated[30:], real=False)
    ours, expected = manifold.compute(), _reference_prdc(real, generated, k)
    for name in MANIFOLD_METRICS:
        assert ours[name] == pytest.approx(float(expected[name]), abs=1e-6), name
    assert 0 < ours["precision"] < 1 and 0 < ours["coverage"] < 1


def test_manifold_defaults_use_each_papers_k():
    real, generated = _features(n=50, d=6, seed=4)
    manifold = ManifoldEstimates()
    manifold.update(real, real=True)
    manifold.update(generated, real=False)
    values = manifold.compute()
    three, five = _reference_prdc(real, generated, 3), _reference_prdc(real, generated, 5)
    assert values["precision"] == pytest.approx(three["precision"], abs=1e-6)
    assert values["recall"] == pytest.approx(three["recall"], abs=1e-6)
    assert values["density"] == pytest.approx(five["density"], abs=1e-6)
    assert values["coverage"] == pytest.approx(five["coverage"], abs=1e-6)


def test_manifold_replicate_uses_distinct_samples_weighted_by_counts():
    real, generated = _features(n=20, d=3, seed=2)
    manifold = ManifoldEstimates(3, 3)
    manifold.update(real, real=True)
    manifold.update(generated, real=False)
    assert manifold.compute_on(np.arange(20)) == manifold.compute()
    indices = np.array([0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 10, 11, 12, 13, 14, 15, 16])
    distinct = np.unique(indices)
    # the replicate's manifolds are the distinct samples' (prdc on them); its averages weight by the counts
    counts = np.bincount(indices)[distinct]
    reference = ManifoldEstimates(3, 3)
    reference.update(real[distinct], real=True)
    reference.update(generated[distinct], real=False)
    distances = np.linalg.norm(real[distinct][:, None] - generated[distinct][None], axis=2)
    radii = np.sort(np.linalg.norm(real[distinct][:, None] - real[distinct][None], axis=2), axis=1)[:, 3]
    inside = distances < radii[:, None]
    expected_precision = (counts * inside.any(axis=0)).sum() / counts.sum()
    expected_density = (counts * inside.sum(axis=0)).sum() / (3 * counts.sum())
    replicate = manifold.compute_on(indices)
    assert replicate["precision"] == pytest.approx(expected_precision, abs=1e-12)
    assert replicate["density"] == pytest.approx(expected_density, abs=1e-12)
    assert np.isnan(manifold.compute_on(np.array([1, 1, 2, 2]))["precision"])  # 2 distinct samples <= k


def test_manifold_catches_mode_collapse_and_copies():
    """A generator that returns one real image for every input: precision stays high, recall and coverage
    fall (the fidelity/coverage split FID mixes in one number); copies of the real set score (1, 1, ~1, 1)."""
    real, _ = _features(n=40, d=5, seed=7)
    collapsed = np.repeat(real[:1], 40, axis=0) + 1e-6 * np.random.default_rng(0).normal(size=(40, 5))
    manifold = ManifoldEstimates()
    manifold.update(real, real=True)
    manifold.update(collapsed, real=False)
    values = manifold.compute()
    assert values["precision"] == 1.0 and values["coverage"] <= 0.5 and values["recall"] <= 0.1
    copies = ManifoldEstimates()
    copies.update(real, real=True)
    copies.update(real + 1e-9, real=False)
    assert copies.compute()["coverage"] == 1.0 and copies.compute()["recall"] == 1.0


def test_feature_metrics_reject_too_few_samples():
    manifold = ManifoldEstimates()
    manifold.update(np.zeros((4, 2)), real=True)
    manifold.update(np.zeros((4, 2)), real=False)
    with pytest.raises(ValueError, match="k = 5 needs at least 6"):
        manifold.compute()
    kid = KernelInceptionDistance()
    with pytest.raises(RuntimeError, match="before any sample"):
        kid.compute()
