"""Degradation reference models: the exact counterfactual x*, degraded in controlled families and severities.

They exist to test the metrics (``cfbench validate``, :mod:`cfbench.suites.validity`): a metric that is valid
for a family must get worse as the severity grows, and must rank the exact answer (severity 0) first. Each
family is one registered model, ``degrade-<family>``, with one option, ``severity`` (0, the default, returns x*
unchanged). They read the answer key (phantom splits only) and declare ``Capabilities(oracle=True)``.

Notation: x = the input (prior) image, x* = the exact counterfactual, m = the true lesion-change mask, all
float32 HxW in [0, 1]; every result is clipped to [0, 1]. The families and their fixed severities
(:data:`FAMILIES`) were fixed before any metric or score of the suite was designed:

- ``under-edit``: x + (1 - s)(x* - x), s in 0.25, 0.5, 0.75 (a partial edit; s = 1 would be the input);
- ``over-edit``: x + (1 + s)(x* - x), s in 0.25, 0.5, 1.0 (the edit, exaggerated);
- ``contrast``: (1 - s) x* + s / 2, s in 0.05, 0.1, 0.2 (a global gain drift towards mid-grey; s = 0.1 is
  the issue's 0.9 x* + 0.05);
- ``brightness``: x* + s, s in 0.02, 0.05, 0.1 (a global bias drift);
- ``blur``: x* through a Gaussian of standard deviation s pixels (at the run's resolution), s in 0.5, 1, 2;
- ``noise``: x* + s N(0, 1), independent per pixel (seeded by the sample's seed), s in 0.01, 0.03, 0.1;
- ``wrong-side``: x + (1 - s)(x* - x) + s flip(x* - x), the edit moved to the mirrored side by the fraction
  s in 0.25, 0.5, 1.0;
- ``leak``: x* + s (1 - m) f, a change outside the lesion: f a smooth random field in [-1, 1] (Gaussian-filtered
  noise, standard deviation 1/16 of the side, seeded by the sample's seed), s in 0.02, 0.05, 0.1;
- ``attribute``: inside m x*, outside (1 - s) x* + s x', where x' is another patient's input (the sample half
  the split away): another anatomy, age and group blended in outside the lesion, s in 0.25, 0.5, 1.0;
- ``misregistration``: x* shifted right and down by s pixels (edge pixels repeated), s in 1, 2, 4.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from cfbench.api.answers import AnswerKey
from cfbench.api.model import Capabilities, CounterfactualModel, EditRequest, EditResult, LoadContext
from cfbench.api.options import ModelOptions
from cfbench.api.registry import register


@dataclass(frozen=True)
class DegradationOptions(ModelOptions):
    """severity: the family's degradation strength s (>= 0; 0 returns the exact counterfactual)."""

    severity: float = 0.0

    def check(self) -> None:
        if not self.severity >= 0:
            raise ValueError(f"severity must be >= 0, got {self.severity}")


@dataclass(frozen=True)
class Inputs:
    """What a degradation reads for one sample: x, x*, m, another patient's input, the sample's seed."""

    image: np.ndarray
    counterfactual: np.ndarray
    lesion: np.ndarray
    other: Callable[[], np.ndarray]
    seed: int


def _gaussian(image: np.ndarray, sigma: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(image.astype(np.float64), sigma, mode="nearest")


def _under_edit(s: float, d: Inputs) -> np.ndarray:
    return d.image + (1.0 - s) * (d.counterfactual - d.image)


def _over_edit(s: float, d: Inputs) -> np.ndarray:
    return d.image + (1.0 + s) * (d.counterfactual - d.image)


def _contrast(s: float, d: Inputs) -> np.ndarray:
    return (1.0 - s) * d.counterfactual + s / 2.0


def _brightness(s: float, d: Inputs) -> np.ndarray:
    return d.counterfactual + s


def _blur(s: float, d: Inputs) -> np.ndarray:
    return _gaussian(d.counterfactual, s) if s > 0 else d.counterfactual


def _noise(s: float, d: Inputs) -> np.ndarray:
    return d.counterfactual + s * np.random.default_rng(d.seed).standard_normal(d.counterfactual.shape)


def _wrong_side(s: float, d: Inputs) -> np.ndarray:
    change = d.counterfactual - d.image
    return d.image + (1.0 - s) * change + s * change[:, ::-1]


def _leak(s: float, d: Inputs) -> np.ndarray:
    field = _gaussian(np.random.default_rng(d.seed).standard_normal(d.image.shape), d.image.shape[0] / 16)
    field /= max(float(np.abs(field).max()), 1e-12)
    return d.counterfactual + s * (~d.lesion) * field


def _attribute(s: float, d: Inputs) -> np.ndarray:
    if s == 0:
        return d.counterfactual
    blended = (1.0 - s) * d.counterfactual + s * d.other()
    return np.where(d.lesion, d.counterfactual, blended)


def _misregistration(s: float, d: Inputs) -> np.ndarray:
    shift = int(round(s))
    if shift == 0:
        return d.counterfactual
    padded = np.pad(d.counterfactual, ((shift, 0), (shift, 0)), mode="edge")
    return padded[: d.counterfactual.shape[0], : d.counterfactual.shape[1]]


FAMILIES: dict[str, tuple[Callable[[float, Inputs], np.ndarray], tuple[float, ...], str]] = {
    "under-edit": (_under_edit, (0.25, 0.5, 0.75), "x + (1 - s)(x* - x): the edit, only partly made"),
    "over-edit": (_over_edit, (0.25, 0.5, 1.0), "x + (1 + s)(x* - x): the edit, exaggerated"),
    "contrast": (_contrast, (0.05, 0.1, 0.2), "(1 - s) x* + s/2: a global gain drift"),
    "brightness": (_brightness, (0.02, 0.05, 0.1), "x* + s: a global bias drift"),
    "blur": (_blur, (0.5, 1.0, 2.0), "x* through a Gaussian of s pixels"),
    "noise": (_noise, (0.01, 0.03, 0.1), "x* + s N(0, 1) per pixel"),
    "wrong-side": (_wrong_side, (0.25, 0.5, 1.0), "the fraction s of the edit moved to the mirrored side"),
    "leak": (_leak, (0.02, 0.05, 0.1), "x* + s (1 - m) f: a smooth change of amplitude s outside the lesion"),
    "attribute": (_attribute, (0.25, 0.5, 1.0), "another patient's input blended in by s outside the lesion"),
    "misregistration": (_misregistration, (1.0, 2.0, 4.0), "x* shifted by s pixels"),
}
"""family -> (degradation(s, inputs), the fixed severities of the validity suite, what it does)."""


class DegradedCounterfactual(CounterfactualModel):
    """Base of the ``degrade-<family>`` models (one registered subclass per family of :data:`FAMILIES`)."""

    family = ""
    capabilities = Capabilities(edits_image=True, oracle=True)
    options_class = DegradationOptions

    def __init__(self, key: AnswerKey, severity: float):
        self.key = key
        self.severity = severity
        self.sample_ids = key.sample_ids

    @classmethod
    def load(cls, context: LoadContext) -> "DegradedCounterfactual":
        options = DegradationOptions.from_options(context.options)
        return cls(AnswerKey.from_context(context, cls.name, needs_counterfactuals=True), options.severity)

    def other_patient(self, sample_id: str) -> str:
        """The sample half the split away from ``sample_id`` (another patient on phantom splits)."""
        position = self.sample_ids.index(sample_id)
        return self.sample_ids[(position + len(self.sample_ids) // 2) % len(self.sample_ids)]

    def degrade(self, request: EditRequest) -> np.ndarray:
        degradation = FAMILIES[self.family][0]
        inputs = Inputs(image=request.image.astype(np.float64),
                        counterfactual=self.key.true_counterfactual(request.sample_id).astype(np.float64),
                        lesion=self.key.lesion_mask(request.sample_id).astype(bool),
                        other=lambda: self.key.input_image(self.other_patient(request.sample_id)).astype(np.float64),
                        seed=request.seed)
        return np.clip(degradation(self.severity, inputs), 0.0, 1.0).astype(np.float32)

    def edit(self, requests: Sequence[EditRequest]) -> list[EditResult]:
        return [EditResult(image=self.degrade(request), sample_id=request.sample_id) for request in requests]


def _register_families() -> dict[str, type[DegradedCounterfactual]]:
    models = {}
    for family, (_, severities, what) in FAMILIES.items():
        cls = type(f"Degraded_{family.replace('-', '_')}", (DegradedCounterfactual,), {
            "name": f"degrade-{family}", "family": family, "__module__": __name__,
            "description": f"{what} (phantoms; --option severity=S, suite levels {', '.join(map(str, severities))})"})
        models[family] = register(cls)
    return models


DEGRADATION_MODELS = _register_families()
"""family -> its registered model class."""
