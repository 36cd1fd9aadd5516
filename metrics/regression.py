"""Regression metrics of the evaluation protocols: Pearson correlation (age retention).

Age: the Pearson correlation coefficient r between the age a regressor predicts on the generated
image and the true age of the patient. r is unitless, in [-1, 1]; it equals ``scipy.stats.pearsonr``.
"""

from __future__ import annotations

import math

import numpy as np

from cfbench.metrics._inputs import PerSampleStore, check_indices, float_array


def pearson_r(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation of two 1-D arrays, in [-1, 1]; NaN when n < 2 or either array is constant.
    Non-finite input (NaN, inf) is an error: callers leave such samples out and say so."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("pearson_r: input contains NaN or infinite values; exclude those samples first")
    if x.size < 2:
        return math.nan
    x_centred = x - x.mean()
    y_centred = y - y.mean()
    x_norm = np.linalg.norm(x_centred)
    y_norm = np.linalg.norm(y_centred)
    if x_norm == 0.0 or y_norm == 0.0:
        return math.nan
    r = float(np.dot(x_centred / x_norm, y_centred / y_norm))
    return max(-1.0, min(1.0, r))


class PearsonCorrelation(PerSampleStore):
    """Pearson r between predicted and true values (e.g. age in years), streamed over batches.

    ``update(predicted, target)``: two arrays of shape (B,). ``compute()`` -> r in [-1, 1]; NaN with a
    reason (``undefined_reason()``) when fewer than 2 samples or a constant input. Keeps the pairs
    (O(N) scalars) so that ``compute_on(indices)`` can evaluate a bootstrap resample.
    """

    def __init__(self) -> None:
        super().__init__()

    def update(self, predicted: np.ndarray, target: np.ndarray) -> None:
        name = type(self).__name__
        predicted = float_array(predicted, "predicted", name, ndim=1)
        target = float_array(target, "target", name, ndim=1)
        if predicted.shape != target.shape:
            raise ValueError(f"{name}: predicted shape {predicted.shape} differs from target shape {target.shape}")
        self._append(predicted, target)

    def compute(self) -> float:
        return pearson_r(*self._arrays())

    def compute_on(self, indices: np.ndarray) -> float:
        """r on the pairs at ``indices`` (with repetition, for the bootstrap)."""
        predicted, target = self._arrays()
        indices = check_indices(indices, len(predicted), type(self).__name__)
        return pearson_r(predicted[indices], target[indices])

    def undefined_reason(self) -> str | None:
        predicted, target = self._arrays()
        if predicted.size < 2:
            return f"{predicted.size} sample(s); Pearson r needs at least 2"
        constant = [name for name, a in (("predicted", predicted), ("target", target)) if np.all(a == a[0])]
        if constant:
            return f"constant {' and '.join(constant)}; Pearson r is 0/0"
        return None
