"""Realism beside FID, on the same stored evaluator features: KID and precision / recall / density / coverage.

The features are the ones FID reads (``SampleTable.generated["features"]`` and ``real["features"]``: the
evaluator's penultimate layer on generated and real target images), so no second forward pass. Intervals
are paired percentile bootstrap intervals over the SAME index sets as FID's (``Protocol.fid_bootstrap_resamples``
replicates from ``Protocol.bootstrap_seed``; the k-NN ones shifted by their bootstrap bias as FID's is,
:func:`bias_shifted`): each replicate of these metrics forms or reads N x N matrices,
like FID's. None of them enters CMIG or any default score.

Metric names (metrics.json): ``kid`` (unbiased MMD^2 over all samples, :class:`cfbench.metrics.kid.KernelInceptionDistance`;
the anchors' subset mean and std are in ``components["kid"]``), ``manifold_precision``, ``manifold_recall``,
``density``, ``coverage`` (:class:`cfbench.metrics.manifold.ManifoldEstimates`, k in ``components["manifold"]``).

Memory: three N x N float64 matrices at a time (72 MiB each at N = 3000; KID's kernels are released before the
distances are formed); above ``MAX_REALISM_SAMPLES`` samples the metrics are skipped with the reason.
"""

from __future__ import annotations

import math

import numpy as np

from cfbench.evaluation.protocol import Protocol
from cfbench.metrics.bootstrap import ConfidenceInterval, bootstrap_many, interval_from_replicates, resample_indices
from cfbench.metrics.classification import resample_counts
from cfbench.metrics.kid import KernelInceptionDistance
from cfbench.metrics.manifold import ManifoldEstimates

MAX_REALISM_SAMPLES = 8000  # 3 x 8000^2 float64 = 1.5 GiB
MANIFOLD_NAMES = {"precision": "manifold_precision", "recall": "manifold_recall", "density": "density",
                  "coverage": "coverage"}
REALISM_METRICS = ("kid", *MANIFOLD_NAMES.values())


def bias_shifted(interval: ConfidenceInterval, lower: float = 0.0, upper: float | None = None) -> ConfidenceInterval:
    """The percentile interval moved by the bootstrap bias estimate ``replicate_mean - value`` and clipped to the
    metric's range, as FID's. A resample holds about 63 % distinct samples, whose k-NN balls are larger, so the
    precision / recall / coverage replicates sit above the estimate (measured: coverage 0.92, replicates
    0.96-1.00 at N = 24); ``replicate_mean`` stays recorded, so the unshifted interval is recoverable."""
    bias = interval.replicate_mean - interval.value
    if not math.isfinite(bias):
        return interval
    clip = lambda x: min(max(x, lower), math.inf if upper is None else upper)  # noqa: E731
    return ConfidenceInterval(interval.value, clip(interval.low - bias), clip(interval.high - bias), interval.level,
                              interval.n_resamples, interval.n, interval.n_skipped, interval.replicate_mean)


def realism_scores(table, protocol: Protocol = Protocol()) -> tuple[dict[str, ConfidenceInterval], dict, dict]:
    """(intervals by metric name, components, skipped metric -> reason) for a table with features."""
    skipped: dict[str, str] = {}
    if "features" not in table.generated or "features" not in table.real:
        return {}, {}, skipped
    n = len(table)
    if n > MAX_REALISM_SAMPLES:
        reason = f"{n} samples > {MAX_REALISM_SAMPLES}: the N x N matrices would need {3 * 8 * n * n / 2**30:.1f} GiB"
        return {}, {}, {name: reason for name in REALISM_METRICS}
    real, generated = table.real["features"], table.generated["features"]
    intervals: dict[str, ConfidenceInterval] = {}
    components: dict = {}
    resamples, seed = protocol.fid_bootstrap_resamples, protocol.bootstrap_seed
    if n >= 2:
        kid = KernelInceptionDistance(subsets=protocol.kid_subsets, subset_size=protocol.kid_subset_size)
        kid.update(real, real=True)
        kid.update(generated, real=False)
        value = kid.compute()
        if resamples > 0:
            index_matrix = np.stack(list(resample_indices(n, resamples, seed)))
            replicates = kid.compute_on_counts(resample_counts(index_matrix, n))
            intervals["kid"] = interval_from_replicates(value, replicates, protocol.confidence_level, n)
        else:
            intervals["kid"] = ConfidenceInterval(value, math.nan, math.nan, protocol.confidence_level, 0, n)
        mean, std, size = kid.compute_subsets(seed)
        components["kid"] = {"subset_mean": mean, "subset_std": std, "subsets": protocol.kid_subsets,
                             "subset_size": size, "kernel": "(x.y / d + 1)^3",
                             "note": "kid = the unbiased MMD^2 over all samples; subset_mean / subset_std: over "
                                     "random subsets, as torchmetrics and CheXGenBench report KID"}
        del kid
    else:
        skipped["kid"] = f"KID needs at least 2 samples, got {n}"
    manifold = ManifoldEstimates(protocol.precision_recall_k, protocol.density_coverage_k)
    if n <= manifold.max_k:
        reason = f"k = {manifold.max_k} nearest neighbours need more than {manifold.max_k} samples, got {n}"
        skipped.update({name: reason for name in MANIFOLD_NAMES.values()})
        return intervals, components, skipped
    manifold.update(real, real=True)
    manifold.update(generated, real=False)

    def batched(index_matrix: np.ndarray) -> dict[str, np.ndarray]:
        return {MANIFOLD_NAMES[key]: values for key, values in manifold.compute_on_many(index_matrix).items()}

    manifold_intervals = bootstrap_many({}, n, max(resamples, 1), protocol.confidence_level, seed, batched=[batched])
    intervals.update({name: bias_shifted(ci, upper=None if name == "density" else 1.0)
                      for name, ci in manifold_intervals.items()})
    if resamples <= 0:
        for name in MANIFOLD_NAMES.values():
            intervals[name] = ConfidenceInterval(intervals[name].value, math.nan, math.nan, protocol.confidence_level,
                                                 0, n)
    components["manifold"] = {"precision_recall_k": protocol.precision_recall_k,
                              "density_coverage_k": protocol.density_coverage_k,
                              "distance": "Euclidean, evaluator features"}
    return intervals, components, skipped
