"""Frechet distance between feature distributions of real and generated images (FID).

Gaussians N(mu_r, S_r) and N(mu_g, S_g) are fitted to feature vectors (1024-d in the protocols) of
the real and the generated images, and

    FID = |mu_r - mu_g|^2 + tr(S_r) + tr(S_g) - 2 tr( sqrtm(S_r S_g) )

in squared feature units (>= 0; 0 for identical statistics). The computation follows pytorch-fid's
definition (covariances with ddof=1, like ``np.cov``). The trace of the matrix square root is computed
by symmetric eigen-decompositions (:func:`trace_sqrt_product`) instead of a general ``sqrtm``: the same
quantity (tested equal to the ``scipy.linalg.sqrtm`` formula to 1e-6 relative), 30x faster at d = 1024,
and defined for the singular covariances of N < d samples, where ``sqrtm`` returns complex noise.
This module is written from the formula and is not pytorch-fid code.

Memory: ``FrechetDistance`` keeps running sums in float64 (count, sum, sum of outer products of
features shifted by the first batch's mean, for numerical stability): 2 d^2 + 2 d numbers, constant in
N (about 16 MiB for d = 1024). Per-sample features are only kept with ``keep_features=True`` (N d
float32 numbers, 4 KiB per sample at d = 1024), which the bootstrap needs: ``compute_on(indices)``
rebuilds the statistics of a resample from the stored features.

Bootstrap cost: a resample of m distinct rows has covariances of rank < m. When m < d (every N up to
about 1.5 d), ``compute_on`` never forms the d x d matrices: with S = A^T A for the m x d factor A of
weighted, centred rows, tr S = |A|_F^2 and tr sqrtm(S_r S_g) is the nuclear norm (sum of singular
values) of the m x m matrix A_r A_g^T (:func:`frechet_distance_from_factors`; tested equal to the
covariance formula), which costs O(m^2 d + m^3) instead of two d x d eigen-decompositions (about
0.3 s at d = 1024 on 2 CPU cores). When N <= d the N x N Gram matrices of the stored features are formed
once and each resample costs O(N^2 + m^3) (:class:`_GramPath`). The default number of resamples for FID stays
``FID_BOOTSTRAP_RESAMPLES`` = 200, configurable.

Bootstrap bias: FID is biased upward at small N (the bias grows roughly like d / N), and a resample holds only
about 63% distinct samples, so the replicates sit well above the point estimate (measured: N = 1000,
d = 1024, FID 537, replicates about 830-850). The percentile interval then need not contain the point
estimate; ``ConfidenceInterval.replicate_mean`` shows the shift. Read an FID interval as a measure of
spread, and compare two runs on the same samples with ``paired_difference_ci``, where a bias shared by
the two runs cancels in part (not measured here).
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from cfbench.metrics._inputs import check_indices, empty_error, float_array

FID_BOOTSTRAP_RESAMPLES = 200


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2) (see the module docstring)."""
    mu1 = np.atleast_1d(np.asarray(mu1, dtype=np.float64))
    mu2 = np.atleast_1d(np.asarray(mu2, dtype=np.float64))
    sigma1 = np.atleast_2d(np.asarray(sigma1, dtype=np.float64))
    sigma2 = np.atleast_2d(np.asarray(sigma2, dtype=np.float64))
    d = mu1.shape[0]
    if mu1.shape != mu2.shape or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(
            f"frechet_distance: inconsistent shapes mu1 {mu1.shape}, mu2 {mu2.shape}, "
            f"sigma1 {sigma1.shape}, sigma2 {sigma2.shape}"
        )
    for name, sigma in (("sigma1", sigma1), ("sigma2", sigma2)):
        if not np.allclose(sigma, sigma.T, rtol=1e-6, atol=1e-9 * max(1.0, float(np.abs(sigma).max()))):
            raise ValueError(f"frechet_distance: {name} is not symmetric; expected a covariance matrix")
    mean_term = float(np.sum((mu1 - mu2) ** 2))
    value = mean_term + float(np.trace(sigma1)) + float(np.trace(sigma2)) - 2.0 * trace_sqrt_product(sigma1, sigma2)
    return max(value, 0.0)  # FID >= 0; a tiny negative value is round-off of identical statistics


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """tr sqrtm(sigma1 @ sigma2) for symmetric positive semi-definite matrices.

    sigma1 @ sigma2 is similar to the symmetric PSD matrix R sigma2 R with R = sigma1^(1/2), so its square
    root's trace is the sum of the square roots of that matrix's eigenvalues. Two symmetric
    eigen-decompositions replace a general Schur-based sqrtm: about 30x faster at d = 1024, never complex,
    and defined for singular covariances (N < d). Eigenvalues below 0 (round-off) are clipped to 0.
    """
    eigenvalues, eigenvectors = np.linalg.eigh((sigma1 + sigma1.T) / 2.0)
    root = (eigenvectors * np.sqrt(np.clip(eigenvalues, 0.0, None))) @ eigenvectors.T
    inner = root @ ((sigma2 + sigma2.T) / 2.0) @ root
    return float(np.sqrt(np.clip(np.linalg.eigvalsh((inner + inner.T) / 2.0), 0.0, None)).sum())


def frechet_distance_from_factors(mu1: np.ndarray, factor1: np.ndarray, mu2: np.ndarray,
                                  factor2: np.ndarray) -> float:
    """Frechet distance between N(mu1, factor1^T factor1) and N(mu2, factor2^T factor2).

    factor1 (m1, d), factor2 (m2, d): covariance factors (e.g. weighted centred rows / sqrt(n - 1)). The
    non-zero eigenvalues of S1 S2 = A1^T A1 A2^T A2 are those of (A1 A2^T)(A1 A2^T)^T, so
    tr sqrtm(S1 S2) is the sum of the singular values of A1 A2^T (m1 x m2): no d x d matrix is formed.
    """
    factor1, factor2 = np.asarray(factor1, np.float64), np.asarray(factor2, np.float64)
    mean_term = float(np.sum((np.asarray(mu1, np.float64) - np.asarray(mu2, np.float64)) ** 2))
    cross = np.linalg.svd(factor1 @ factor2.T, compute_uv=False)
    value = mean_term + float(np.sum(factor1 ** 2)) + float(np.sum(factor2 ** 2)) - 2.0 * float(cross.sum())
    return max(value, 0.0)


def gaussian_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (d,) and covariance (d, d) with ddof=1 of features (N, d), in float64, N >= 2."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"gaussian_statistics: need features of shape (N >= 2, d), got {features.shape}")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance_from_features(real: np.ndarray, generated: np.ndarray) -> float:
    """FID from full feature arrays (N_r, d) and (N_g, d): the batch reference for ``FrechetDistance``."""
    real = np.asarray(real)
    generated = np.asarray(generated)
    if real.ndim != 2 or generated.ndim != 2 or real.shape[1] != generated.shape[1]:
        raise ValueError(f"frechet_distance_from_features: feature shapes {real.shape} and {generated.shape} differ")
    return frechet_distance(*gaussian_statistics(real), *gaussian_statistics(generated))


class RunningGaussianStatistics:
    """Mean and covariance (ddof=1) of a stream of feature vectors in constant memory.

    Accumulates, in float64, the count, the sum and the sum of outer products of ``x - shift``, where
    ``shift`` is the mean of the first batch (shifting does not change the covariance and avoids the
    cancellation of E[xx^T] - mu mu^T when |mean| >> std).
    """

    def __init__(self, num_features: int) -> None:
        self.num_features = num_features
        self.count = 0
        self.shift: np.ndarray | None = None
        self.sum = np.zeros(num_features, dtype=np.float64)
        self.sum_outer = np.zeros((num_features, num_features), dtype=np.float64)

    def update(self, features: np.ndarray) -> None:
        features = np.asarray(features, dtype=np.float64)
        if features.shape[0] == 0:
            return
        if self.shift is None:
            self.shift = features.mean(axis=0)
        centred = features - self.shift
        self.count += features.shape[0]
        self.sum += centred.sum(axis=0)
        self.sum_outer += centred.T @ centred

    def mean_and_covariance(self) -> tuple[np.ndarray, np.ndarray]:
        if self.count < 2:
            raise ValueError(f"need at least 2 feature vectors for a covariance, got {self.count}")
        shifted_mean = self.sum / self.count
        covariance = (self.sum_outer - self.count * np.outer(shifted_mean, shifted_mean)) / (self.count - 1)
        return shifted_mean + self.shift, covariance


def _weighted_factor(features: np.ndarray, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (d,) and covariance factor A (m, d) of ``features[indices]`` (m distinct rows), with
    covariance (ddof=1) = A^T A, without materialising the resample."""
    weights = np.bincount(indices, minlength=features.shape[0]).astype(np.float64)
    used = weights > 0
    weights, rows = weights[used], features[used].astype(np.float64)
    n = weights.sum()
    mean = weights @ rows / n
    return mean, (rows - mean) * np.sqrt(weights / (n - 1))[:, None]


def _resample_fid(real: np.ndarray, real_indices: np.ndarray, generated: np.ndarray, indices: np.ndarray,
                  basis: "_WhitenedBasis | None" = None) -> float:
    """FID of two resamples: through the m x m factor product when both have fewer distinct rows than
    features, else in the whitened basis of the full real sample (``basis``, :class:`_WhitenedBasis`),
    else (no basis, or a resample covariance that is not positive definite there) through the d x d
    covariances."""
    mu_real, factor_real = _weighted_factor(real, real_indices)
    mu_generated, factor_generated = _weighted_factor(generated, indices)
    if max(len(factor_real), len(factor_generated)) < real.shape[1]:
        return frechet_distance_from_factors(mu_real, factor_real, mu_generated, factor_generated)
    if basis is not None:
        cross = basis.trace_sqrt_product(real_indices, indices)
        if cross is not None:
            mean_term = float(np.sum((mu_real - mu_generated) ** 2))
            value = mean_term + float(np.sum(factor_real ** 2)) + float(np.sum(factor_generated ** 2)) - 2.0 * cross
            return max(value, 0.0)
    return frechet_distance(mu_real, factor_real.T @ factor_real, mu_generated, factor_generated.T @ factor_generated)


class _GramPath:
    """The bootstrap path when both full samples hold at most d rows (then every resample does too): the
    factor products of :func:`frechet_distance_from_factors` from Gram matrices formed once.

    With the rows shifted by the full real mean (a common shift changes no term of the FID), the N x N
    Gram blocks K_rr = R R^T, K_gg = G G^T and K_rg = R G^T are computed once. A resample with counts c
    (n = sum c, weights w = c / n) has mean w^T X and centred rows P X with P = I - 1 w^T, so every term
    is a small matrix expression: |mu_r - mu_g|^2 = w_r^T K_rr w_r + w_g^T K_gg w_g - 2 w_r^T K_rg w_g,
    tr S = sum_i c_i (P K P^T)_ii / (n - 1), and tr sqrtm(S_r S_g) is the nuclear norm of
    D_r P_r K_rg P_g^T D_g / sqrt((n_r - 1)(n_g - 1)) over the distinct rows (D = diag(sqrt c)). Per
    replicate that is O(m^2) work and an m x m SVD instead of an m x d copy and an m x d x m product.
    Tested equal to the direct formula."""

    def __init__(self, real: np.ndarray, generated: np.ndarray) -> None:
        real64 = np.asarray(real, np.float64)
        shift = real64.mean(axis=0)
        rows_real, rows_generated = real64 - shift, np.asarray(generated, np.float64) - shift
        self.real_real = rows_real @ rows_real.T
        self.generated_generated = rows_generated @ rows_generated.T
        self.real_generated = rows_real @ rows_generated.T

    @staticmethod
    def _centred_diagonal(gram: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """diag(P K P^T) for P = I - 1 w^T: K_ii - 2 (K w)_i + w^T K w."""
        kw = gram @ weights
        return np.diagonal(gram) - 2.0 * kw + weights @ kw

    def fid(self, real_indices: np.ndarray, indices: np.ndarray) -> float:
        counts_real = np.bincount(real_indices, minlength=len(self.real_real)).astype(np.float64)
        counts = np.bincount(indices, minlength=len(self.generated_generated)).astype(np.float64)
        n_real, n = counts_real.sum(), counts.sum()
        w_real, w = counts_real / n_real, counts / n
        kw_real, kw = self.real_generated @ w, w_real @ self.real_generated
        mean_term = (w_real @ self.real_real @ w_real + w @ self.generated_generated @ w - 2.0 * (w_real @ kw_real))
        trace_real = counts_real @ self._centred_diagonal(self.real_real, w_real) / (n_real - 1)
        trace_generated = counts @ self._centred_diagonal(self.generated_generated, w) / (n - 1)
        used_real, used = counts_real > 0, counts > 0
        # P_r K_rg P_g^T = K_rg - 1 (w_r^T K_rg) - (K_rg w_g) 1^T + (w_r^T K_rg w_g), on the distinct rows
        centred = (self.real_generated[np.ix_(used_real, used)] - kw[used][None, :] - kw_real[used_real][:, None]
                   + w_real @ kw_real)
        cross = (np.sqrt(counts_real[used_real])[:, None] * centred * np.sqrt(counts[used])[None, :]
                 / math.sqrt((n_real - 1) * (n - 1)))
        nuclear = float(np.linalg.svd(cross, compute_uv=False).sum())
        return max(float(mean_term + trace_real + trace_generated) - 2.0 * nuclear, 0.0)


class _WhitenedBasis:
    """The bootstrap path for resamples with more distinct rows than features (N > d), built once per
    feature set.

    With the full real sample's covariance S = V diag(lam) V^T (k directions with lam > 0), the real rows are
    mapped to y = x V lam^(-1/2) and the generated rows to z = x V lam^(1/2). For any resample covariances
    S_r, S_g this is a similarity: (T S_r T^T)(T^-T S_g T^-1) = T (S_r S_g) T^-1, so the eigenvalues of the
    product, and tr sqrtm(S_r S_g), are unchanged (exact in exact arithmetic). The centred rows of a real
    resample lie in the span of the full sample's centred rows, i.e. in range(S), so dropping the directions
    with lam = 0 (at round-off: lam <= k eps lam_max) loses nothing. In these coordinates the real resample
    covariance is close to the identity, so its Cholesky factor L is well conditioned, and

        tr sqrtm(S_r S_g) = sum sqrt(eig(L^T S_g L))

    costs two k x k Gram matrices (syrk over the m distinct rows), one Cholesky, one ``dsygst`` (L^T S_g L)
    and one symmetric eigenvalue solve without eigenvectors, instead of an eigen-decomposition with
    eigenvectors, three d x d products and another eigenvalue solve. Tested equal to the direct formula.
    """

    def __init__(self, real: np.ndarray, generated: np.ndarray) -> None:
        real64 = np.asarray(real, np.float64)
        centred = real64 - real64.mean(axis=0)
        eigenvalues, eigenvectors = np.linalg.eigh(centred.T @ centred)
        keep = eigenvalues > max(float(eigenvalues[-1]), 0.0) * len(eigenvalues) * np.finfo(np.float64).eps
        scale = np.sqrt(eigenvalues[keep])
        basis = eigenvectors[:, keep]
        self.real = (real64 @ basis) / scale
        self.generated = (np.asarray(generated, np.float64) @ basis) * scale

    def trace_sqrt_product(self, real_indices: np.ndarray, indices: np.ndarray) -> float | None:
        """tr sqrtm(S_r S_g) of the two resamples; None when the real resample covariance is not positive
        definite in the kept directions (fewer distinct rows than directions), for the caller's fallback."""
        from scipy.linalg import lapack

        _, real = _weighted_factor(self.real, real_indices)
        _, generated = _weighted_factor(self.generated, indices)
        if len(real) <= real.shape[1]:
            return None
        cholesky, info = lapack.dpotrf(real.T @ real, lower=1, clean=0, overwrite_a=1)
        if info != 0:
            return None
        product, info = lapack.dsygst(generated.T @ generated, cholesky, itype=2, lower=1, overwrite_a=1)
        if info != 0:
            return None
        eigenvalues = np.linalg.eigvalsh(product, UPLO="L")
        return float(np.sqrt(np.clip(eigenvalues, 0.0, None)).sum())


class FrechetDistance:
    """FID between real and generated images from their feature vectors, streamed over batches.

    ``update(features, real=True|False)``: a batch (B, d) of real or generated features. ``compute()``
    -> FID (float, >= 0, squared feature units); needs at least 2 vectors per side. With
    ``keep_features=True`` the features are also stored (float32) so that ``compute_on(indices)`` can
    evaluate a bootstrap resample; see the module docstring for memory and cost. With stored features and
    at most d of them per side, ``compute()`` takes the same N x N factor form as the resamples (the d x d
    eigen path loses about 1e-7 relative there, to round-off on the zero eigenvalues of N < d covariances).
    ``default_bootstrap_resamples`` (200) is what ``bootstrap_metric`` uses unless told otherwise.
    """

    default_bootstrap_resamples = FID_BOOTSTRAP_RESAMPLES

    def __init__(self, num_features: int = 1024, keep_features: bool = False) -> None:
        self.num_features = num_features
        self.keep_features = keep_features
        self._statistics = {
            True: RunningGaussianStatistics(num_features),
            False: RunningGaussianStatistics(num_features),
        }
        self._features: dict[bool, list[np.ndarray]] = {True: [], False: []}
        self._basis: _WhitenedBasis | None = None  # built on the first resample that needs it (N > d)
        self._gram: _GramPath | None = None  # built on the first resample when N <= d
        self._basis_lock = threading.Lock()

    def update(self, features: np.ndarray, *, real: bool) -> None:
        name = type(self).__name__
        features = float_array(features, "features", name, ndim=2)
        if features.shape[1] != self.num_features:
            raise ValueError(f"{name}: expected features of shape (B, {self.num_features}), got {features.shape}")
        self._statistics[bool(real)].update(features)
        if self.keep_features:
            self._features[bool(real)].append(features.astype(np.float32))
            self._basis = self._gram = None

    @property
    def num_real(self) -> int:
        return self._statistics[True].count

    @property
    def num_generated(self) -> int:
        return self._statistics[False].count

    @property
    def num_samples(self) -> int:
        """Number of paired samples for the bootstrap (real and generated counts must agree)."""
        if self.num_real != self.num_generated:
            raise ValueError(
                f"{type(self).__name__}: {self.num_real} real and {self.num_generated} generated feature vectors; "
                "a paired bootstrap needs equal counts (pass real_indices to compute_on to resample separately)"
            )
        return self.num_generated

    def compute(self) -> float:
        if self.num_real == 0 and self.num_generated == 0:
            raise empty_error(type(self).__name__)
        for real, side in ((True, "real"), (False, "generated")):
            if self._statistics[real].count < 2:
                count = self._statistics[real].count
                raise ValueError(f"{type(self).__name__}: {count} {side} feature vector(s); FID needs at least 2")
        if self.keep_features:  # N <= d: the factor form (an N x N SVD), exact where the d x d path rounds off
            real, generated = self._stored(True), self._stored(False)
            gram = self._gram_for(real, generated)
            if gram is not None:
                return gram.fid(np.arange(len(real)), np.arange(len(generated)))
        mu_real, sigma_real = self._statistics[True].mean_and_covariance()
        mu_generated, sigma_generated = self._statistics[False].mean_and_covariance()
        return frechet_distance(mu_real, sigma_real, mu_generated, sigma_generated)

    def _stored(self, real: bool) -> np.ndarray:
        batches = self._features[real]
        if not batches:
            return np.empty((0, self.num_features), dtype=np.float32)
        if len(batches) > 1:
            self._features[real] = batches = [np.concatenate(batches)]  # concatenate once, not per replicate
        return batches[0]

    def compute_on(self, indices: np.ndarray, real_indices: np.ndarray | None = None) -> float:
        """FID on a resample: generated rows ``indices`` and real rows ``real_indices``.

        Without ``real_indices`` the design is paired (row i of each set is the same sample) and the same
        indices resample both sets. Needs ``keep_features=True``. Returns NaN when a resample holds fewer
        than 2 distinct rows on either side.
        """
        generated, real, indices, real_indices = self._resample_arguments(indices, real_indices)
        if len(np.unique(indices)) < 2 or len(np.unique(real_indices)) < 2:
            return math.nan
        gram = self._gram_for(real, generated)
        if gram is not None:
            return gram.fid(real_indices, indices)
        return _resample_fid(real, real_indices, generated, indices, self._basis_for(real, generated))

    def compute_on_many(self, index_sets, real_index_sets=None, workers: int | None = None,
                        nan_on_error: bool = False) -> np.ndarray:
        """``compute_on`` of every index set (the replicates of a bootstrap), as an array in the same order.

        The replicates are independent, so they run on ``workers`` threads (default: the CPUs this process
        may use, at most 4), each with single-threaded BLAS: on a few shared cores this is faster than one
        replicate at a time on multi-threaded BLAS, whose threads wait for each other. Each value is the
        one ``compute_on`` gives for that index set (up to BLAS round-off). ``nan_on_error``: a replicate whose
        FID is numerically undefined (ValueError) is NaN instead of an error."""
        index_sets = list(index_sets)
        real_index_sets = [None] * len(index_sets) if real_index_sets is None else list(real_index_sets)
        if len(real_index_sets) != len(index_sets):
            raise ValueError(f"{type(self).__name__}: {len(index_sets)} index sets but {len(real_index_sets)} real ones")
        if workers is None:
            workers = min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
        def one(indices, real_indices) -> float:
            try:
                return self.compute_on(indices, real_indices)
            except ValueError:
                if nan_on_error:
                    return math.nan
                raise

        with _single_threaded_blas():
            if index_sets:  # checks the arguments, concatenates the stored batches, builds the basis: once
                generated, real, *_ = self._resample_arguments(index_sets[0], real_index_sets[0])
                if self._gram_for(real, generated) is None:
                    self._basis_for(real, generated)
            if workers <= 1 or len(index_sets) <= 1:
                values = [one(i, r) for i, r in zip(index_sets, real_index_sets)]
            else:
                with ThreadPoolExecutor(max_workers=workers) as pool:
                    values = list(pool.map(one, index_sets, real_index_sets))
        return np.asarray(values, dtype=np.float64)

    def _resample_arguments(self, indices, real_indices):
        name = type(self).__name__
        if not self.keep_features:
            raise RuntimeError(f"{name}: compute_on needs the features; construct with keep_features=True")
        if not self._features[False]:
            raise empty_error(name)
        generated = self._stored(False)
        real = self._stored(True)
        if real_indices is None:
            _ = self.num_samples  # checks the counts agree
            real_indices = indices
        indices = check_indices(indices, len(generated), name)
        real_indices = check_indices(real_indices, len(real), name)
        return generated, real, indices, real_indices

    def _gram_for(self, real: np.ndarray, generated: np.ndarray) -> "_GramPath | None":
        """The Gram path when neither full sample has more rows than features, else None."""
        if max(len(real), len(generated)) > self.num_features:
            return None
        with self._basis_lock:
            if self._gram is None:
                self._gram = _GramPath(real, generated)
        return self._gram

    def _basis_for(self, real: np.ndarray, generated: np.ndarray) -> "_WhitenedBasis | None":
        """The whitened basis when a resample can hold more distinct rows than features, else None."""
        if max(len(real), len(generated)) < self.num_features:
            return None
        with self._basis_lock:
            if self._basis is None:
                self._basis = _WhitenedBasis(real, generated)
        return self._basis


@contextlib.contextmanager
def _single_threaded_blas():
    """BLAS limited to one thread inside the block (threadpoolctl, which scikit-learn brings; else as is)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield
