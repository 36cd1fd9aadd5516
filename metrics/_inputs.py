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


class PerSampleMeans:
    """Storage shared by the metrics that are means over samples of per-sample values (minimality, effect
    size, attribute change): named (B,) columns appended per batch; ``compute()`` gives each column's mean
    over its finite values (NaN marks a sample the measure does not apply to), ``compute_on(indices)`` the
    same on a bootstrap resample, ``per_sample()`` the columns themselves."""

    names: tuple[str, ...] = ()

    def __init__(self) -> None:
        self._columns: dict[str, list[np.ndarray]] = {name: [] for name in self.names}

    def _append(self, values: dict[str, np.ndarray]) -> None:
        for name in self.names:
            self._columns[name].append(np.asarray(values[name], np.float64).reshape(-1))

    @property
    def num_samples(self) -> int:
        return sum(len(part) for part in self._columns[self.names[0]])

    def per_sample(self) -> dict[str, np.ndarray]:
        if not self.num_samples:
            raise empty_error(type(self).__name__)
        for name, parts in self._columns.items():
            if len(parts) > 1:
                self._columns[name] = [np.concatenate(parts)]
        return {name: parts[0] for name, parts in self._columns.items()}

    def compute_on(self, indices) -> dict[str, float]:
        columns = self.per_sample()
        indices = check_indices(indices, self.num_samples, type(self).__name__)
        return {name: _finite_mean(values[indices]) for name, values in columns.items()}

    def compute(self) -> dict[str, float]:
        return self.compute_on(np.arange(self.num_samples))


def _finite_mean(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else float("nan")


class PairedFeatureStore:
    """Storage shared by the metrics on two feature sets (KID, the k-NN manifold estimates): real and generated
    (B, d) batches appended by ``update(features, real=...)``, concatenated once on first read; row i of each set
    is the same sample (``num_samples`` checks the counts agree). Subclasses reset their derived matrices in
    ``_changed``."""

    def __init__(self) -> None:
        self._features: dict[bool, list[np.ndarray]] = {True: [], False: []}

    def _changed(self) -> None:
        """Called after every update (drop matrices computed from the features)."""

    def update(self, features, *, real: bool) -> None:
        self._features[bool(real)].append(float_array(features, "features", type(self).__name__, ndim=2))
        self._changed()

    def _stored(self, real: bool) -> np.ndarray:
        batches = self._features[real]
        if not batches:
            raise empty_error(type(self).__name__)
        if len(batches) > 1:
            self._features[real] = batches = [np.concatenate(batches)]
        return batches[0]

    @property
    def num_samples(self) -> int:
        real, generated = len(self._stored(True)), len(self._stored(False))
        if real != generated:
            raise ValueError(f"{type(self).__name__}: {real} real and {generated} generated feature vectors; a "
                             "paired bootstrap needs equal counts")
        return generated
