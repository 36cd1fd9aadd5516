"""KL divergence between the mean pathology probabilities on real and on generated images.

P = per-finding mean of a classifier's predicted probabilities over the REAL images, Q = the same over
the GENERATED images. Per finding c the Bernoulli KL divergence (natural log, in nats)

    KL_c(P || Q) = p_c log(p_c / q_c) + (1 - p_c) log((1 - p_c) / (1 - q_c))

and the reported value is the sum over the findings (five by default), >= 0, 0 when P = Q. p and q are
clipped to [eps, 1 - eps] with eps = 1e-7 before the logs, so a mean of exactly 0 or 1 gives a large
finite value instead of infinity. The papers' scaling of this number is unpublished; it is reported as
is (no factor 100).

Other readings of InstructX2X v2 Eq. 4 (D_KL = sum_i P(i) log(P(i) / Q(i)) over findings), chosen with
``pathology_kl(p, q, variant)``:

- ``"bernoulli"``: the sum of Bernoulli KLs above (the default);
- ``"eq4"``: Eq. 4 as written on the mean probabilities, sum_c p_c log(p_c / q_c) (not a divergence of
  two distributions: p and q need not sum to 1, and the value can be negative);
- ``"normalised"``: Eq. 4 on p / sum(p) and q / sum(q), the KL of two categorical distributions (>= 0).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from cfbench.core.findings import EVALUATED_FINDINGS
from cfbench.metrics._inputs import check_indices, empty_error, float_array

KL_EPS = 1e-7


def bernoulli_kl(p: np.ndarray, q: np.ndarray, eps: float = KL_EPS) -> np.ndarray:
    """Element-wise KL(Bernoulli(p) || Bernoulli(q)) in nats, p and q clipped to [eps, 1 - eps]."""
    p = np.clip(np.asarray(p, dtype=np.float64), eps, 1.0 - eps)
    q = np.clip(np.asarray(q, dtype=np.float64), eps, 1.0 - eps)
    return p * np.log(p / q) + (1.0 - p) * np.log((1.0 - p) / (1.0 - q))


KL_VARIANTS: tuple[str, ...] = ("bernoulli", "eq4", "normalised")
KL_FORMULAS: dict[str, str] = {
    "bernoulli": "sum_c p_c log(p_c/q_c) + (1-p_c) log((1-p_c)/(1-q_c)), nats, p,q clipped to [1e-7, 1-1e-7]",
    "eq4": "sum_c p_c log(p_c/q_c), nats, p,q mean probabilities clipped to [1e-7, 1-1e-7], not normalised",
    "normalised": "sum_c P_c log(P_c/Q_c), nats, P = p/sum(p), Q = q/sum(q) after clipping to [1e-7, 1-1e-7]",
}


def pathology_kl(p: np.ndarray, q: np.ndarray, variant: str = "bernoulli", eps: float = KL_EPS) -> np.ndarray:
    """Per-finding terms of the KL divergence between mean probabilities p (real) and q (generated); the
    metric is their sum. ``variant``: one of :data:`KL_VARIANTS` (see the module docstring)."""
    if variant == "bernoulli":
        return bernoulli_kl(p, q, eps)
    p = np.clip(np.asarray(p, dtype=np.float64), eps, 1.0 - eps)
    q = np.clip(np.asarray(q, dtype=np.float64), eps, 1.0 - eps)
    if variant == "normalised":
        p, q = p / p.sum(axis=-1, keepdims=True), q / q.sum(axis=-1, keepdims=True)
    elif variant != "eq4":
        raise ValueError(f"unknown KL variant {variant!r}; choose one of {', '.join(KL_VARIANTS)}")
    return p * np.log(p / q)


def _check_probabilities(probabilities: np.ndarray, num_classes: int, metric: str) -> np.ndarray:
    probabilities = float_array(probabilities, "probabilities", metric, ndim=2)
    if probabilities.shape[1] != num_classes:
        raise ValueError(f"{metric}: expected probabilities of shape (B, {num_classes}), got {probabilities.shape}")
    if probabilities.size and (probabilities.min() < 0.0 or probabilities.max() > 1.0):
        raise ValueError(
            f"{metric}: probabilities must lie in [0, 1], got [{probabilities.min()}, {probabilities.max()}]"
        )
    return probabilities


class MeanProbability:
    """Per-class mean of predicted probabilities over a stream of samples.

    ``update(probabilities)``: (B, C) in [0, 1]. ``compute()`` -> {class name: mean probability in
    [0, 1]}; ``compute_array()`` the same as an array (C,). A running sum in float64 gives the mean;
    with ``keep_samples=True`` (default; C floats per sample) the rows are also kept so that
    ``compute_array_on(indices)`` can evaluate a bootstrap resample.
    """

    def __init__(self, class_names: Sequence[str] = EVALUATED_FINDINGS, keep_samples: bool = True) -> None:
        self.class_names = tuple(class_names)
        self.keep_samples = keep_samples
        self.count = 0
        self.sum = np.zeros(len(self.class_names), dtype=np.float64)
        self._rows: list[np.ndarray] = []

    def update(self, probabilities: np.ndarray) -> None:
        probabilities = _check_probabilities(probabilities, len(self.class_names), type(self).__name__)
        self.count += probabilities.shape[0]
        self.sum += probabilities.sum(axis=0)
        if self.keep_samples:
            self._rows.append(probabilities)

    @property
    def num_samples(self) -> int:
        return self.count

    def compute_array(self) -> np.ndarray:
        if self.count == 0:
            raise empty_error(type(self).__name__)
        return self.sum / self.count

    def compute(self) -> dict[str, float]:
        return {name: float(value) for name, value in zip(self.class_names, self.compute_array())}

    def compute_array_on(self, indices: np.ndarray) -> np.ndarray:
        """Per-class means over the rows at ``indices`` (needs ``keep_samples=True``)."""
        name = type(self).__name__
        if not self.keep_samples:
            raise RuntimeError(f"{name}: compute_array_on needs the samples; construct with keep_samples=True")
        if self.count == 0:
            raise empty_error(name)
        if len(self._rows) > 1:
            self._rows = [np.concatenate(self._rows)]
        indices = check_indices(indices, self.count, name)
        if indices.size == 0:
            raise ValueError(f"{name}: empty index set")
        return self._rows[0][indices].mean(axis=0)


class PathologyKLDivergence:
    """Sum over findings of KL(P || Q), P / Q = mean probabilities on real / generated images.

    ``update(probabilities, real=True|False)``: a batch (B, F) of classifier probabilities on real or
    generated images, columns in the order of ``findings``. ``compute()`` -> dict: ``total`` (nats, the
    sum over findings, >= 0), ``per_finding`` {finding: KL}, ``p_real`` and ``q_generated`` (the mean
    probabilities), ``eps``. See the module docstring for the formula.
    """

    def __init__(
        self, findings: Sequence[str] = EVALUATED_FINDINGS, eps: float = KL_EPS, keep_samples: bool = True
    ) -> None:
        self.findings = tuple(findings)
        self.eps = eps
        self.real = MeanProbability(self.findings, keep_samples=keep_samples)
        self.generated = MeanProbability(self.findings, keep_samples=keep_samples)

    def update(self, probabilities: np.ndarray, *, real: bool) -> None:
        (self.real if real else self.generated).update(probabilities)

    @property
    def num_samples(self) -> int:
        """Number of paired samples for the bootstrap (real and generated counts must agree)."""
        if self.real.count != self.generated.count:
            raise ValueError(
                f"{type(self).__name__}: {self.real.count} real and {self.generated.count} generated samples; "
                "a paired bootstrap needs equal counts (pass real_indices to compute_on to resample separately)"
            )
        return self.generated.count

    def _check_filled(self) -> None:
        for side, mean in (("real", self.real), ("generated", self.generated)):
            if mean.count == 0:
                raise RuntimeError(f"{type(self).__name__}: compute() called before any {side} sample was added")

    def compute(self) -> dict:
        self._check_filled()
        p, q = self.real.compute_array(), self.generated.compute_array()
        per_finding = bernoulli_kl(p, q, self.eps)
        return {
            "total": float(per_finding.sum()),
            "per_finding": dict(zip(self.findings, per_finding.tolist())),
            "p_real": dict(zip(self.findings, p.tolist())),
            "q_generated": dict(zip(self.findings, q.tolist())),
            "eps": self.eps,
        }

    def compute_on(self, indices: np.ndarray, real_indices: np.ndarray | None = None) -> float:
        """Total KL on a resample; without ``real_indices`` the same indices resample both (paired) sets."""
        self._check_filled()
        if real_indices is None:
            _ = self.num_samples  # checks the counts agree
            real_indices = indices
        p = self.real.compute_array_on(real_indices)
        q = self.generated.compute_array_on(indices)
        return float(bernoulli_kl(p, q, self.eps).sum())
