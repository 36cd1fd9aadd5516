"""The evaluation protocol as data: every choice that changes a number, the evaluators that can be chosen,
and the error an evaluation raises. Light to import (the command line builds its options from it).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from cfbench.metrics.cmig import DEFAULT_ACCURACY_TERMS, DEFAULT_RETENTION_TERMS

EVALUATORS: tuple[str, ...] = ("auto", "phantom-cnn", "xrv", "none")
"""auto: the shipped phantom CNN on phantom data, torchxrayvision otherwise; none: pixel measures only."""


KL_VARIANTS: dict[str, str] = {
    "bernoulli": "sum over findings of Bernoulli KL(p_c || q_c), p_c / q_c = mean probability of finding c on real "
                 "/ generated images (cfbench's default; >= 0)",
    "eq4": "InstructX2X v2 Eq. 4 as written: sum_i P(i) log(P(i) / Q(i)) over findings, P / Q the mean "
           "probabilities, not normalised (can be negative)",
    "normalised": "Eq. 4 on P and Q normalised to sum 1 over the findings: KL of two categorical distributions (>= 0)",
}
"""``--kl``: how P (real) and Q (generated) mean pathology probabilities become one number (nats)."""

AGE_REFERENCES: dict[str, str] = {
    "at-study": "the patient's age at the target study (anchor_age + study year - anchor_year; cfbench's default)",
    "anchor": "MIMIC-IV's anchor_age (the age in the patient's anchor year), as the InstructX2X paper writes; "
              "needs an anchor_age column in instructions.csv",
}
"""``--age-reference``: the true age the predicted age is correlated with."""

CLIP_I_VARIANTS: dict[str, str] = {
    "image-image": "cosine of BiomedCLIP image embeddings, generated vs real target image (cfbench's default)",
    "image-text": "cosine of the BiomedCLIP image embedding of the generated image and the BiomedCLIP text "
                  "embedding of its progression prompt (else the instruction), as ProgEmu describes CLIP-I",
}
"""``--clip-i``: which pair CLIP-I compares (ProgEmu does not publish it)."""

CLIP_I_SHORT = {"image-image": "img-img", "image-text": "img-txt"}

SMALL_N = 30
"""A metric computed on fewer samples carries a warning (FID especially: its bias grows as n shrinks)."""


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
    kl_variant: str = "bernoulli"       # KL_VARIANTS
    age_reference: str = "at-study"     # AGE_REFERENCES
    clip_i_variant: str = "image-image"  # CLIP_I_VARIANTS
    # realism beside FID (cfbench.evaluation.realism): KID's subsets as the anchors report them (torchmetrics'
    # defaults, at most N), and the k of improved precision/recall (Kynkaanniemi 2019) and density/coverage (Naeem 2020)
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    precision_recall_k: int = 3
    density_coverage_k: int = 5

    def __post_init__(self):
        for name, value, allowed in (("kl_variant", self.kl_variant, KL_VARIANTS),
                                     ("age_reference", self.age_reference, AGE_REFERENCES),
                                     ("clip_i_variant", self.clip_i_variant, CLIP_I_VARIANTS)):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")

    @property
    def label_policy(self):
        """The :class:`cfbench.metrics.LabelPolicy` of these choices."""
        from cfbench.metrics.classification import LabelPolicy

        return LabelPolicy(uncertain=self.label_uncertain, blank=self.label_blank)

    def as_dict(self) -> dict:
        """JSON-ready (tuples as lists)."""
        return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}

    def choices_text(self, metrics=None, brief: bool = False) -> str:
        """One line naming the open protocol choices in force (for table notes and the console); with
        ``metrics`` (names), only the choices that touch those metrics; ``brief``: names only."""
        parts = []
        for metric, label, value, meanings in (("kl_divergence", "KL", self.kl_variant, KL_VARIANTS),
                                               ("age_pearson", "age", self.age_reference, AGE_REFERENCES),
                                               ("clip_i", "CLIP-I", self.clip_i_variant, CLIP_I_VARIANTS)):
            if metrics is None or metric in metrics:
                parts.append(f"{label} = {value}" + ("" if brief else f" ({meanings[value]})"))
        return "; ".join(parts)


def small_n_warnings(metrics: dict, threshold: int = SMALL_N) -> dict[str, str]:
    """``{metric: warning}`` for every metric of a metrics.json ``metrics`` block computed on fewer than
    ``threshold`` samples."""
    warnings = {}
    for name, entry in metrics.items():
        n = entry.get("n")
        if entry.get("value") is not None and n is not None and n < threshold:
            extra = " (FID is biased upwards at small n and needs hundreds of samples)" if name == "fid" else ""
            warnings[name] = f"computed on n={n} < {threshold} samples: unstable{extra}"
    return warnings
