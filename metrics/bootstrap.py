"""Bootstrap confidence intervals by paired resampling of samples.

One replicate draws n sample indices with replacement (``numpy.random.default_rng(seed)``) and every
statistic is evaluated on that same index set, so the replicates of several metrics (CMIG and its
components) and of two runs on the same samples (``paired_difference_ci``) stay paired. The interval
is the percentile interval of the replicates at the given level (default 0.95, 1000 resamples).

A statistic is any ``statistic(indices) -> float``; every metric object in ``cfbench.metrics`` provides
one as ``metric.compute_on(indices)`` and says how many samples it holds in ``metric.num_samples``
(``bootstrap_metric``). A replicate where the statistic is undefined (NaN, e.g. AUROC of a resample
with one class only) is skipped and counted in ``ConfidenceInterval.n_skipped``; the interval is then
conditional on the statistic being defined, so a large count deserves a remark. Exceptions propagate.

FID: a replicate costs a d x d sqrtm (about 1.5 s at d = 1024), so ``bootstrap_metric`` uses the
metric's ``default_bootstrap_resamples`` (200 for ``FrechetDistance``) unless told otherwise.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np

DEFAULT_RESAMPLES = 1000
DEFAULT_LEVEL = 0.95
DEFAULT_SEED = 0

Statistic = Callable[[np.ndarray], float]


@dataclass(frozen=True)
class ConfidenceInterval:
    """Point estimate on all samples and the percentile bootstrap interval [low, high] at ``level``.

    ``n_resamples`` replicates were drawn from ``n`` samples; ``n_skipped`` of them were undefined and
    left out. ``replicate_mean`` is the mean of the defined replicates: far from ``value`` it shows a
    biased statistic (FID at small N), whose percentile interval may not contain ``value``.
    ``low``/``high``/``replicate_mean`` are NaN when every replicate was skipped.
    """

    value: float
    low: float
    high: float
    level: float
    n_resamples: int
    n: int
    n_skipped: int = 0
    replicate_mean: float = math.nan

    def as_dict(self) -> dict:
        return asdict(self)


def _check_arguments(n: int, n_resamples: int, level: float) -> None:
    if n < 1:
        raise ValueError(f"bootstrap needs at least 1 sample, got n={n}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")


def resample_indices(n: int, n_resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED) -> Iterator[np.ndarray]:
    """The index sets of the replicates: ``n_resamples`` arrays of n indices drawn with replacement.

    The same (n, seed) gives the same sequence, which is what keeps separate calls paired.
    """
    rng = np.random.default_rng(seed)
    for _ in range(n_resamples):
        yield rng.integers(0, n, size=n)


def percentile_interval(replicates: np.ndarray, level: float = DEFAULT_LEVEL) -> tuple[float, float]:
    """The (1 - level)/2 and (1 + level)/2 quantiles of the finite replicates (NaN, NaN if none)."""
    replicates = np.asarray(replicates, dtype=np.float64)
    replicates = replicates[np.isfinite(replicates)]
    if replicates.size == 0:
        return math.nan, math.nan
    alpha = 1.0 - level
    low, high = np.quantile(replicates, [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(low), float(high)


def interval_from_replicates(value: float, replicates, level: float = DEFAULT_LEVEL, n: int | None = None
                             ) -> ConfidenceInterval:
    """The interval of precomputed replicates (one per ``resample_indices`` draw, NaN = undefined), for
    statistics that evaluate their replicates themselves (e.g. ``FrechetDistance.compute_on_many``); the same
    as ``bootstrap_ci`` would give from those replicates."""
    replicates = np.asarray(replicates, dtype=np.float64)
    return _interval(value, replicates, level, len(replicates), len(replicates) if n is None else n)


def _interval(value: float, replicates, level: float, n_resamples: int, n: int) -> ConfidenceInterval:
    replicates_array = np.asarray(replicates, dtype=np.float64)
    low, high = percentile_interval(replicates_array, level)
    finite = replicates_array[np.isfinite(replicates_array)]
    replicate_mean = float(finite.mean()) if finite.size else math.nan
    return ConfidenceInterval(float(value), low, high, level, n_resamples, n, n_resamples - finite.size, replicate_mean)


BatchedStatistic = Callable[[np.ndarray], Mapping[str, np.ndarray]]
"""Several statistics of many replicates at once: (B, n) index matrix -> {name: (B,) values}."""

BATCH_REPLICATES = 250  # replicates per call of a batched statistic (bounds its (B, n) work arrays)


def bootstrap_many(
    statistics: Mapping[str, Statistic],
    n: int,
    n_resamples: int = DEFAULT_RESAMPLES,
    level: float = DEFAULT_LEVEL,
    seed: int = DEFAULT_SEED,
    derived: Mapping[str, Callable[[Mapping[str, float]], float]] | None = None,
    batched: Sequence[BatchedStatistic] = (),
    keep_replicates: dict[str, np.ndarray] | None = None,
) -> dict[str, ConfidenceInterval]:
    """Intervals of several statistics from the SAME replicates (paired).

    ``keep_replicates``: a dict that receives each statistic's (n_resamples,) replicate values. Two runs over
    the same n samples in the same order, bootstrapped with the same seed, draw the same index sets, so the
    differences of their kept replicates are the paired bootstrap of their difference.

    ``derived`` statistics are functions of the others' values in a replicate, e.g.
    ``{"cmig": lambda v: cmig_from_metrics(v).value}``: they see exactly the component values of that
    replicate and cost no recomputation. Each statistic counts its own skipped replicates.

    ``batched`` statistics evaluate many replicates in one call (vectorised over replicates, with work
    shared between the statistics they return, e.g. every finding's AUROC from ranks computed once): each
    is called with a (B, n) matrix whose rows are the replicates' index sets, in the order of
    ``resample_indices``, and returns {name: (B,) values}; the point estimate is their value on
    ``np.arange(n)[None]``. Their values are the same replicates' as a per-index statistic would see.
    """
    _check_arguments(n, n_resamples, level)
    derived = dict(derived or {})
    overlap = set(statistics) & set(derived)
    if overlap:
        raise ValueError(f"names used both as statistics and derived statistics: {sorted(overlap)}")

    def evaluate(index_matrix: np.ndarray) -> list[dict[str, float]]:
        columns: dict[str, np.ndarray] = {}
        for statistic in batched:
            for name, values in statistic(index_matrix).items():
                if name in columns or name in statistics or name in derived:
                    raise ValueError(f"statistic {name!r} is given more than once")
                columns[name] = np.asarray(values, dtype=np.float64)
        rows = []
        for row, indices in enumerate(index_matrix):
            values = {name: float(statistic(indices)) for name, statistic in statistics.items()}
            values.update((name, float(column[row])) for name, column in columns.items())
            for name, function in derived.items():
                values[name] = float(function(values))
            rows.append(values)
        return rows

    point = evaluate(np.arange(n)[None])[0]
    replicates: dict[str, list[float]] = {name: [] for name in point}
    draws = resample_indices(n, n_resamples, seed)
    for start in range(0, n_resamples, BATCH_REPLICATES):
        block = np.stack([next(draws) for _ in range(min(BATCH_REPLICATES, n_resamples - start))])
        for values in evaluate(block):
            for name, value in values.items():
                replicates[name].append(value)
    if keep_replicates is not None:
        keep_replicates.update({name: np.asarray(values, np.float64) for name, values in replicates.items()})
    return {name: _interval(point[name], replicates[name], level, n_resamples, n) for name in point}


def bootstrap_ci(
    statistic: Statistic,
    n: int,
    n_resamples: int = DEFAULT_RESAMPLES,
    level: float = DEFAULT_LEVEL,
    seed: int = DEFAULT_SEED,
) -> ConfidenceInterval:
    """Percentile bootstrap interval of ``statistic(indices)`` over n samples (value: all samples)."""
    return bootstrap_many({"statistic": statistic}, n, n_resamples, level, seed)["statistic"]


def paired_difference_ci(
    statistic_a: Statistic,
    statistic_b: Statistic,
    n: int,
    n_resamples: int = DEFAULT_RESAMPLES,
    level: float = DEFAULT_LEVEL,
    seed: int = DEFAULT_SEED,
) -> ConfidenceInterval:
    """Interval of ``a - b`` for two runs on the same n samples, both evaluated on each replicate's indices.

    An interval that excludes 0 means the runs differ at that level. Identical runs give (0, 0, 0).
    """
    return bootstrap_ci(lambda indices: statistic_a(indices) - statistic_b(indices), n, n_resamples, level, seed)


def bootstrap_metric(
    metric,
    n_resamples: int | None = None,
    level: float = DEFAULT_LEVEL,
    seed: int = DEFAULT_SEED,
    **compute_on_options,
) -> ConfidenceInterval:
    """Interval of a metric object's headline value, via ``metric.compute_on`` and ``metric.num_samples``.

    ``n_resamples`` defaults to the metric's ``default_bootstrap_resamples`` if it has one (FID: 200),
    else 1000. Extra keyword arguments go to ``compute_on`` (e.g. ``finding="Edema"``).
    """
    if n_resamples is None:
        n_resamples = getattr(metric, "default_bootstrap_resamples", DEFAULT_RESAMPLES)
    return bootstrap_ci(
        lambda indices: metric.compute_on(indices, **compute_on_options), metric.num_samples, n_resamples, level, seed
    )
