"""``cfbench_score``: the default ranking score, from what real data has (the input, the instruction, the
real target, the pseudo masks), never from exact counterfactuals or true lesion masks, so that it means the
same on MIMIC as on phantoms.

Four terms, each in (0, 1], 1 = perfect; the score is 100 x their geometric mean (0-100, higher is better):

- effectiveness = t(effect_error, 0.1): the evaluator's probability change per edited finding against the
  real target's change (:mod:`cfbench.metrics.effect_size`);
- preservation = geometric mean of t(age_change, 5 years), t(race_change, 0.1), t(sex_change, 0.1), those the
  evaluators give (:mod:`cfbench.metrics.identity`);
- minimality = geometric mean of t(relative_change_outside_pseudo_mask, 0.05) and
  t(w1_outside_pseudo_mask, 0.01) (:mod:`cfbench.metrics.minimality`);
- realism = t(feature_distance, 0.1) (:mod:`cfbench.metrics.realism`);

with t(loss, reference) = 1 / (1 + loss / reference): 1 at loss 0, 1/2 at the reference loss. The
reference losses are fixed, round values of what one would call a clearly visible error in each unit (a
probability change of 0.1, 5 years of age, 5 % of the input's intensity moved outside the region, a W1 of
0.01 intensity, a 10 % feature distance); they were set before the validity suite was run and are not tuned to
it. A geometric mean means no term can buy back another: an edit that leaves the patient untouched but makes
no change (the identity) scores low on effectiveness whatever its preservation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping

SCORE_TERMS: dict[str, tuple[tuple[str, float], ...]] = {
    "effectiveness": (("effect_error", 0.1),),
    "preservation": (("age_change", 5.0), ("race_change", 0.1), ("sex_change", 0.1)),
    "minimality": (("relative_change_outside_pseudo_mask", 0.05), ("w1_outside_pseudo_mask", 0.01)),
    "realism": (("feature_distance", 0.1),),
}
"""term -> ((metric name, reference loss), ...): the metrics each term reads and their reference losses."""

SCORE_METRICS: tuple[str, ...] = tuple(name for parts in SCORE_TERMS.values() for name, _ in parts)


def tolerance(loss: float, reference: float) -> float:
    """1 / (1 + loss / reference), in (0, 1] for loss >= 0 (NaN for NaN)."""
    return 1.0 / (1.0 + max(loss, 0.0) / reference) if math.isfinite(loss) else math.nan


def _geometric_mean(values: list[float]) -> float:
    if not values or any(not math.isfinite(v) for v in values):
        return math.nan
    return math.exp(sum(math.log(v) for v in values) / len(values))


@dataclass
class ScoreResult:
    """value: 0-100 (NaN when a term is missing); terms: {term: value in (0, 1]}; missing: the terms that no
    available metric feeds (the score is then NaN)."""

    value: float
    terms: dict[str, float] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"value": self.value, "terms": dict(self.terms), "missing": list(self.missing),
                "reference_losses": {term: dict(parts) for term, parts in SCORE_TERMS.items()}}


def cfbench_score(values: Mapping[str, float]) -> ScoreResult:
    """The score from metric values (names of :data:`SCORE_METRICS`; absent or NaN metrics are skipped within
    a term, and a term with none left makes the score NaN)."""
    terms, missing = {}, []
    for term, parts in SCORE_TERMS.items():
        available = [tolerance(values[name], reference) for name, reference in parts
                     if name in values and values[name] is not None and math.isfinite(values[name])]
        if available:
            terms[term] = _geometric_mean(available)
        else:
            missing.append(term)
    value = 100.0 * _geometric_mean(list(terms.values())) if not missing else math.nan
    return ScoreResult(value, terms, missing)
