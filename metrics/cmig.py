"""CMIG: one number that balances edit accuracy against identity retention.

    CMIG = sqrt(a_bar * f_bar)

with a_bar the geometric mean of the accuracy terms and f_bar the geometric mean of the retention terms,
all on a 0-100 scale: a metric given on the 0-1 scale (AUROC, Pearson r) is multiplied by 100. A
negative term (a Pearson r below 0) is clipped to 0, which makes its geometric mean, and CMIG, 0; every
clipped term is listed in ``CMIGResult.clipped`` with its value before clipping. A term above 100 after
scaling is an error. CMIG is in [0, 100].

Which metrics enter is configurable; by default accuracy = [pathology mean AUROC] and retention =
[race AUROC, age Pearson r] (``DEFAULT_ACCURACY_TERMS`` / ``DEFAULT_RETENTION_TERMS``, names as in
``cmig_from_metrics``). Hand check: accuracy 0.8333, retention 0.9765 and 0.8284 give
sqrt(83.33 * sqrt(97.65 * 82.84)) = 86.57.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Literal, Mapping, Sequence

DEFAULT_ACCURACY_TERMS: tuple[str, ...] = ("pathology_mean_auroc",)
DEFAULT_RETENTION_TERMS: tuple[str, ...] = ("race_auroc", "age_pearson")


@dataclass(frozen=True)
class CMIGResult:
    """CMIG and every component, on the 0-100 scale.

    ``accuracy_terms`` / ``retention_terms``: the terms that entered (after scaling and clipping);
    ``accuracy_mean`` (a_bar) / ``retention_mean`` (f_bar): their geometric means; ``clipped``: {term: value
    before clipping} for negative terms set to 0; ``reasons``: why ``value`` is NaN, if it is.
    """

    value: float
    accuracy_mean: float
    retention_mean: float
    accuracy_terms: dict[str, float]
    retention_terms: dict[str, float]
    clipped: dict[str, float] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def geometric_mean(values: Sequence[float]) -> float:
    """Geometric mean of non-negative values (0 if any is 0, NaN if any is NaN)."""
    if not values:
        raise ValueError("geometric mean of no values")
    if any(math.isnan(v) for v in values):
        return math.nan
    if any(v == 0.0 for v in values):
        return 0.0
    return math.exp(sum(math.log(v) for v in values) / len(values))


def _scaled_terms(
    terms: Mapping[str, float], kind: str, input_scale: str, clipped: dict[str, float], reasons: list[str]
) -> dict[str, float]:
    if not terms:
        raise ValueError(f"CMIG needs at least one {kind} term")
    factor = 100.0 if input_scale == "unit" else 1.0
    scaled = {}
    for name, value in terms.items():
        value = float(value) * factor
        if math.isnan(value):
            reasons.append(f"{kind} term {name!r} is NaN")
        elif value > 100.0 + 1e-9:
            raise ValueError(f"CMIG {kind} term {name!r} is {value} on the 0-100 scale (input_scale={input_scale!r})")
        elif value < 0.0:
            clipped[name] = value
            value = 0.0
        scaled[name] = value
    return scaled


def cmig(
    accuracy: Mapping[str, float],
    retention: Mapping[str, float],
    input_scale: Literal["unit", "percent"] = "unit",
) -> CMIGResult:
    """CMIG from named accuracy and retention terms.

    ``input_scale="unit"``: terms are on the 0-1 scale (AUROC, Pearson r) and are multiplied by 100;
    ``"percent"``: already on 0-100. Negative terms are clipped to 0 and reported; NaN terms give NaN.
    """
    if input_scale not in ("unit", "percent"):
        raise ValueError(f"input_scale must be 'unit' or 'percent', got {input_scale!r}")
    clipped: dict[str, float] = {}
    reasons: list[str] = []
    accuracy_terms = _scaled_terms(accuracy, "accuracy", input_scale, clipped, reasons)
    retention_terms = _scaled_terms(retention, "retention", input_scale, clipped, reasons)
    accuracy_mean = geometric_mean(list(accuracy_terms.values()))
    retention_mean = geometric_mean(list(retention_terms.values()))
    value = math.sqrt(accuracy_mean * retention_mean) if not reasons else math.nan
    return CMIGResult(
        value=value,
        accuracy_mean=accuracy_mean,
        retention_mean=retention_mean,
        accuracy_terms=accuracy_terms,
        retention_terms=retention_terms,
        clipped=clipped,
        reasons=reasons,
    )


def cmig_from_metrics(
    metrics: Mapping[str, float],
    accuracy_terms: Sequence[str] = DEFAULT_ACCURACY_TERMS,
    retention_terms: Sequence[str] = DEFAULT_RETENTION_TERMS,
    input_scale: Literal["unit", "percent"] = "unit",
) -> CMIGResult:
    """CMIG from a flat {metric name: value} mapping, picking the named terms (KeyError if one is missing)."""
    missing = [name for name in (*accuracy_terms, *retention_terms) if name not in metrics]
    if missing:
        raise KeyError(f"CMIG terms missing from the metrics: {missing}; available: {sorted(metrics)}")
    return cmig(
        {name: metrics[name] for name in accuracy_terms},
        {name: metrics[name] for name in retention_terms},
        input_scale=input_scale,
    )
