"""Paired realism: how far the counterfactual sits from the real target in the evaluator's feature space.

Per sample, ``feature_distance`` = ||f(generated) - f(real target)|| / ||f(real target)||, with f the
evaluator's feature vector (the FID features: DenseNet-121 ``features2`` on real data, the phantom CNN's
pooled features on phantoms); unitless, >= 0, 0 = the features of the real later study. A per-sample mean, so
it has paired bootstrap intervals at any n (FID, a distance between two distributions, needs hundreds of
samples per side). It includes the pose and acquisition difference between the prior and the target study,
so it is not 0 for a perfect counterfactual on real data; it is blind to what the features are invariant to.
"""

from __future__ import annotations

import numpy as np

from cfbench.metrics._inputs import PerSampleMeans, float_array


def relative_feature_distance(generated: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """(B,) ||generated - targets|| / ||targets|| of (B, D) feature rows (NaN where a target row is 0)."""
    generated, targets = np.asarray(generated, np.float64), np.asarray(targets, np.float64)
    norm = np.linalg.norm(targets, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        distance = np.linalg.norm(generated - targets, axis=1) / norm
    return np.where(norm > 0, distance, np.nan)


class FeatureDistance(PerSampleMeans):
    """``update(generated, targets)``: (B, D) evaluator features of generated images and of their real
    targets. ``compute()`` -> {"feature_distance"}: the mean over samples."""

    names = ("feature_distance",)

    def update(self, generated, targets) -> None:
        generated = float_array(generated, "generated", "FeatureDistance", 2)
        targets = float_array(targets, "targets", "FeatureDistance", 2)
        if generated.shape != targets.shape:
            raise ValueError(f"FeatureDistance: shapes differ: {generated.shape} and {targets.shape}")
        self._append({"feature_distance": relative_feature_distance(generated, targets)})
