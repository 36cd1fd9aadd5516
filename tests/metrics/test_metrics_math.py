"""The metric mathematics against reference implementations (scikit-learn, scipy) and hand computations."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import scipy.linalg
from scipy.stats import norm, pearsonr
from sklearn.metrics import f1_score, roc_auc_score

from cfbench.core.findings import EVALUATED_FINDINGS
from cfbench.metrics import (
    BinaryAUROC,
    FrechetDistance,
    LabelPolicy,
    MeanProbability,
    MulticlassAUROC,
    PathologyAUROC,
    PathologyF1,
    PathologyKLDivergence,
    PearsonCorrelation,
    bernoulli_kl,
    binary_auroc,
    bootstrap_ci,
    bootstrap_many,
    bootstrap_metric,
    cmig,
    cmig_from_metrics,
    frechet_distance,
    frechet_distance_from_factors,
    frechet_distance_from_features,
    paired_difference_ci,
)
from cfbench.metrics.bootstrap import resample_indices


def _batches(n: int, sizes=(1, 7, 50)):
    """Split range(n) into consecutive slices of varying size."""
    start, k = 0, 0
    while start < n:
        stop = min(n, start + sizes[k % len(sizes)])
        yield slice(start, stop)
        start, k = stop, k + 1


# ---------------------------------------------------------------------------------------------------- AUROC


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_binary_auroc_equals_sklearn_with_ties_and_streaming(seed):
    rng = np.random.default_rng(seed)
    n = 400
    labels = rng.integers(0, 2, n)
    scores = np.round(rng.normal(labels * 0.7, 1.0), 1)  # rounding makes many ties
    assert len(np.unique(scores)) < n / 2
    expected = roc_auc_score(labels, scores)

    whole = BinaryAUROC()
    whole.update(scores, labels)
    streamed = BinaryAUROC()
    for part in _batches(n):
        streamed.update(scores[part], labels[part])
    assert whole.compute() == pytest.approx(expected, abs=1e-12)
    assert streamed.compute() == pytest.approx(expected, abs=1e-12)
    assert streamed.num_samples == n
    assert streamed.undefined_reason() is None


@pytest.mark.parametrize("values", [400, 3, 1])
def test_average_ranks_equal_scipy_rankdata_value_for_value(values):
    from scipy.stats import rankdata

    from cfbench.metrics.classification import average_ranks

    scores = np.random.default_rng(values).integers(0, values, 500).astype(np.float64)  # few values: many ties
    assert np.array_equal(average_ranks(scores), rankdata(scores))
    assert np.array_equal(average_ranks(np.array([2.5, -1.0, 7.0])), [2.0, 1.0, 3.0])
    with_nan = np.array([1.0, np.nan, 0.0])
    assert np.array_equal(average_ranks(with_nan), rankdata(with_nan), equal_nan=True)


def test_binary_auroc_all_ties_is_one_half():
    assert binary_auroc(np.array([0, 1, 0, 1]), np.zeros(4)) == 0.5


@pytest.mark.parametrize("seed", [0, 1])
def test_multiclass_auroc_equals_sklearn_ovr_macro(seed):
    rng = np.random.default_rng(seed)
    n, k = 300, 3
    labels = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) + 0.8 * np.eye(k)[labels]
    logits = np.round(logits, 1)  # ties
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    expected = roc_auc_score(labels, probabilities, multi_class="ovr", average="macro")

    metric = MulticlassAUROC(class_names=["Asian", "Black", "White"])
    for part in _batches(n):
        metric.update(probabilities[part], labels[part])
    assert metric.compute() == pytest.approx(expected, abs=1e-12)
    per_class = metric.compute_per_class()
    assert list(per_class) == ["Asian", "Black", "White"]
    assert per_class["Black"] == pytest.approx(roc_auc_score(labels == 1, probabilities[:, 1]), abs=1e-12)


def test_multiclass_auroc_missing_class_is_nan_with_reason():
    metric = MulticlassAUROC(num_classes=3)
    metric.update(np.full((4, 3), 1 / 3), np.array([0, 1, 0, 1]))
    assert math.isnan(metric.compute())
    assert "2" in metric.undefined_reason()


def test_pathology_auroc_equals_sklearn_per_finding_without_exclusions():
    rng = np.random.default_rng(3)
    n = 250
    labels = rng.integers(0, 2, (n, 5)).astype(float)
    probabilities = rng.uniform(size=(n, 5)) * 0.6 + labels * 0.3
    metric = PathologyAUROC()
    for part in _batches(n):
        metric.update(probabilities[part], labels[part])
    result = metric.compute()
    expected = [roc_auc_score(labels[:, f], probabilities[:, f]) for f in range(5)]
    assert list(result["per_finding"]) == list(EVALUATED_FINDINGS)
    assert list(result["per_finding"].values()) == pytest.approx(expected, abs=1e-12)
    assert result["mean"] == pytest.approx(np.mean(expected), abs=1e-12)
    assert result["reasons"] == {}
    assert metric.compute_on(np.arange(n)) == pytest.approx(result["mean"], abs=1e-15)


# A hand-made case for the label policies: one finding, eight samples.
#   label:   1    1    0    0   -1   -1   nan  nan
#   score: 0.9  0.4  0.5  0.1  0.8  0.2  0.7  0.3
_POLICY_LABELS = np.array([1, 1, 0, 0, -1, -1, np.nan, np.nan])
_POLICY_SCORES = np.array([0.9, 0.4, 0.5, 0.1, 0.8, 0.2, 0.7, 0.3])


@pytest.mark.parametrize(
    "policy, kept, binary",
    [
        # exclude/exclude: samples 0-3 only
        (LabelPolicy(), [0, 1, 2, 3], [1, 1, 0, 0]),
        # uncertain -> positive, blank excluded
        (LabelPolicy(uncertain="positive"), [0, 1, 2, 3, 4, 5], [1, 1, 0, 0, 1, 1]),
        # uncertain -> negative, blank excluded
        (LabelPolicy(uncertain="negative"), [0, 1, 2, 3, 4, 5], [1, 1, 0, 0, 0, 0]),
        # uncertain excluded, blank -> negative
        (LabelPolicy(blank="negative"), [0, 1, 2, 3, 6, 7], [1, 1, 0, 0, 0, 0]),
        # uncertain -> positive, blank -> negative: nothing excluded
        (LabelPolicy("positive", "negative"), list(range(8)), [1, 1, 0, 0, 1, 1, 0, 0]),
    ],
)
def test_label_policies_exclude_and_map_as_declared(policy, kept, binary):
    metric = PathologyAUROC(findings=["Edema"], policy=policy)
    metric.update(_POLICY_SCORES[:, None], _POLICY_LABELS[:, None])
    result = metric.compute()
    expected = roc_auc_score(binary, _POLICY_SCORES[kept])
    assert result["per_finding"]["Edema"] == pytest.approx(expected, abs=1e-12)
    assert result["n"]["Edema"] == {
        "positive": sum(binary),
        "negative": len(binary) - sum(binary),
        "excluded": 8 - len(kept),
    }


def test_label_policy_exclusion_is_per_finding():
    # Finding 0 has an uncertain label on sample 0; finding 1 must still use sample 0.
    labels = np.array([[-1, 1], [1, 0], [0, 1], [1, 0]], dtype=float)
    scores = np.array([[0.9, 0.1], [0.8, 0.9], [0.2, 0.3], [0.6, 0.2]])
    metric = PathologyAUROC(findings=["Atelectasis", "Edema"])
    metric.update(scores, labels)
    result = metric.compute()
    assert result["n"]["Atelectasis"]["excluded"] == 1
    assert result["n"]["Edema"]["excluded"] == 0
    assert result["per_finding"]["Atelectasis"] == pytest.approx(roc_auc_score([1, 0, 1], [0.8, 0.2, 0.6]))
    assert result["per_finding"]["Edema"] == pytest.approx(roc_auc_score([1, 0, 1, 0], scores[:, 1]))


def test_labels_given_as_none_are_blank():
    metric = PathologyAUROC(findings=["Edema"])
    metric.update(np.array([[0.9], [0.1], [0.5]]), np.array([[1.0], [0.0], [None]], dtype=object))
    assert metric.compute()["n"]["Edema"] == {"positive": 1, "negative": 1, "excluded": 1}


def test_single_class_finding_is_nan_with_reason_and_mean_policy():
    labels = np.array([[1, 1], [0, 1], [1, 1], [0, 1]], dtype=float)
    scores = np.array([[0.9, 0.1], [0.1, 0.9], [0.7, 0.3], [0.4, 0.2]])
    strict = PathologyAUROC(findings=["Edema", "Pneumothorax"])
    strict.update(scores, labels)
    result = strict.compute()
    assert result["per_finding"]["Edema"] == 1.0
    assert math.isnan(result["per_finding"]["Pneumothorax"])
    assert "only positive" in result["reasons"]["Pneumothorax"]
    assert math.isnan(result["mean"])
    lenient = PathologyAUROC(findings=["Edema", "Pneumothorax"], mean_over_defined=True)
    lenient.update(scores, labels)
    assert lenient.compute()["mean"] == 1.0


def test_invalid_inputs_raise_clear_errors():
    with pytest.raises(RuntimeError, match="PathologyAUROC"):
        PathologyAUROC().compute()
    with pytest.raises(RuntimeError, match="PearsonCorrelation"):
        PearsonCorrelation().compute()
    with pytest.raises(RuntimeError, match="FrechetDistance"):
        FrechetDistance(num_features=4).compute()
    with pytest.raises(RuntimeError, match="MeanProbability"):
        MeanProbability().compute()
    with pytest.raises(ValueError, match=r"\(3,\).*\(4,\)"):
        BinaryAUROC().update(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match=r"\(2, 4\)"):
        PathologyAUROC().update(np.zeros((2, 4)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="NaN"):
        PathologyAUROC().update(np.full((1, 5), np.nan), np.zeros((1, 5)))
    with pytest.raises(ValueError, match="NaN"):
        PearsonCorrelation().update(np.array([1.0, np.nan]), np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="labels must be"):
        PathologyAUROC().update(np.zeros((1, 5)), np.full((1, 5), 2.0))
    with pytest.raises(ValueError, match="uncertain"):
        LabelPolicy(uncertain="maybe")
    with pytest.raises(ValueError, match=r"\(B, 8\)"):
        FrechetDistance(num_features=8).update(np.zeros((2, 7)), real=True)


# ---------------------------------------------------------------------------------------------------- F1


@pytest.mark.parametrize("threshold", [0.5, 0.3])
def test_f1_equals_sklearn_per_finding_and_macro(threshold):
    rng = np.random.default_rng(4)
    n = 200
    labels = rng.integers(0, 2, (n, 5)).astype(float)
    probabilities = np.clip(rng.uniform(size=(n, 5)) * 0.7 + labels * 0.25, 0, 1)
    probabilities[:10] = threshold  # exactly at the threshold counts as positive
    metric = PathologyF1(threshold=threshold)
    for part in _batches(n):
        metric.update(probabilities[part], labels[part])
    result = metric.compute()
    predicted = (probabilities >= threshold).astype(int)
    expected = [f1_score(labels[:, f], predicted[:, f]) for f in range(5)]
    assert list(result["per_finding"].values()) == pytest.approx(expected, abs=1e-12)
    assert result["macro"] == pytest.approx(f1_score(labels, predicted, average="macro"), abs=1e-12)
    assert metric.compute_on(np.arange(n)) == pytest.approx(result["macro"], abs=1e-15)


def test_f1_zero_over_zero_is_nan_with_reason_or_declared_value():
    labels = np.zeros((3, 1))
    probabilities = np.array([[0.1], [0.2], [0.3]])
    metric = PathologyF1(findings=["Edema"])
    metric.update(probabilities, labels)
    result = metric.compute()
    assert math.isnan(result["per_finding"]["Edema"]) and "0/0" in result["reasons"]["Edema"]
    as_sklearn = PathologyF1(findings=["Edema"], zero_division=0.0)
    as_sklearn.update(probabilities, labels)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert as_sklearn.compute()["per_finding"]["Edema"] == f1_score(labels[:, 0], np.zeros(3), zero_division=0.0)


# ---------------------------------------------------------------------------------------------------- Pearson


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pearson_equals_scipy(seed):
    rng = np.random.default_rng(seed)
    true_age = rng.uniform(20, 90, 300)
    predicted = true_age * rng.uniform(-1, 1) + rng.normal(0, 15, 300) + 1000.0  # large offset
    metric = PearsonCorrelation()
    for part in _batches(300):
        metric.update(predicted[part], true_age[part])
    assert metric.compute() == pytest.approx(pearsonr(predicted, true_age).statistic, abs=1e-12)


def test_pearson_constant_input_is_nan_with_reason():
    metric = PearsonCorrelation()
    metric.update(np.array([50.0, 50.0, 50.0]), np.array([30.0, 40.0, 50.0]))
    assert math.isnan(metric.compute())
    assert "constant predicted" in metric.undefined_reason()


# ---------------------------------------------------------------------------------------------------- FID


def _independent_fid(real: np.ndarray, generated: np.ndarray) -> float:
    """pytorch-fid's formula: np.cov statistics and scipy.linalg.sqrtm of the covariance product."""
    mu1, mu2 = real.mean(0), generated.mean(0)
    s1, s2 = np.cov(real, rowvar=False), np.cov(generated, rowvar=False)
    root = scipy.linalg.sqrtm(s1 @ s2)
    assert np.abs(np.diagonal(root).imag).max() < 1e-3 if np.iscomplexobj(root) else True
    return float((mu1 - mu2) @ (mu1 - mu2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(root.real))


def _feature_sets(rng, n_real, n_generated, d):
    real = rng.normal(size=(n_real, d)) @ (np.eye(d) + 0.1 * rng.normal(size=(d, d))) + 2.0
    mixing = np.eye(d) + 0.15 * rng.normal(size=(d, d))
    generated = rng.normal(size=(n_generated, d)) @ mixing + 2.0 + 0.2 * rng.normal(size=d)
    return real.astype(np.float32), generated.astype(np.float32)


@pytest.mark.parametrize("n, d", [(300, 64), (500, 1024)])
def test_streaming_fid_equals_batch_fid_equals_independent_formula(n, d):
    rng = np.random.default_rng(d)
    real, generated = _feature_sets(rng, n, n + 37, d)
    metric = FrechetDistance(num_features=d)
    for part in _batches(len(real), sizes=(64, 1, 100)):
        metric.update(real[part], real=True)
    for part in _batches(len(generated), sizes=(128, 3)):
        metric.update(generated[part], real=False)
    streamed = metric.compute()
    batch = frechet_distance_from_features(real, generated)
    independent = _independent_fid(real.astype(np.float64), generated.astype(np.float64))
    assert independent > 1.0
    assert streamed == pytest.approx(batch, rel=1e-6)
    assert batch == pytest.approx(independent, rel=1e-6)


def test_fid_of_a_set_with_itself_is_zero_and_with_a_shift_is_the_squared_shift():
    rng = np.random.default_rng(5)
    features = rng.normal(size=(200, 16)) + 3.0
    assert abs(frechet_distance_from_features(features, features)) < 1e-6
    shift = np.linspace(-1, 1, 16)
    assert frechet_distance_from_features(features, features + shift) == pytest.approx(shift @ shift, rel=1e-6)


def test_frechet_distance_of_known_gaussians():
    # 1-d: (m1 - m2)^2 + s1 + s2 - 2 sqrt(s1 s2) = (m1 - m2)^2 + (sqrt(s1) - sqrt(s2))^2
    value = frechet_distance(np.array([1.0]), np.array([[4.0]]), np.array([3.0]), np.array([[9.0]]))
    assert value == pytest.approx(4.0 + 1.0, rel=1e-12)


def test_fid_is_defined_for_singular_covariances():
    # N < d: both covariances are singular; the value stays finite, >= 0 up to round-off, and 0 for equal sets
    rng = np.random.default_rng(9)
    real, generated = rng.normal(size=(20, 64)), rng.normal(size=(20, 64)) + 0.5
    value = frechet_distance_from_features(real, generated)
    assert math.isfinite(value) and value > 64 * 0.25 * 0.5
    assert abs(frechet_distance_from_features(real, real)) < 1e-5  # round-off of ~44 zero eigenvalues
    with pytest.raises(ValueError, match="not symmetric"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.array([[0.0, 1.0], [0.0, 0.0]]))


@pytest.mark.parametrize("d", [8, 128])  # d x d covariance path; low-rank factor path (80 samples < 128)
def test_fid_compute_on_equals_fid_of_the_materialised_resample(d):
    rng = np.random.default_rng(6)
    real, generated = _feature_sets(rng, 80, 80, d)
    metric = FrechetDistance(num_features=d, keep_features=True)
    metric.update(real[:30], real=True)
    metric.update(real[30:], real=True)
    metric.update(generated, real=False)
    indices = next(resample_indices(80, 1, seed=11))
    expected = frechet_distance_from_features(real[indices].astype(np.float64), generated[indices].astype(np.float64))
    assert metric.compute_on(indices) == pytest.approx(expected, rel=1e-7)  # eigh of a singular covariance: ~1e-8
    assert metric.compute_on(np.arange(80)) == pytest.approx(metric.compute(), rel=1e-6)
    interval = bootstrap_metric(metric, n_resamples=20, seed=1)
    assert interval.n_resamples == 20 and interval.n_skipped == 0 and interval.low <= interval.high
    assert FrechetDistance(num_features=d).default_bootstrap_resamples == 200
    with pytest.raises(RuntimeError, match="keep_features"):
        FrechetDistance(num_features=d).compute_on(indices)


@pytest.mark.parametrize("n_real, n_generated, d", [(30, 40, 96), (50, 20, 16)])
def test_fid_from_covariance_factors_equals_the_independent_formula(n_real, n_generated, d):
    rng = np.random.default_rng(n_real + d)
    real, generated = (x.astype(np.float64) for x in _feature_sets(rng, n_real, n_generated, d))
    factors = [(x - x.mean(0)) / np.sqrt(len(x) - 1) for x in (real, generated)]
    value = frechet_distance_from_factors(real.mean(0), factors[0], generated.mean(0), factors[1])
    assert value == pytest.approx(frechet_distance_from_features(real, generated), rel=1e-7)
    if n_real >= d and n_generated >= d:  # scipy's sqrtm is only reliable for full-rank covariances
        assert value == pytest.approx(_independent_fid(real, generated), rel=1e-6)


@pytest.mark.parametrize("degenerate", [False, True])
def test_fid_bootstrap_path_for_n_above_d_equals_the_direct_formula(degenerate, monkeypatch):
    # N > d: most resamples hold more distinct rows than features, which takes the whitened-basis path
    # (Cholesky + dsygst + eigenvalues only); it must equal the direct d x d formula on the materialised resample
    from cfbench.metrics import fid as fid_module

    rng = np.random.default_rng(21)
    n, d = 260, 48
    real, generated = _feature_sets(rng, n, n, d)
    if degenerate:  # a dead feature (constant on every image) and a real-only constant one: singular covariances
        real[:, 3] = 0.0
        generated[:, 3] = 0.0
        real[:, 7] = 1.5
    metric = FrechetDistance(num_features=d, keep_features=True)
    metric.update(real, real=True)
    metric.update(generated, real=False)
    used = []
    original = fid_module._WhitenedBasis.trace_sqrt_product

    def spy(self, real_indices, indices):
        value = original(self, real_indices, indices)
        used.append(value is not None)
        return value

    monkeypatch.setattr(fid_module._WhitenedBasis, "trace_sqrt_product", spy)
    index_sets = list(resample_indices(n, 6, seed=3))
    real_sets = list(resample_indices(n, 6, seed=4))
    for indices, real_indices in zip(index_sets, real_sets):
        for r in (indices, real_indices):  # paired and unpaired resamples
            expected = frechet_distance(*fid_module.gaussian_statistics(real[r].astype(np.float64)),
                                        *fid_module.gaussian_statistics(generated[indices].astype(np.float64)))
            assert metric.compute_on(indices, r) == pytest.approx(expected, rel=1e-8, abs=1e-10)
    assert used and all(used)  # the fast path answered every resample (none fell back)
    many = metric.compute_on_many(index_sets, workers=2)
    one_by_one = np.array([metric.compute_on(i) for i in index_sets])
    np.testing.assert_allclose(many, one_by_one, rtol=1e-12)
    np.testing.assert_allclose(metric.compute_on_many(index_sets, real_sets, workers=1),
                               [metric.compute_on(i, r) for i, r in zip(index_sets, real_sets)], rtol=1e-12)


@pytest.mark.parametrize("offset", [0.0, 300.0])
def test_fid_gram_path_for_n_up_to_d_equals_the_direct_formula(offset, monkeypatch):
    # N <= d: every resample takes the Gram path (N x N Gram blocks formed once); it must equal the direct
    # formula on the materialised resample, paired and unpaired, with unequal sample sizes, with features far
    # from the origin (cancellation) and with a sample exactly d rows long
    from cfbench.metrics import fid as fid_module

    rng = np.random.default_rng(23)
    d = 64
    for n_real, n_generated in ((40, 40), (30, 64)):
        real, generated = _feature_sets(rng, n_real, n_generated, d)
        real, generated = real + offset, generated + offset * 1.01
        metric = FrechetDistance(num_features=d, keep_features=True)
        metric.update(real, real=True)
        metric.update(generated, real=False)
        calls = []
        monkeypatch.setattr(fid_module._GramPath, "fid",
                            lambda self, r, i, original=fid_module._GramPath.fid: calls.append(1) or original(self, r, i))
        generated_sets = list(resample_indices(n_generated, 5, seed=3))
        real_sets = list(resample_indices(n_real, 5, seed=4))
        for indices, real_indices in zip(generated_sets, real_sets):
            value = metric.compute_on(indices, real_indices)
            # the factor path (SVD of A_r A_g^T) to round-off; the d x d path to its eigh error (~1e-8, singular)
            factors = [*fid_module._weighted_factor(real, real_indices), *fid_module._weighted_factor(generated, indices)]
            assert value == pytest.approx(frechet_distance_from_factors(*factors), rel=1e-12)
            expected = frechet_distance(
                *fid_module.gaussian_statistics(real[real_indices].astype(np.float64)),
                *fid_module.gaussian_statistics(generated[indices].astype(np.float64)))
            assert value == pytest.approx(expected, rel=1e-7)
        assert len(calls) == 5
        streamed = FrechetDistance(num_features=d)  # no stored features: the d x d covariance path
        streamed.update(real, real=True)
        streamed.update(generated, real=False)
        assert metric.compute() == pytest.approx(streamed.compute(), rel=1e-7)
        assert metric.compute() == pytest.approx(frechet_distance_from_factors(
            *fid_module._weighted_factor(real, np.arange(n_real)),
            *fid_module._weighted_factor(generated, np.arange(n_generated))), rel=1e-12)
        if n_real == n_generated:  # paired: the same indices on both sides; the full sample gives compute()
            assert metric.compute_on(np.arange(n_real)) == pytest.approx(metric.compute(), rel=1e-12)
            np.testing.assert_allclose(metric.compute_on_many(generated_sets, workers=2),
                                       [metric.compute_on(i) for i in generated_sets], rtol=1e-12)
        monkeypatch.undo()


def test_fid_bootstrap_path_at_the_protocol_dimension():
    # d = 1024, N = 1300: resamples of ~820 distinct rows take the factor path, a full-sample one the whitened path
    rng = np.random.default_rng(22)
    n, d = 1300, 1024
    mixing = rng.normal(size=(d, d)) / np.sqrt(d)
    real = np.abs(rng.normal(size=(n, d)) @ mixing).astype(np.float32)
    generated = np.abs(rng.normal(size=(n, d)) @ mixing * 1.1 + 0.05).astype(np.float32)
    metric = FrechetDistance(num_features=d, keep_features=True)
    metric.update(real, real=True)
    metric.update(generated, real=False)
    indices = np.concatenate([np.arange(n), np.arange(50)])[:n]  # 1300 rows, 1250 distinct: > d
    expected = frechet_distance_from_features(real[indices].astype(np.float64), generated[indices].astype(np.float64))
    assert metric.compute_on(indices) == pytest.approx(expected, rel=1e-8)


# ---------------------------------------------------------------------------------------------------- KL


def test_kl_hand_computed_two_classes():
    # Real: mean probabilities p = (0.5, 0.2); generated: q = (0.25, 0.4).
    real = np.array([[0.4, 0.1], [0.6, 0.3]])
    generated = np.array([[0.25, 0.5], [0.25, 0.3]])
    metric = PathologyKLDivergence(findings=["A", "B"])
    metric.update(real, real=True)
    metric.update(generated[:1], real=False)
    metric.update(generated[1:], real=False)
    result = metric.compute()
    kl_a = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    kl_b = 0.2 * math.log(0.2 / 0.4) + 0.8 * math.log(0.8 / 0.6)
    assert result["per_finding"]["A"] == pytest.approx(kl_a, rel=1e-9)
    assert result["per_finding"]["B"] == pytest.approx(kl_b, rel=1e-9)
    assert result["total"] == pytest.approx(kl_a + kl_b, rel=1e-9)
    assert result["p_real"] == pytest.approx({"A": 0.5, "B": 0.2})
    assert metric.compute_on(np.arange(2)) == pytest.approx(result["total"], rel=1e-12)


def test_kl_is_zero_for_equal_means_and_finite_at_the_clip():
    assert bernoulli_kl(np.array([0.3]), np.array([0.3]))[0] == 0.0
    clipped = bernoulli_kl(np.array([1.0]), np.array([0.0]))[0]
    eps = 1e-7
    assert clipped == pytest.approx((1 - eps) * math.log((1 - eps) / eps) + eps * math.log(eps / (1 - eps)))


# ---------------------------------------------------------------------------------------------------- CMIG


def test_cmig_hand_case():
    result = cmig_from_metrics({"pathology_mean_auroc": 0.8333, "race_auroc": 0.9765, "age_pearson": 0.8284})
    assert result.value == pytest.approx(math.sqrt(83.33 * math.sqrt(97.65 * 82.84)), rel=1e-12)
    assert round(result.value, 2) == 86.57
    assert result.accuracy_mean == pytest.approx(83.33)
    assert result.retention_mean == pytest.approx(math.sqrt(97.65 * 82.84))
    assert result.retention_terms == pytest.approx({"race_auroc": 97.65, "age_pearson": 82.84})
    assert result.clipped == {}


def test_cmig_configurable_terms_and_percent_input():
    metrics = {
        "pathology_mean_auroc": 80.0,
        "f1_macro": 45.0,
        "race_auroc": 90.0,
        "sex_auroc": 99.0,
        "age_pearson": 70.0,
    }
    result = cmig_from_metrics(
        metrics,
        accuracy_terms=["pathology_mean_auroc", "f1_macro"],
        retention_terms=["race_auroc", "sex_auroc", "age_pearson"],
        input_scale="percent",
    )
    a_bar = (80.0 * 45.0) ** 0.5
    f_bar = (90.0 * 99.0 * 70.0) ** (1 / 3)
    assert result.value == pytest.approx(math.sqrt(a_bar * f_bar), rel=1e-12)
    with pytest.raises(KeyError, match="sex_auroc"):
        cmig_from_metrics({"pathology_mean_auroc": 0.8}, retention_terms=["sex_auroc"])


def test_cmig_negative_pearson_is_clipped_and_reported():
    result = cmig({"pathology_mean_auroc": 0.8}, {"race_auroc": 0.9, "age_pearson": -0.12})
    assert result.value == 0.0
    assert result.clipped == {"age_pearson": pytest.approx(-12.0)}
    assert result.retention_terms["age_pearson"] == 0.0
    nan_result = cmig({"pathology_mean_auroc": math.nan}, {"race_auroc": 0.9})
    assert math.isnan(nan_result.value) and "pathology_mean_auroc" in nan_result.reasons[0]


# ---------------------------------------------------------------------------------------------------- bootstrap


def test_bootstrap_coverage_of_a_normal_mean():
    truth, n = 1.5, 60
    covered = 0
    for trial in range(200):
        sample = np.random.default_rng(1000 + trial).normal(truth, 2.0, n)
        interval = bootstrap_ci(lambda idx: float(sample[idx].mean()), n, n_resamples=300, seed=trial)
        covered += interval.low <= truth <= interval.high
    assert 0.90 <= covered / 200 <= 0.99, covered


def test_bootstrap_coverage_of_auroc_of_two_normals():
    separation, n = 1.0, 80
    truth = norm.cdf(separation / math.sqrt(2))  # P(X_pos > X_neg) for unit-variance normals
    covered = 0
    for trial in range(200):
        rng = np.random.default_rng(2000 + trial)
        labels = (np.arange(n) < n // 2).astype(int)
        scores = rng.normal(labels * separation, 1.0)
        metric = BinaryAUROC()
        metric.update(scores, labels)
        interval = bootstrap_metric(metric, n_resamples=300, seed=trial)
        covered += interval.low <= truth <= interval.high
    assert 0.90 <= covered / 200 <= 0.99, covered


def test_bootstrap_is_seeded_and_counts_undefined_replicates():
    labels = np.zeros(12, dtype=int)
    labels[0] = 1  # one positive: many resamples miss it and AUROC is undefined there
    metric = BinaryAUROC()
    metric.update(np.linspace(0, 1, 12), labels)
    first = bootstrap_metric(metric, n_resamples=200, seed=3)
    second = bootstrap_metric(metric, n_resamples=200, seed=3)
    assert first == second
    # P(no positive in a resample of 12) = (11/12)^12 = 0.352: about 70 of 200 skipped
    assert 40 <= first.n_skipped <= 100
    assert first.n_resamples == 200 and first.n == 12


def test_paired_difference_of_identical_runs_is_zero():
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 2, 100)
    scores = rng.normal(labels, 1.0)
    run_a, run_b = BinaryAUROC(), BinaryAUROC()
    run_a.update(scores, labels)
    run_b.update(scores.copy(), labels)
    interval = paired_difference_ci(run_a.compute_on, run_b.compute_on, 100, n_resamples=200)
    assert (interval.value, interval.low, interval.high) == (0.0, 0.0, 0.0)


def test_paired_difference_is_narrower_than_unpaired_and_detects_a_shift():
    rng = np.random.default_rng(8)
    n = 200
    labels = rng.integers(0, 2, n)
    base = rng.normal(labels, 1.0)
    run_a, run_b = BinaryAUROC(), BinaryAUROC()
    run_a.update(base + rng.normal(0, 0.2, n) + 0.3 * labels, labels)  # a is better on the same samples
    run_b.update(base, labels)
    paired = paired_difference_ci(run_a.compute_on, run_b.compute_on, n, n_resamples=300, seed=1)
    separate_a = bootstrap_metric(run_a, n_resamples=300, seed=1)
    assert paired.low > 0.0
    assert paired.high - paired.low < separate_a.high - separate_a.low


def test_bootstrap_many_keeps_cmig_components_paired():
    rng = np.random.default_rng(9)
    n = 150
    pathology, race, age = PathologyAUROC(), MulticlassAUROC(num_classes=3), PearsonCorrelation()
    labels = rng.integers(0, 2, (n, 5)).astype(float)
    pathology.update(rng.uniform(size=(n, 5)) * 0.5 + 0.4 * labels, labels)
    groups = rng.integers(0, 3, n)
    race.update(rng.dirichlet(np.ones(3), n) + np.eye(3)[groups], groups)
    true_age = rng.uniform(20, 90, n)
    age.update(true_age + rng.normal(0, 10, n), true_age)
    statistics = {
        "pathology_mean_auroc": pathology.compute_on,
        "race_auroc": race.compute_on,
        "age_pearson": age.compute_on,
    }
    intervals = bootstrap_many(
        statistics, n, n_resamples=100, seed=4, derived={"cmig": lambda values: cmig_from_metrics(values).value}
    )
    # The same CMIG interval, recomputing the components from each replicate's indices directly:
    def cmig_of_replicate(indices):
        return cmig_from_metrics({name: statistic(indices) for name, statistic in statistics.items()}).value

    direct = bootstrap_ci(cmig_of_replicate, n, n_resamples=100, seed=4)
    assert intervals["cmig"] == direct
    assert intervals["race_auroc"] == bootstrap_metric(race, n_resamples=100, seed=4)
    point = {
        "pathology_mean_auroc": pathology.compute()["mean"],
        "race_auroc": race.compute(),
        "age_pearson": age.compute(),
    }
    assert intervals["cmig"].value == pytest.approx(cmig_from_metrics(point).value)
    assert intervals["cmig"].n_skipped == 0 and intervals["cmig"].low < intervals["cmig"].value < intervals["cmig"].high


def test_mean_probability_streaming_and_resample():
    rng = np.random.default_rng(10)
    probabilities = rng.uniform(size=(90, 5))
    metric = MeanProbability()
    for part in _batches(90):
        metric.update(probabilities[part])
    assert metric.compute_array() == pytest.approx(probabilities.mean(axis=0), rel=1e-12)
    assert list(metric.compute()) == list(EVALUATED_FINDINGS)
    indices = np.array([0, 0, 5, 89])
    assert metric.compute_array_on(indices) == pytest.approx(probabilities[indices].mean(axis=0), rel=1e-12)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        metric.update(np.full((1, 5), 1.5))
