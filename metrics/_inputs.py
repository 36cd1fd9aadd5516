"""Input checks and per-sample storage shared by the metric objects (private to ``cfbench.metrics``).

Every metric object validates its inputs through these functions, so a wrong shape, a NaN or an
out-of-range bootstrap index gives the same kind of message from every metric, naming the metric.
"""

from __future__ import annotations

import numpy as np


def float_array(values, name: str, metric: str, ndim: int, allow_nan: bool = False) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != ndim:
        raise ValueError(f"{metric}: {name} must have {ndim} dimension(s), got shape {array.shape}")
    if not allow_nan and np.isnan(array).any():
        raise ValueError(f"{metric}: {name} contains NaN")
    if np.isinf(array).any():
        raise ValueError(f"{metric}: {name} contains infinite values")
    return array


def check_indices(indices, n: int, metric: str) -> np.ndarray:
    indices = np.asarray(indices)
    if indices.ndim != 1 or not np.issubdtype(indices.dtype, np.integer):
        raise ValueError(f"{metric}: indices must be a 1-D integer array, got {indices.dtype} {indices.shape}")
    if indices.size and (indices.min() < 0 or indices.max() >= n):
        raise ValueError(f"{metric}: indices must lie in [0, {n}), got [{indices.min()}, {indices.max()}]")
    return indices


def empty_error(metric: str) -> RuntimeError:
    return RuntimeError(f"{metric}: compute() called before any sample was added with update()")


class PerSampleStore:
    """Storage shared by the metrics that need every sample: (prediction, truth) rows, appended per batch
    and concatenated once on first read, so a bootstrap's thousand ``compute_on`` calls do not re-copy."""

    def __init__(self) -> None:
        self._predictions: list[np.ndarray] = []
        self._truths: list[np.ndarray] = []

    def _append(self, predictions: np.ndarray, truths: np.ndarray) -> None:
        self._predictions.append(predictions)
        self._truths.append(truths)

    @property
    def num_samples(self) -> int:
        return sum(len(p) for p in self._predictions)

    def _arrays(self) -> tuple[np.ndarray, np.ndarray]:
        if not self._predictions:
            raise empty_error(type(self).__name__)
        if len(self._predictions) > 1:
            self._predictions = [np.concatenate(self._predictions)]
            self._truths = [np.concatenate(self._truths)]
        return self._predictions[0], self._truths[0]
