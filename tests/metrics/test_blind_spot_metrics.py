"""The metrics for the papers' blind spots against hand-computed values and SciPy: minimality, effect size,
attribute change, paired feature distance, cfbench_score, and paired differences from kept replicates."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import wasserstein_distance

from cfbench.metrics.bootstrap import bootstrap_many, interval_from_replicates, paired_difference_ci
from cfbench.metrics.effect_size import EffectSize, effect_errors
from cfbench.metrics.identity import AttributeChange, attribute_changes
from cfbench.metrics.minimality import Minimality, relative_change_outside, w1_outside
from cfbench.metrics.realism import FeatureDistance, relative_feature_distance
from cfbench.metrics.score import SCORE_TERMS, cfbench_score, tolerance


def test_minimality_by_hand_and_w1_equals_scipy():
    image = np.array([[0.2, 0.4], [0.6, 0.8]])
    generated = np.array([[0.3, 0.4], [0.6, 0.5]])
    region = np.array([[False, False], [False, True]])  # the bottom-right pixel is the edit region
    # outside: |0.1| + 0 + 0 = 0.1 over the input's 0.2 + 0.4 + 0.6 = 1.2
    assert relative_change_outside(generated, image, region) == pytest.approx(0.1 / 1.2)
    assert w1_outside(generated, image, region) == pytest.approx(
        wasserstein_distance(generated[~region], image[~region]))
    rng = np.random.default_rng(0)
    a, b = rng.random((16, 16)), rng.random((16, 16))
    mask = rng.random((16, 16)) > 0.7
    assert w1_outside(a, b, mask) == pytest.approx(wasserstein_distance(a[~mask], b[~mask]), abs=1e-12)
    # a uniform bias: W1 equals the mean change; a permutation of the pixels costs nothing
    assert w1_outside(image + 0.05, image, region) == pytest.approx(0.05)
    assert w1_outside(image[::-1, ::-1], image, np.zeros((2, 2), bool)) == pytest.approx(0.0)
    assert math.isnan(w1_outside(image, image, np.ones((2, 2), bool)))  # nothing outside


def test_minimality_streams_batches_and_resamples():
    rng = np.random.default_rng(1)
    generated, images = rng.random((5, 8, 8)), rng.random((5, 8, 8))
    regions = rng.random((5, 8, 8)) > 0.5
    metric = Minimality()
    metric.update(generated[:2], images[:2], regions[:2])
    metric.update(generated[2:], images[2:], regions[2:])
    expected = [relative_change_outside(g, x, r) for g, x, r in zip(generated, images, regions)]
    assert metric.per_sample()["relative_change_outside"] == pytest.approx(expected)
    assert metric.compute()["relative_change_outside"] == pytest.approx(np.mean(expected))
    assert metric.compute_on(np.array([0, 0, 4]))["relative_change_outside"] == pytest.approx(
        (2 * expected[0] + expected[4]) / 3)
    with pytest.raises(ValueError, match="Minimality: shapes differ"):
        metric.update(generated, images[:, :4], regions)


def test_effect_size_by_hand():
    inputs = np.array([[0.1, 0.5, 0.2], [0.3, 0.3, 0.3]])
    targets = np.array([[0.7, 0.5, 0.2], [0.3, 0.1, 0.6]])
    generated = np.array([[0.9, 0.4, 0.2], [0.3, 0.2, 0.4]])
    edits = np.array([[1.0, np.nan, np.nan],      # sample 0 adds finding 0
                      [np.nan, -1.0, 0.0]])       # sample 1 removes finding 1, changes the level of finding 2
    error, bias = effect_errors(generated, inputs, targets, edits)
    # sample 0: d_gen = 0.8, d_real = 0.6 -> |0.2|, over-edit +0.2
    # sample 1: finding 1 d_gen = -0.1, d_real = -0.2 (remove): |0.1|, (0.1)(-1) = -0.1 (under-edit);
    #           finding 2 d_gen = 0.1, d_real = 0.3, direction sign(0.3) = +1: |0.2|, -0.2
    assert error == pytest.approx([0.2, 0.15])
    assert bias == pytest.approx([0.2, -0.15])
    none = effect_errors(generated[:1], inputs[:1], targets[:1], np.full((1, 3), np.nan))
    assert math.isnan(none[0][0]) and math.isnan(none[1][0])  # no edited finding: left out
    metric = EffectSize()
    metric.update(generated, inputs, targets, edits)
    assert metric.compute() == pytest.approx({"effect_error": 0.175, "effect_bias": 0.025})


def test_attribute_change_and_feature_distance_by_hand():
    generated = {"age": np.array([50.0, 40.0]), "sex": np.array([0.9, 0.2]),
                 "race": np.array([[0.7, 0.2, 0.1], [0.3, 0.3, 0.4]])}
    inputs = {"age": np.array([55.0, 40.0]), "sex": np.array([0.8, 0.2]),
              "race": np.array([[0.5, 0.4, 0.1], [0.3, 0.3, 0.4]])}
    changes = attribute_changes(generated, inputs)
    assert changes["age_change"] == pytest.approx([5.0, 0.0])
    assert changes["sex_change"] == pytest.approx([0.1, 0.0])
    assert changes["race_change"] == pytest.approx([0.2, 0.0])  # 0.5 (0.2 + 0.2 + 0)
    metric = AttributeChange()
    metric.update({"age": generated["age"]}, {"age": inputs["age"]})  # an evaluator without race and sex
    result = metric.compute()
    assert result["age_change"] == pytest.approx(2.5) and math.isnan(result["race_change"])
    distance = relative_feature_distance(np.array([[3.0, 4.0], [1.0, 0.0]]), np.array([[0.0, 0.0], [2.0, 0.0]]))
    assert math.isnan(distance[0]) and distance[1] == pytest.approx(0.5)
    features = FeatureDistance()
    features.update(np.array([[1.0, 1.0]]), np.array([[1.0, 0.0]]))
    assert features.compute()["feature_distance"] == pytest.approx(1.0)


def test_cfbench_score_by_hand():
    values = {"effect_error": 0.1, "age_change": 5.0, "race_change": 0.0, "sex_change": 0.1,
              "relative_change_outside_pseudo_mask": 0.0, "w1_outside_pseudo_mask": 0.03, "feature_distance": 0.0}
    result = cfbench_score(values)
    effectiveness = 0.5
    preservation = (0.5 * 1.0 * 0.5) ** (1 / 3)
    minimality = (1.0 * 0.25) ** 0.5
    assert result.terms == pytest.approx({"effectiveness": effectiveness, "preservation": preservation,
                                          "minimality": minimality, "realism": 1.0})
    assert result.value == pytest.approx(100 * (effectiveness * preservation * minimality) ** 0.25)
    assert cfbench_score({name: 0.0 for parts in SCORE_TERMS.values() for name, _ in parts}).value == 100.0
    missing = cfbench_score({"effect_error": 0.0})
    assert math.isnan(missing.value) and missing.missing == ["preservation", "minimality", "realism"]
    assert tolerance(-1.0, 0.1) == 1.0  # a negative loss counts as none


def test_kept_replicates_give_the_paired_difference():
    rng = np.random.default_rng(2)
    a, b = rng.random(40), rng.random(40) + 0.1
    kept_a, kept_b = {}, {}
    value_a = bootstrap_many({"m": lambda i: float(a[i].mean())}, 40, 300, keep_replicates=kept_a)["m"].value
    value_b = bootstrap_many({"m": lambda i: float(b[i].mean())}, 40, 300, keep_replicates=kept_b)["m"].value
    from_kept = interval_from_replicates(value_a - value_b, kept_a["m"] - kept_b["m"])
    direct = paired_difference_ci(lambda i: float(a[i].mean()), lambda i: float(b[i].mean()), 40, 300)
    assert (from_kept.value, from_kept.low, from_kept.high) == pytest.approx((direct.value, direct.low, direct.high))
