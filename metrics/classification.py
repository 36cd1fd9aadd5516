"""Classification metrics of the evaluation protocols: AUROC (pathology, race, sex) and F1 (ProgEmu).

- Pathology: a classifier's probabilities on the generated images against the CheXpert labels of the
  target study, one AUROC per finding (``PathologyAUROC``) and their mean; labels are 1.0 positive,
  0.0 negative, -1.0 uncertain, NaN/None blank, and a declared ``LabelPolicy`` decides what uncertain
  and blank labels become.
- Race: softmax over the groups against the true group, one-vs-rest AUROC, macro average
  (``MulticlassAUROC``; equals scikit-learn ``roc_auc_score(y, p, multi_class="ovr", average="macro")``).
- Sex: binary AUROC (``BinaryAUROC``).
- ProgEmu: binary F1 per finding at a declared threshold, plus the macro average (``PathologyF1``).

AUROC needs ranks, so these objects keep one score and one label per sample (O(N) scalars, never
images); the same per-sample values let ``compute_on(indices)`` evaluate a bootstrap resample
(see ``cfbench.metrics.bootstrap``). AUROC is a probability in [0, 1] (0.5 = chance); it is undefined
(NaN, with the reason stated) when only one class is present. F1 is in [0, 1].
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np

from cfbench.core.findings import EVALUATED_FINDINGS
from cfbench.metrics._inputs import PerSampleStore, check_indices, float_array

UNCERTAIN_LABEL = -1.0


# ----------------------------------------------------------------------------------------------------
# Functions on full arrays
# ----------------------------------------------------------------------------------------------------


def average_ranks(scores: np.ndarray) -> np.ndarray:
    """float64 ranks 1..n of ``scores``, tied scores sharing the mean of their ranks: SciPy's
    ``rankdata(scores)`` (method "average"), value for value, without importing scipy.stats (half a second of
    start). All NaN when any score is NaN, as SciPy's default ``nan_policy="propagate"``."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if np.isnan(scores).any():
        return np.full(scores.size, np.nan)
    order, group, starts, ends = tie_groups(scores)
    ranks = np.empty(scores.size, dtype=np.float64)
    ranks[order] = ((starts + 1 + ends) / 2.0)[group]  # sorted positions start .. end-1 share their mean rank
    return ranks


def tie_groups(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """1-D float64 ``scores`` sorted once into groups of equal values: (the stable sort order, the group of
    each sorted position, the first sorted position of each group, one past its last)."""
    order = np.argsort(scores, kind="stable")
    ordered = scores[order]
    new_group = np.ones(scores.size, dtype=bool)
    new_group[1:] = ordered[1:] != ordered[:-1]
    starts = np.flatnonzero(new_group)
    return order, np.cumsum(new_group) - 1, starts, np.append(starts[1:], scores.size)


def binary_auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for binary ``labels`` (1 positive, 0 negative).

    Computed as the Mann-Whitney statistic with average ranks, so tied scores count one half: the value
    equals scikit-learn's ``roc_auc_score``. In [0, 1]; NaN when only one class is present.
    """
    labels = np.asarray(labels)
    scores = np.asarray(scores, dtype=np.float64)
    positive = labels == 1
    n_positive = int(positive.sum())
    n_negative = labels.size - n_positive
    if n_positive == 0 or n_negative == 0:
        return math.nan
    ranks = average_ranks(scores)
    rank_sum = float(ranks[positive].sum())
    return (rank_sum - n_positive * (n_positive + 1) / 2.0) / (n_positive * n_negative)


def auroc_undefined_reason(labels: np.ndarray) -> str | None:
    """Why AUROC is undefined for these binary labels (only one class present), or None."""
    labels = np.asarray(labels)
    n_positive = int((labels == 1).sum())
    n_negative = labels.size - n_positive
    if labels.size == 0:
        return "no samples"
    if n_negative == 0:
        return f"only positive labels (n={n_positive}); AUROC needs both classes"
    if n_positive == 0:
        return f"only negative labels (n={n_negative}); AUROC needs both classes"
    return None


def binary_f1(labels: np.ndarray, predicted: np.ndarray, zero_division: float = math.nan) -> float:
    """F1 = 2 TP / (2 TP + FP + FN) of binary predictions against binary labels, in [0, 1].

    Equals scikit-learn's ``f1_score``. When there is no positive label and no positive prediction the
    ratio is 0/0: the result is ``zero_division`` (NaN by default; scikit-learn's default gives 0.0).
    """
    labels = np.asarray(labels) == 1
    predicted = np.asarray(predicted) == 1
    true_positive = int(np.sum(labels & predicted))
    false_positive = int(np.sum(~labels & predicted))
    false_negative = int(np.sum(labels & ~predicted))
    denominator = 2 * true_positive + false_positive + false_negative
    if denominator == 0:
        return float(zero_division)
    return 2.0 * true_positive / denominator


# ----------------------------------------------------------------------------------------------------
# Many bootstrap resamples at once: counts instead of index lists, ranks computed once
# ----------------------------------------------------------------------------------------------------


def resample_counts(index_matrix: np.ndarray, n: int) -> np.ndarray:
    """(B, n) int64: how often each of n samples occurs in each of the B resamples (rows of ``index_matrix``)."""
    index_matrix = np.atleast_2d(np.asarray(index_matrix))
    rows = index_matrix.shape[0]
    flat = (index_matrix + (np.arange(rows, dtype=np.int64) * n)[:, None]).ravel()
    return np.bincount(flat, minlength=rows * n).reshape(rows, n)


class RankedAUROC:
    """Binary AUROC of weighted resamples of one fixed sample, from the sample's order computed once.

    A resample that holds sample j ``w_j`` times (counts from :func:`resample_counts`) has the AUROC of the
    materialised resample, ties within it (repeated samples and equal scores) counting one half, as
    ``binary_auroc`` with average ranks. Sorting the sample once into groups of equal scores g, with
    L_g = the resample's negative weight in groups below g and E_g = its negative weight in group g,

        U = sum over positives j of w_j (L_g(j) + E_g(j) / 2),   AUROC = U / (n_pos n_neg),

    n_pos / n_neg the resample's positive / negative weights: the Mann-Whitney U of the resample, which is
    what ``rank_sum - n_pos (n_pos + 1) / 2`` gives with average ranks. Everything is integer arithmetic on
    2U, so each value is bit-identical to ``binary_auroc`` on the materialised resample. Cost per resample:
    O(n), no sort.
    """

    def __init__(self, labels: np.ndarray, scores: np.ndarray) -> None:
        labels = np.asarray(labels) == 1
        scores = np.asarray(scores, dtype=np.float64)
        if labels.shape != scores.shape or labels.ndim != 1:
            raise ValueError(f"RankedAUROC: labels {labels.shape} and scores {scores.shape} must be equal 1-D shapes")
        self.size = labels.size
        self.order, group, self.starts, self.ends = tie_groups(scores)
        self.positive = labels[self.order]
        self.positive_group = group[self.positive]

    def from_counts(self, counts: np.ndarray) -> np.ndarray:
        """(B,) AUROC of each resample given as counts (B, size) over this sample; NaN where one class is absent."""
        counts = np.atleast_2d(counts)[:, self.order].astype(np.int64, copy=False)
        negative = np.where(self.positive, 0, counts)
        cumulative = np.zeros((counts.shape[0], self.size + 1), dtype=np.int64)
        np.cumsum(negative, axis=1, out=cumulative[:, 1:])
        below = cumulative[:, self.starts]  # negative weight below each group
        within = cumulative[:, self.ends] - below  # negative weight in each group
        positive_counts = counts[:, self.positive]
        twice_u = (positive_counts * (2 * below[:, self.positive_group] + within[:, self.positive_group])).sum(axis=1)
        n_positive = positive_counts.sum(axis=1)
        n_negative = cumulative[:, -1]
        pairs = n_positive * n_negative
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(pairs > 0, (twice_u / 2.0) / pairs, math.nan)


# ----------------------------------------------------------------------------------------------------
# Label policy for CheXpert labels
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LabelPolicy:
    """What uncertain (-1.0) and blank (NaN/None) CheXpert labels become before a binary metric.

    ``uncertain``: "exclude" (the sample drops out of that finding's metric only), "positive" (-> 1) or
    "negative" (-> 0). ``blank``: "exclude" or "negative" (-> 0). Default: both "exclude".
    """

    uncertain: Literal["exclude", "positive", "negative"] = "exclude"
    blank: Literal["exclude", "negative"] = "exclude"

    def __post_init__(self) -> None:
        if self.uncertain not in ("exclude", "positive", "negative"):
            raise ValueError(f"LabelPolicy.uncertain must be exclude/positive/negative, got {self.uncertain!r}")
        if self.blank not in ("exclude", "negative"):
            raise ValueError(f"LabelPolicy.blank must be exclude/negative, got {self.blank!r}")

    @property
    def name(self) -> str:
        return f"uncertain-{self.uncertain}/blank-{self.blank}"

    def resolve(self, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Map raw labels (1, 0, -1, NaN) to ``(binary, keep)``: 0/1 labels and the mask of samples kept."""
        labels = np.asarray(labels, dtype=np.float64)
        blank = np.isnan(labels)
        uncertain = labels == UNCERTAIN_LABEL
        binary = (labels == 1.0).astype(np.int8)
        keep = np.ones(labels.shape, dtype=bool)
        if self.uncertain == "exclude":
            keep &= ~uncertain
        elif self.uncertain == "positive":
            binary[uncertain] = 1
        if self.blank == "exclude":
            keep &= ~blank
        return binary, keep


def _check_chexpert_labels(labels: np.ndarray, metric: str) -> None:
    values = labels[~np.isnan(labels)]
    bad = ~np.isin(values, (1.0, 0.0, UNCERTAIN_LABEL))
    if bad.any():
        raise ValueError(
            f"{metric}: labels must be 1.0, 0.0, -1.0 (uncertain) or NaN/None (blank), got {np.unique(values[bad])[:5]}"
        )


# ----------------------------------------------------------------------------------------------------
# Streaming metric objects
# ----------------------------------------------------------------------------------------------------


class BinaryAUROC(PerSampleStore):
    """Binary AUROC, e.g. sex: the predicted probability of class 1 against 0/1 labels.

    ``update(scores, labels)``: scores (B,) (any real score, higher = more likely class 1), labels (B,)
    in {0, 1}. ``compute()`` -> AUROC in [0, 1], NaN when only one class was seen (``undefined_reason()``
    says so). Keeps one score and one label per sample.
    """

    def __init__(self) -> None:
        super().__init__()

    def update(self, scores: np.ndarray, labels: np.ndarray) -> None:
        name = type(self).__name__
        scores = float_array(scores, "scores", name, ndim=1)
        labels = float_array(labels, "labels", name, ndim=1)
        if scores.shape != labels.shape:
            raise ValueError(f"{name}: scores shape {scores.shape} differs from labels shape {labels.shape}")
        if not np.isin(labels, (0.0, 1.0)).all():
            raise ValueError(f"{name}: labels must be 0 or 1, got {np.unique(labels)[:5]}")
        self._append(scores, labels.astype(np.int8))

    def compute(self) -> float:
        scores, labels = self._arrays()
        return binary_auroc(labels, scores)

    def compute_on(self, indices: np.ndarray) -> float:
        """AUROC on the samples at ``indices`` (with repetition, for the bootstrap)."""
        scores, labels = self._arrays()
        indices = check_indices(indices, len(scores), type(self).__name__)
        return binary_auroc(labels[indices], scores[indices])

    def undefined_reason(self) -> str | None:
        return auroc_undefined_reason(self._arrays()[1])


class MulticlassAUROC(PerSampleStore):
    """One-vs-rest AUROC averaged over classes (macro), e.g. race from a softmax over the groups.

    ``update(probabilities, labels)``: probabilities (B, K), labels (B,) integer classes in [0, K).
    ``compute()`` -> the macro average of the K one-vs-rest AUROCs, in [0, 1]; equals scikit-learn's
    ``roc_auc_score(labels, probabilities, multi_class="ovr", average="macro")`` (which additionally
    requires the rows to sum to 1). NaN when some class never occurs as a label (``undefined_reason()``).
    ``compute_per_class()`` gives each class's AUROC by name.
    """

    def __init__(self, num_classes: int | None = None, class_names: Sequence[str] | None = None) -> None:
        if class_names is not None:
            class_names = tuple(class_names)
            if num_classes is not None and num_classes != len(class_names):
                raise ValueError(f"num_classes={num_classes} but {len(class_names)} class names")
            num_classes = len(class_names)
        if num_classes is None or num_classes < 2:
            raise ValueError(f"MulticlassAUROC needs at least 2 classes, got {num_classes}")
        self.num_classes = num_classes
        self.class_names = class_names or tuple(str(k) for k in range(num_classes))
        super().__init__()

    def update(self, probabilities: np.ndarray, labels: np.ndarray) -> None:
        name = type(self).__name__
        probabilities = float_array(probabilities, "probabilities", name, ndim=2)
        labels = np.asarray(labels)
        if labels.ndim != 1 or probabilities.shape != (labels.shape[0], self.num_classes):
            raise ValueError(
                f"{name}: expected probabilities (B, {self.num_classes}) and labels (B,), "
                f"got {probabilities.shape} and {labels.shape}"
            )
        labels = float_array(labels, "labels", name, ndim=1)
        if not (np.isin(labels, np.arange(self.num_classes))).all():
            raise ValueError(f"{name}: labels must be integers in [0, {self.num_classes}), got {np.unique(labels)[:5]}")
        self._append(probabilities, labels.astype(np.int64))

    @staticmethod
    def _per_class(probabilities: np.ndarray, labels: np.ndarray, num_classes: int) -> list[float]:
        return [binary_auroc(labels == k, probabilities[:, k]) for k in range(num_classes)]

    def compute(self) -> float:
        probabilities, labels = self._arrays()
        return float(np.mean(self._per_class(probabilities, labels, self.num_classes)))

    def compute_per_class(self) -> dict[str, float]:
        probabilities, labels = self._arrays()
        return dict(zip(self.class_names, self._per_class(probabilities, labels, self.num_classes)))

    def compute_on(self, indices: np.ndarray) -> float:
        """Macro AUROC on the samples at ``indices`` (with repetition, for the bootstrap)."""
        probabilities, labels = self._arrays()
        indices = check_indices(indices, len(labels), type(self).__name__)
        return float(np.mean(self._per_class(probabilities[indices], labels[indices], self.num_classes)))

    def undefined_reason(self) -> str | None:
        labels = self._arrays()[1]
        counts = np.bincount(labels, minlength=self.num_classes)
        missing = [self.class_names[k] for k in range(self.num_classes) if counts[k] == 0]
        if missing:
            return f"classes never present as a label: {missing}; one-vs-rest AUROC needs each class"
        return None


class _PathologyMetric(PerSampleStore):
    """Shared storage of per-sample probabilities and raw CheXpert labels over a fixed list of findings."""

    def __init__(self, findings: Sequence[str], policy: LabelPolicy) -> None:
        self.findings = tuple(findings)
        if not self.findings:
            raise ValueError(f"{type(self).__name__} needs at least one finding")
        self.policy = policy
        super().__init__()

    def update(self, probabilities: np.ndarray, labels: np.ndarray) -> None:
        """Add a batch: probabilities (B, F) and raw labels (B, F) (1, 0, -1, NaN/None), F = len(findings)."""
        name = type(self).__name__
        probabilities = float_array(probabilities, "probabilities", name, ndim=2)
        labels = float_array(labels, "labels", name, ndim=2, allow_nan=True)
        expected = (probabilities.shape[0], len(self.findings))
        if probabilities.shape != expected or labels.shape != expected:
            raise ValueError(
                f"{name}: expected probabilities and labels of shape (B, {len(self.findings)}) for findings "
                f"{list(self.findings)}, got {probabilities.shape} and {labels.shape}"
            )
        _check_chexpert_labels(labels, name)
        self._check_probabilities(probabilities)
        self._append(probabilities, labels)

    def _check_probabilities(self, probabilities: np.ndarray) -> None:
        pass

    def _label_counts(self, binary: np.ndarray, keep: np.ndarray) -> dict[str, dict[str, int]]:
        """Per finding: positive and negative labels kept by the policy, and samples excluded."""
        counts = {}
        for f, finding in enumerate(self.findings):
            kept = binary[keep[:, f], f]
            counts[finding] = {"positive": int(kept.sum()), "negative": int(kept.size - kept.sum()),
                               "excluded": int((~keep[:, f]).sum())}
        return counts

    def _finding_index(self, finding: str) -> int:
        try:
            return self.findings.index(finding)
        except ValueError:
            known = list(self.findings)
            raise KeyError(f"{type(self).__name__}: unknown finding {finding!r}; known: {known}") from None


class PathologyAUROC(_PathologyMetric):
    """AUROC per finding of a classifier's probabilities against CheXpert labels, and their mean.

    ``update(probabilities, labels)``: (B, F) each, columns in the order of ``findings`` (default the
    five evaluated findings: Atelectasis, Cardiomegaly, Edema, Pleural Effusion, Pneumothorax); labels
    1.0/0.0/-1.0/NaN, resolved per finding by ``policy`` (default: uncertain and blank excluded from
    that finding's AUROC only).

    ``compute()`` -> dict: ``per_finding`` {finding: AUROC in [0, 1] or NaN}, ``mean`` (the mean over
    findings; NaN if any finding is undefined, unless ``mean_over_defined=True``, which averages the
    defined ones and lists the others in ``reasons``), ``n`` {finding: {"positive", "negative",
    "excluded"}}, ``reasons`` {finding: why undefined}, ``policy``.
    """

    def __init__(
        self,
        findings: Sequence[str] = EVALUATED_FINDINGS,
        policy: LabelPolicy = LabelPolicy(),
        mean_over_defined: bool = False,
    ) -> None:
        super().__init__(findings, policy)
        self.mean_over_defined = mean_over_defined

    def _per_finding(self, probabilities: np.ndarray, labels: np.ndarray) -> list[float]:
        binary, keep = self.policy.resolve(labels)
        return [binary_auroc(binary[keep[:, f], f], probabilities[keep[:, f], f]) for f in range(len(self.findings))]

    def _mean(self, values: list[float]) -> float:
        defined = [v for v in values if not math.isnan(v)]
        if not defined or (len(defined) < len(values) and not self.mean_over_defined):
            return math.nan
        return float(np.mean(defined))

    def compute(self) -> dict:
        probabilities, labels = self._arrays()
        binary, keep = self.policy.resolve(labels)
        per_finding = self._per_finding(probabilities, labels)
        counts, reasons = self._label_counts(binary, keep), {}
        for f, finding in enumerate(self.findings):
            kept = binary[keep[:, f], f]
            reason = auroc_undefined_reason(kept)
            if reason is not None:
                reasons[finding] = reason
        mean = self._mean(per_finding)
        if reasons:
            how = "averaged over the defined findings" if self.mean_over_defined else "mean is NaN"
            reasons["mean"] = f"undefined for {sorted(k for k in reasons)}; {how}"
        return {
            "per_finding": dict(zip(self.findings, per_finding)),
            "mean": mean,
            "n": counts,
            "reasons": reasons,
            "policy": self.policy.name,
        }

    def compute_on_counts(self, counts: np.ndarray) -> np.ndarray:
        """(B, F) AUROC of every finding on B resamples given as counts (B, N) (:func:`resample_counts`):
        each finding's order is computed once and reused (:class:`RankedAUROC`); equal to ``compute_on``."""
        probabilities, labels = self._arrays()
        counts = np.atleast_2d(counts)
        if counts.shape[1] != len(labels):
            raise ValueError(f"{type(self).__name__}: counts over {counts.shape[1]} samples, {len(labels)} stored")
        if getattr(self, "_ranked", None) is None or self._ranked[0] is not probabilities:
            binary, keep = self.policy.resolve(labels)
            self._ranked = (probabilities, [(np.flatnonzero(keep[:, f]),
                                             RankedAUROC(binary[keep[:, f], f], probabilities[keep[:, f], f]))
                                            for f in range(len(self.findings))])
        return np.stack([ranked.from_counts(counts[:, kept]) for kept, ranked in self._ranked[1]], axis=1)

    def compute_on(self, indices: np.ndarray, finding: str | None = None) -> float:
        """Mean AUROC (or one ``finding``'s AUROC) on the samples at ``indices``, for the bootstrap."""
        probabilities, labels = self._arrays()
        indices = check_indices(indices, len(labels), type(self).__name__)
        probabilities, labels = probabilities[indices], labels[indices]
        if finding is not None:
            f = self._finding_index(finding)
            binary, keep = self.policy.resolve(labels[:, f])
            return binary_auroc(binary[keep], probabilities[keep, f])
        return self._mean(self._per_finding(probabilities, labels))


class PathologyF1(_PathologyMetric):
    """Binary F1 per finding at a declared threshold (ProgEmu protocol), and the macro average.

    A probability counts as a positive prediction when ``probability >= threshold`` (default 0.5).
    Labels as in ``PathologyAUROC``, resolved by ``policy``. F1 is in [0, 1] and equals scikit-learn's
    ``f1_score``; for a finding with no positive label and no positive prediction it is ``zero_division``
    (NaN by default, with a reason; scikit-learn's default would be 0.0). ``compute()`` -> dict:
    ``per_finding``, ``macro`` (mean over findings; NaN if any is NaN), ``n``, ``reasons``,
    ``threshold``, ``policy``. Probabilities must lie in [0, 1].
    """

    def __init__(
        self,
        findings: Sequence[str] = EVALUATED_FINDINGS,
        threshold: float = 0.5,
        policy: LabelPolicy = LabelPolicy(),
        zero_division: float = math.nan,
    ) -> None:
        super().__init__(findings, policy)
        self.threshold = float(threshold)
        self.zero_division = zero_division

    def _check_probabilities(self, probabilities: np.ndarray) -> None:
        if probabilities.size and (probabilities.min() < 0.0 or probabilities.max() > 1.0):
            raise ValueError(
                f"{type(self).__name__}: probabilities must lie in [0, 1], "
                f"got [{probabilities.min()}, {probabilities.max()}]"
            )

    def _per_finding(self, probabilities: np.ndarray, labels: np.ndarray) -> list[float]:
        binary, keep = self.policy.resolve(labels)
        predicted = probabilities >= self.threshold
        return [
            binary_f1(binary[keep[:, f], f], predicted[keep[:, f], f], self.zero_division)
            for f in range(len(self.findings))
        ]

    def compute(self) -> dict:
        probabilities, labels = self._arrays()
        binary, keep = self.policy.resolve(labels)
        per_finding = self._per_finding(probabilities, labels)
        counts, reasons = self._label_counts(binary, keep), {}
        for f, finding in enumerate(self.findings):
            kept = binary[keep[:, f], f]
            if math.isnan(per_finding[f]):
                reasons[finding] = (
                    "no samples" if kept.size == 0 else "no positive label and no positive prediction (F1 is 0/0)"
                )
        return {
            "per_finding": dict(zip(self.findings, per_finding)),
            "macro": float(np.mean(per_finding)),
            "n": counts,
            "reasons": reasons,
            "threshold": self.threshold,
            "policy": self.policy.name,
        }

    def compute_on_counts(self, counts: np.ndarray) -> np.ndarray:
        """(B, F) F1 of every finding on B resamples given as counts (B, N) (:func:`resample_counts`), all
        findings in one pass: the weighted true positives, false positives and false negatives are one
        product of the counts with indicator columns (integers, exact), so each value equals ``compute_on``."""
        probabilities, labels = self._arrays()
        counts = np.atleast_2d(counts)
        if counts.shape[1] != len(labels):
            raise ValueError(f"{type(self).__name__}: counts over {counts.shape[1]} samples, {len(labels)} stored")
        binary, keep = self.policy.resolve(labels)
        positive, predicted = (binary == 1) & keep, (probabilities >= self.threshold) & keep
        indicators = np.concatenate([positive & predicted, ~positive & predicted, positive & ~predicted], axis=1)
        tp, fp, fn = np.split(counts.astype(np.float64) @ indicators.astype(np.float64), 3, axis=1)
        denominator = 2.0 * tp + fp + fn
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(denominator > 0, 2.0 * tp / denominator, float(self.zero_division))

    def compute_on(self, indices: np.ndarray, finding: str | None = None) -> float:
        """Macro F1 (or one ``finding``'s F1) on the samples at ``indices``, for the bootstrap."""
        probabilities, labels = self._arrays()
        indices = check_indices(indices, len(labels), type(self).__name__)
        per_finding = self._per_finding(probabilities[indices], labels[indices])
        if finding is not None:
            return per_finding[self._finding_index(finding)]
        return float(np.mean(per_finding))
