"""k-nearest-neighbour manifold estimates of fidelity and coverage between real and generated features.

Each real (generated) sample's neighbourhood is the ball around it of radius its distance to its k-th
nearest neighbour among the real (generated) samples, itself left out (Euclidean distance in feature units).

- ``precision`` (Kynkaanniemi et al., NeurIPS 2019, "improved precision"): the fraction of generated samples
  inside at least one real ball; ``recall``: the fraction of real samples inside at least one generated ball.
  Their k: ``precision_recall_k`` = 3, the paper's.
- ``density`` (Naeem et al., ICML 2020): the mean number of real balls holding a generated sample, divided by
  k (about 1 when the two distributions match; above 1 where generated samples crowd dense real regions);
  ``coverage``: the fraction of real samples whose ball holds at least one generated sample. Their k:
  ``density_coverage_k`` = 5, the paper's recommendation.

All in [0, 1] except density (>= 0, unbounded). "Inside" is the strict comparison distance < radius, as in the
``prdc`` package (Naeem et al.'s code), which the tests check every value against to 1e-6; distances come
from the same ``sklearn.metrics.pairwise_distances``. Not ``prdc`` itself: it computes one k for all four
numbers, prints, and has no resampling; here the three N x N distance matrices are formed once and every
bootstrap replicate reads them.

Bootstrap (paired: row i of each set is the same sample): a replicate's manifolds are built from the DISTINCT
samples it drew (a sample drawn twice would otherwise be its own nearest neighbour at distance 0 and shrink
its ball), and its averages weight each sample by how often it was drawn. With every sample drawn once this
is the point estimate. Cost: three N x N float64 matrices (72 MiB each at N = 3000); a replicate partitions
its m x m blocks (m about 0.63 N).
"""

from __future__ import annotations

import numpy as np

from cfbench.metrics._inputs import PairedFeatureStore, check_indices

MANIFOLD_BOOTSTRAP_RESAMPLES = 200
PRECISION_RECALL_K = 3
DENSITY_COVERAGE_K = 5
MANIFOLD_METRICS = ("precision", "recall", "density", "coverage")


def pairwise_distances(a: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """Euclidean distances (M, N) between rows of a and b (a with itself when b is None), float64."""
    from sklearn.metrics import pairwise_distances as sklearn_distances

    a = np.asarray(a, np.float64)
    return sklearn_distances(a, a if b is None else np.asarray(b, np.float64), metric="euclidean")


def kth_neighbour_radii(distances: np.ndarray, ks: tuple[int, ...]) -> dict[int, np.ndarray]:
    """Per row of a square distance matrix (zero diagonal), the distance to the k-th nearest OTHER row, for
    each k in ``ks`` (position k of the sorted row, position 0 being the row itself)."""
    partitioned = np.partition(distances, sorted(set(ks)), axis=1)
    return {k: partitioned[:, k] for k in ks}


def _estimates(real_real, real_generated, generated_generated, real_weights, generated_weights,
               precision_recall_k: int, density_coverage_k: int) -> dict[str, float]:
    """The four numbers from the distance blocks of one (re)sample; weights: draw counts per row."""
    ks = (precision_recall_k, density_coverage_k)
    real_radii = kth_neighbour_radii(real_real, ks)
    generated_radii = kth_neighbour_radii(generated_generated, (precision_recall_k,))
    n_real, n_generated = real_weights.sum(), generated_weights.sum()
    inside_real = real_generated < real_radii[precision_recall_k][:, None]
    inside_generated = real_generated < generated_radii[precision_recall_k][None, :]
    inside_real_dc = real_generated < real_radii[density_coverage_k][:, None]
    return {
        "precision": float(generated_weights @ inside_real.any(axis=0) / n_generated),
        "recall": float(real_weights @ inside_generated.any(axis=1) / n_real),
        "density": float(generated_weights @ inside_real_dc.sum(axis=0) / (density_coverage_k * n_generated)),
        "coverage": float(real_weights @ inside_real_dc.any(axis=1) / n_real),
    }


class ManifoldEstimates(PairedFeatureStore):
    """Precision, recall, density and coverage of generated vs real feature vectors (module docstring).

    ``update(features, real=True|False)``: a batch (B, d). ``compute()`` -> {name: value};
    ``compute_on(indices)`` -> the same for a paired bootstrap replicate. Needs more samples per side than
    the larger k.
    """

    default_bootstrap_resamples = MANIFOLD_BOOTSTRAP_RESAMPLES

    def __init__(self, precision_recall_k: int = PRECISION_RECALL_K,
                 density_coverage_k: int = DENSITY_COVERAGE_K) -> None:
        if min(precision_recall_k, density_coverage_k) < 1:
            raise ValueError(f"ManifoldEstimates: k must be >= 1, got {precision_recall_k}, {density_coverage_k}")
        self.precision_recall_k, self.density_coverage_k = precision_recall_k, density_coverage_k
        super().__init__()
        self._distances: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    @property
    def max_k(self) -> int:
        return max(self.precision_recall_k, self.density_coverage_k)

    def _changed(self) -> None:
        self._distances = None

    def _distance_blocks(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self._distances is None:
            real, generated = self._stored(True), self._stored(False)
            for side, rows in (("real", real), ("generated", generated)):
                if len(rows) <= self.max_k:
                    raise ValueError(f"{type(self).__name__}: {len(rows)} {side} feature vector(s); k = "
                                     f"{self.max_k} needs at least {self.max_k + 1}")
            self._distances = pairwise_distances(real), pairwise_distances(real, generated), pairwise_distances(
                generated)
        return self._distances

    def compute(self) -> dict[str, float]:
        real_real, real_generated, generated_generated = self._distance_blocks()
        return _estimates(real_real, real_generated, generated_generated, np.ones(len(real_real)),
                          np.ones(len(generated_generated)), self.precision_recall_k, self.density_coverage_k)

    def compute_on(self, indices: np.ndarray) -> dict[str, float]:
        """The four numbers on a paired resample; NaN when it holds no more distinct samples than k."""
        indices = check_indices(indices, self.num_samples, type(self).__name__)
        distinct, counts = np.unique(indices, return_counts=True)
        if len(distinct) <= self.max_k:
            return {name: float("nan") for name in MANIFOLD_METRICS}
        real_real, real_generated, generated_generated = self._distance_blocks()
        block = np.ix_(distinct, distinct)
        weights = counts.astype(np.float64)
        return _estimates(real_real[block], real_generated[block], generated_generated[block], weights, weights,
                          self.precision_recall_k, self.density_coverage_k)

    def compute_on_many(self, index_matrix: np.ndarray) -> dict[str, np.ndarray]:
        """``compute_on`` of every row of a (B, N) index matrix: {name: (B,)} (a batched bootstrap statistic)."""
        rows = [self.compute_on(indices) for indices in np.asarray(index_matrix)]
        return {name: np.array([row[name] for row in rows]) for name in MANIFOLD_METRICS}
