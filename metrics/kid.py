"""Kernel Inception Distance (KID, Binkowski et al., ICLR 2018) between real and generated feature sets.

KID is the squared maximum mean discrepancy (MMD^2) of the two feature distributions under the cubic
polynomial kernel k(x, y) = (gamma x.y + coef)^degree, gamma = 1 / d, coef = 1, degree = 3, estimated
without bias (the U-statistic: the real-real and generated-generated sums leave out each sample's pair
with itself). Units: squared kernel units (about 1 per unit of gamma x.y at degree 3); 0 for identical
distributions in expectation; the unbiased estimate can be slightly negative.

Two estimates of the same quantity:

- ``compute()``: the U-statistic over all N real and N generated samples (``kid``). It equals
  torchmetrics' ``KernelInceptionDistance`` with ``subset_size = N`` and one subset (tested to 1e-6), and it
  is the estimate with the least variance; its bootstrap replicates come cheap (``compute_on_counts``).
- ``compute_subsets()``: what the anchors report (CheXGenBench through torchmetrics, the KID paper's code):
  the mean and population standard deviation of the U-statistic over ``subsets`` random subsets of
  ``subset_size`` real and generated samples (default 100 of 1000, torchmetrics'; at most N). Every subset
  estimate is unbiased, so the mean estimates the same MMD^2 as ``compute()``; the std is the spread of
  one subset's estimate, not an interval for the mean. Tested equal to torchmetrics given the same subsets.

Not torchmetrics itself: torchmetrics draws subsets from torch's global generator and has no resampling
entry; here the subsets come from a seeded numpy generator and the paired bootstrap reuses the N x N kernel
matrices (formed once) for every replicate.

Bootstrap: a replicate draws sample indices with replacement; with counts c (how often each sample was
drawn, n = sum c), the replicate's U-statistic sums the kernel over pairs of DISTINCT samples,

    (c^T K_rr c - sum_i c_i^2 K_rr[i, i]) / (n^2 - sum_i c_i^2)

(and the same for generated): a sample drawn twice is not paired with itself, which would otherwise add its
self-similarity and bias every replicate upwards. The cross term averages k(real_i, generated_j) over pairs
of distinct samples plus each drawn position's own matched pair (real and generated image of one sample),
once per position as in the point estimate: (c^T K_rg c - sum_i c_i^2 K_rg[i, i] + sum_i c_i K_rg[i, i]) /
(n^2 - sum_i c_i^2 + n). With all counts 1 both are the point estimate.

Paired rows matter: when the generated image of a sample IS its real image (the ground-truth reference row),
the cross term's matched pairs are self-similarities that the within terms leave out, so KID is negative
(torchmetrics gives the same number); compare KID between models, not with 0. Cost: three N x N float64 matrices (72 MiB each at N = 3000) and two
(B, N) x (N, N) products per block of B replicates.
"""

from __future__ import annotations

import numpy as np

from cfbench.metrics._inputs import PairedFeatureStore, check_indices

KID_BOOTSTRAP_RESAMPLES = 200
KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000


def polynomial_kernel(a: np.ndarray, b: np.ndarray, degree: int = 3, gamma: float | None = None,
                      coef: float = 1.0) -> np.ndarray:
    """(gamma a b^T + coef)^degree for feature rows a (M, d) and b (N, d), float64; gamma defaults to 1 / d."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    gamma = 1.0 / a.shape[1] if gamma is None else gamma
    return (a @ b.T * gamma + coef) ** degree


def unbiased_mmd2(k_real: np.ndarray, k_cross: np.ndarray, k_generated: np.ndarray) -> float:
    """Unbiased MMD^2 from the kernel blocks of m real and m generated samples (each block m x m)."""
    m = k_real.shape[0]
    within = (k_real.sum() - np.trace(k_real) + k_generated.sum() - np.trace(k_generated)) / (m * (m - 1))
    return float(within - 2.0 * k_cross.sum() / (m * m))


class KernelInceptionDistance(PairedFeatureStore):
    """KID between real and generated feature vectors (see the module docstring).

    ``update(features, real=True|False)``: a batch (B, d). ``compute()`` -> the unbiased MMD^2 over all samples
    (float); ``compute_subsets(seed)`` -> (mean, std) over random subsets as the anchors report;
    ``compute_on(indices)`` / ``compute_on_counts(counts)``: bootstrap replicates (paired: row i of each
    set is the same sample). Needs at least 2 samples per side.
    """

    default_bootstrap_resamples = KID_BOOTSTRAP_RESAMPLES

    def __init__(self, degree: int = 3, gamma: float | None = None, coef: float = 1.0,
                 subsets: int = KID_SUBSETS, subset_size: int = KID_SUBSET_SIZE) -> None:
        if subsets < 1 or subset_size < 2:
            raise ValueError(f"KernelInceptionDistance: subsets must be >= 1 and subset_size >= 2, "
                             f"got {subsets} and {subset_size}")
        self.degree, self.gamma, self.coef = degree, gamma, coef
        self.subsets, self.subset_size = subsets, subset_size
        super().__init__()
        self._kernels: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def _changed(self) -> None:
        self._kernels = None

    def _kernel_blocks(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """K_rr, K_rg, K_gg over every stored sample, formed once."""
        if self._kernels is None:
            real, generated = self._stored(True), self._stored(False)
            for side, rows in (("real", real), ("generated", generated)):
                if len(rows) < 2:
                    raise ValueError(f"{type(self).__name__}: {len(rows)} {side} feature vector(s); KID needs 2")
            if real.shape[1] != generated.shape[1]:
                raise ValueError(f"{type(self).__name__}: real features {real.shape} and generated {generated.shape}"
                                 " differ in dimension")
            kernel = lambda a, b: polynomial_kernel(a, b, self.degree, self.gamma, self.coef)  # noqa: E731
            self._kernels = kernel(real, real), kernel(real, generated), kernel(generated, generated)
        return self._kernels

    def compute(self) -> float:
        """The unbiased MMD^2 over all real and generated samples."""
        k_real, k_cross, k_generated = self._kernel_blocks()
        n_real, n_generated = len(k_real), len(k_generated)
        within_real = (k_real.sum() - np.trace(k_real)) / (n_real * (n_real - 1))
        within_generated = (k_generated.sum() - np.trace(k_generated)) / (n_generated * (n_generated - 1))
        return float(within_real + within_generated - 2.0 * k_cross.mean())

    def compute_subsets(self, seed: int = 0, subset_indices=None) -> tuple[float, float, int]:
        """(mean, population std, subset size) of the unbiased MMD^2 over random subsets.

        The subset size is ``min(subset_size, N_real, N_generated)``; each subset draws that many real and
        generated samples without replacement from ``numpy.random.default_rng(seed)``. ``subset_indices``: an
        explicit list of (real rows, generated rows) pairs instead (to reproduce another implementation's draws).
        """
        k_real, k_cross, k_generated = self._kernel_blocks()
        size = min(self.subset_size, len(k_real), len(k_generated))
        if subset_indices is None:
            rng = np.random.default_rng(seed)
            subset_indices = [(rng.permutation(len(k_real))[:size], rng.permutation(len(k_generated))[:size])
                              for _ in range(self.subsets)]
        values = np.array([unbiased_mmd2(k_real[np.ix_(r, r)], k_cross[np.ix_(r, g)], k_generated[np.ix_(g, g)])
                           for r, g in subset_indices])
        return float(values.mean()), float(values.std()), size

    def compute_on(self, indices: np.ndarray) -> float:
        """The replicate's U-statistic (module docstring) for paired sample indices (with repeats)."""
        indices = check_indices(indices, self.num_samples, type(self).__name__)
        return float(self.compute_on_counts(np.bincount(indices, minlength=self.num_samples)[None])[0])

    def compute_on_counts(self, counts: np.ndarray) -> np.ndarray:
        """Replicates from a (B, N) matrix of draw counts (paired: the same counts for both sides), (B,)."""
        k_real, k_cross, k_generated = self._kernel_blocks()
        counts = np.asarray(counts, np.float64)
        n = counts.sum(axis=1)
        squares = (counts ** 2).sum(axis=1)

        def within(kernel: np.ndarray) -> np.ndarray:
            total = np.einsum("bi,bi->b", counts @ kernel, counts) - (counts ** 2) @ np.diagonal(kernel)
            with np.errstate(invalid="ignore", divide="ignore"):
                return total / (n ** 2 - squares)  # NaN for a replicate of one distinct sample

        # matched pairs (real and generated image of one sample) once per drawn position, as in the point estimate
        matched = counts @ np.diagonal(k_cross)
        cross_total = np.einsum("bi,bi->b", counts @ k_cross, counts) - (counts ** 2) @ np.diagonal(k_cross) + matched
        cross = cross_total / (n ** 2 - squares + n)
        return within(k_real) + within(k_generated) - 2.0 * cross

