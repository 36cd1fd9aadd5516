"""Scoring with ranks computed once and replicates evaluated in batches gives today's numbers.

The reference is the scoring of commit 7212798, kept verbatim in ``reference_scoring.py`` (per-index
statistics, SciPy ``rankdata`` per replicate, the d x d FID path); the rank-based AUROC and the batched F1
are also checked against scikit-learn on materialised resamples, with ties within a resample.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import f1_score, roc_auc_score

from cfbench.core.findings import EVALUATED_FINDINGS
from cfbench.evaluation.protocol import Protocol
from cfbench.evaluation.realism import REALISM_METRICS
from cfbench.evaluation.scoring import SampleTable, compare_tables, score
from cfbench.metrics.bootstrap import resample_indices
from cfbench.metrics.classification import (
    LabelPolicy,
    PathologyAUROC,
    PathologyF1,
    RankedAUROC,
    binary_auroc,
    resample_counts,
)
from tests.evaluation import reference_scoring

OPERATIONS = (("add",), ("remove",), ("change",), ("add", "remove"))


def synthetic_table(n: int, seed: int = 0, d: int = 12, levels: int = 7) -> SampleTable:
    """Probabilities on a coarse grid (so equal scores and repeated samples tie within a resample), every
    label kind (1, 0, -1, blank), unknown race / sex / age, pixel measures with NaN, FID features."""
    rng = np.random.default_rng(seed)
    labels = rng.choice([1.0, 0.0, -1.0, np.nan], p=[0.35, 0.45, 0.1, 0.1], size=(n, len(EVALUATED_FINDINGS)))
    noise = rng.normal(scale=0.8, size=labels.shape)
    pathology = np.round(1 / (1 + np.exp(-(np.nan_to_num(labels, nan=0.0) * 1.2 + noise))) * levels) / levels
    race = rng.integers(-1, 3, size=n)
    race_scores = rng.dirichlet(np.ones(3), size=n)
    race_scores[np.arange(n), np.clip(race, 0, 2)] += 0.3
    race_scores = np.round(race_scores / race_scores.sum(1, keepdims=True), 2)
    sex = rng.choice([1.0, 0.0, np.nan], p=[0.45, 0.45, 0.1], size=n)
    sex_scores = np.round(np.clip(np.nan_to_num(sex, nan=0.5) * 0.4 + rng.uniform(0, 0.6, n), 0, 1), 1)
    age = np.where(rng.uniform(size=n) < 0.1, np.nan, rng.uniform(20, 90, n))
    real_features = rng.normal(size=(n, d)) + 1.0
    generated_features = real_features * 0.9 + rng.normal(scale=0.5, size=(n, d))
    pixel = rng.uniform(0, 0.2, n)
    pixel[rng.uniform(size=n) < 0.2] = np.nan
    return SampleTable(
        sample_ids=[f"s{i:04d}" for i in range(n)],
        operations=[OPERATIONS[i % len(OPERATIONS)] for i in range(n)],
        labels=labels, race=race, sex_male=sex, age=age, race_classes=("Asian", "Black", "White"),
        generated={"pathology": pathology, "race": race_scores, "sex": sex_scores,
                   "age": age + rng.normal(scale=5, size=n), "features": generated_features.astype(np.float32)},
        real={"pathology": np.clip(pathology + rng.normal(scale=0.05, size=pathology.shape), 0.01, 0.99),
              "features": real_features.astype(np.float32)},
        pixel={"mae_to_target": rng.uniform(0, 0.1, n), "change_inside_lesion": pixel},
    )


# issue 21 added metrics (the paired feature distance, the score when its terms exist) and CMIG's
# clipped_to_zero flag: the metrics that existed before must keep their numbers
ISSUE_21_METRICS = {"feature_distance", "effect_error", "effect_bias", "age_change", "race_change", "sex_change",
                    "cfbench_score"}


def _assert_reports_equal(new: dict, old: dict, tolerance: float = 1e-12) -> None:
    # issue 26 added the realism metrics beside FID (tested against their references in tests/metrics)
    new = {**new, "metrics": {k: v for k, v in new["metrics"].items() if k not in REALISM_METRICS},
           "components": {k: v for k, v in new["components"].items() if k not in ("kid", "manifold")}}
    assert set(new["metrics"]) - ISSUE_21_METRICS == set(old["metrics"])
    assert "feature_distance" in new["metrics"]  # the synthetic tables have features on both sides
    new = {**new, "skipped": {k: v for k, v in new["skipped"].items() if k != "cfbench_score"},
           "components": {k: ({kk: vv for kk, vv in v.items() if kk != "clipped_to_zero"} if k == "cmig" else v)
                          for k, v in new["components"].items() if k != "cfbench_score"}}
    for name, entry in old["metrics"].items():
        for key, expected in entry.items():
            actual = new["metrics"][name][key]
            if isinstance(expected, float):  # FID: eigenvalue round-off of another (exact) path
                scale = max(tolerance, 1e-9) if name == "fid" else tolerance
                assert actual == pytest.approx(expected, rel=scale, abs=scale), (name, key)
            else:
                assert actual == expected, (name, key)
    assert new["skipped"] == old["skipped"] and new["excluded"] == old["excluded"]
    # issue 16 added descriptive keys to the KL component (its variant, the formula of that variant): the
    # numbers must stay the same
    kl_text = {"variant", "formula"}
    new_components = {k: ({kk: vv for kk, vv in v.items() if kk not in kl_text} if k == "kl_divergence" else v)
                      for k, v in new["components"].items()}
    old_components = {k: ({kk: vv for kk, vv in v.items() if kk not in kl_text} if k == "kl_divergence" else v)
                      for k, v in old["components"].items()}
    assert new_components == old_components
    for kind, values in old.get("by_operation", {}).items():
        for name, expected in values.items():
            actual = new["by_operation"][kind][name]
            if expected is None or (isinstance(expected, float) and math.isnan(expected)):
                assert actual is None or math.isnan(actual), (kind, name)
            else:
                assert actual == pytest.approx(expected, rel=tolerance, abs=tolerance), (kind, name)


@pytest.mark.parametrize("n, d, protocol", [
    (48, 12, Protocol(bootstrap_resamples=300, fid_bootstrap_resamples=20)),  # FID: resamples above d
    (40, 64, Protocol(bootstrap_resamples=200, fid_bootstrap_resamples=10)),  # FID: the factor path
    (60, 8, Protocol(label_uncertain="positive", label_blank="negative", f1_threshold=0.4,
                     bootstrap_resamples=300, fid_bootstrap_resamples=5, bootstrap_seed=7)),
    (15, 4, Protocol(bootstrap_resamples=500, fid_bootstrap_resamples=30, label_uncertain="negative")),  # skips
])
def test_score_equals_the_scoring_before_issue_17(n, d, protocol):
    table = synthetic_table(n, seed=n, d=d)
    new = score(table, protocol)
    old = reference_scoring.score(table, protocol)
    _assert_reports_equal(new, old)
    assert {"pathology_auroc/Edema", "f1/Edema", "race_auroc", "sex_auroc", "cmig", "fid"} <= set(new["metrics"])


def test_score_equals_the_reference_with_fid_to_1e8_above_d():
    # N = 150 > d = 12: every FID resample takes the whitened-basis path, equal to the d x d formula to 1e-8
    table = synthetic_table(150, seed=3, d=12)
    protocol = Protocol(bootstrap_resamples=200, fid_bootstrap_resamples=25)
    new, old = score(table, protocol), reference_scoring.score(table, protocol)
    fid_new, fid_old = new["metrics"].pop("fid"), old["metrics"].pop("fid")
    for key, expected in fid_old.items():
        assert fid_new[key] == (pytest.approx(expected, rel=1e-8) if isinstance(expected, float) else expected)
    _assert_reports_equal(new, old)


def test_compare_tables_unchanged():
    a, b = synthetic_table(50, seed=1), synthetic_table(50, seed=2)
    protocol = Protocol(bootstrap_resamples=100, fid_bootstrap_resamples=5)
    new, old = compare_tables(a, b, protocol), reference_scoring.compare_tables(a, b, protocol)
    assert set(new["differences"]) - ISSUE_21_METRICS == set(old["differences"])
    for name, entry in old["differences"].items():
        for key, expected in entry.items():
            assert new["differences"][name][key] == (
                pytest.approx(expected, rel=1e-9, abs=1e-12) if isinstance(expected, float) else expected), name


def test_ranked_auroc_equals_binary_auroc_and_scikit_learn_on_resamples_with_ties():
    rng = np.random.default_rng(11)
    n = 80
    labels = rng.integers(0, 2, n)
    scores = np.round(rng.uniform(size=n) + 0.3 * labels, 1)  # ~13 distinct values: many ties
    ranked = RankedAUROC(labels, scores)
    index_sets = np.stack(list(resample_indices(n, 200, seed=5)) + [np.arange(n), np.zeros(n, np.int64)])
    values = ranked.from_counts(resample_counts(index_sets, n))
    for indices, value in zip(index_sets, values):
        expected = binary_auroc(labels[indices], scores[indices])
        if math.isnan(expected):
            assert math.isnan(value)  # one class only (the all-zeros resample)
            continue
        assert value == expected  # bit-identical: integer arithmetic on 2U
        assert value == pytest.approx(roc_auc_score(labels[indices], scores[indices]), abs=1e-12)
    assert math.isnan(values[-1])


def test_pathology_counts_methods_equal_compute_on_and_scikit_learn():
    table = synthetic_table(70, seed=4)
    for policy in (LabelPolicy(), LabelPolicy(uncertain="positive", blank="negative")):
        auroc = PathologyAUROC(EVALUATED_FINDINGS, policy)
        f1 = PathologyF1(EVALUATED_FINDINGS, 0.5, policy)
        for metric in (auroc, f1):
            metric.update(table.generated["pathology"], table.labels)
        index_sets = np.stack(list(resample_indices(70, 50, seed=2)))
        counts = resample_counts(index_sets, 70)
        aurocs, f1s = auroc.compute_on_counts(counts), f1.compute_on_counts(counts)
        binary, keep = policy.resolve(table.labels)
        for row, indices in enumerate(index_sets):
            for f, finding in enumerate(EVALUATED_FINDINGS):
                expected_auroc = auroc.compute_on(indices, finding=finding)
                expected_f1 = f1.compute_on(indices, finding=finding)
                assert aurocs[row, f] == expected_auroc or (math.isnan(aurocs[row, f]) and math.isnan(expected_auroc))
                assert f1s[row, f] == expected_f1 or (math.isnan(f1s[row, f]) and math.isnan(expected_f1))
                kept = indices[keep[indices, f]]
                truth, predicted = binary[kept, f], table.generated["pathology"][kept, f]
                if 0 < truth.sum() < len(truth):
                    assert aurocs[row, f] == pytest.approx(roc_auc_score(truth, predicted), abs=1e-12)
                if truth.sum() or (predicted >= 0.5).sum():
                    assert f1s[row, f] == pytest.approx(f1_score(truth, predicted >= 0.5), abs=1e-12)


def test_resample_counts():
    counts = resample_counts(np.array([[0, 0, 2], [1, 2, 2]]), 4)
    np.testing.assert_array_equal(counts, [[2, 0, 1, 0], [0, 1, 2, 0]])
