"""The evaluation protocol as data: every choice that changes a number, the evaluators that can be chosen,
and the error an evaluation raises. Light to import (the command line builds its options from it).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from cfbench.metrics.cmig import DEFAULT_ACCURACY_TERMS, DEFAULT_RETENTION_TERMS

EVALUATORS: tuple[str, ...] = ("auto", "phantom-cnn", "xrv", "none")
"""auto: the shipped phantom CNN on phantom data, torchxrayvision otherwise; none: pixel measures only."""


class EvaluationError(RuntimeError):
    """A run cannot be evaluated as asked; the message names the run folder or file."""


@dataclass(frozen=True)
class Protocol:
    """Every choice that changes a number. Defaults follow the papers where they say, and say so where not."""

    label_uncertain: str = "exclude"   # uncertain (-1) target labels: exclude / positive / negative
    label_blank: str = "exclude"       # blank target labels: exclude / negative
    accuracy_terms: tuple[str, ...] = DEFAULT_ACCURACY_TERMS
    retention_terms: tuple[str, ...] = DEFAULT_RETENTION_TERMS
    f1_threshold: float = 0.5
    confidence_level: float = 0.95
    bootstrap_resamples: int = 1000
    fid_bootstrap_resamples: int = 200  # each FID replicate costs a d x d matrix square root; 0 disables
    bootstrap_seed: int = 0

    @property
    def label_policy(self):
        """The :class:`cfbench.metrics.LabelPolicy` of these choices."""
        from cfbench.metrics.classification import LabelPolicy

        return LabelPolicy(uncertain=self.label_uncertain, blank=self.label_blank)

    def as_dict(self) -> dict:
        """JSON-ready (tuples as lists)."""
        return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}
