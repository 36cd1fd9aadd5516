"""Identity preservation without saturation: how far the evaluators' attribute predictions moved from the
input to the counterfactual (the patient should stay the same patient).

Per sample, evaluator outputs on the generated image against those on the input:

- ``age_change`` = |predicted age(generated) - predicted age(input)|, years;
- ``race_change`` = total-variation distance of the race (phantoms: group) probabilities,
  0.5 * sum_k |p_k(generated) - p_k(input)|, in [0, 1];
- ``sex_change`` = |P(male | generated) - P(male | input)|, in [0, 1].

Unlike AUROC against the patient's labels, these are continuous and do not saturate at a perfect score: a
subtle identity change moves them while the AUROC stays 100. They are blind to identity the evaluators do not
encode, and an evaluator error that is the same on both images cancels.
"""

from __future__ import annotations

import numpy as np

from cfbench.metrics._inputs import PerSampleMeans, float_array

ATTRIBUTE_OUTPUTS = {"age_change": "age", "race_change": "race", "sex_change": "sex"}


def attribute_changes(generated: dict[str, np.ndarray], inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per-sample changes of the attribute outputs both dicts have (evaluator output keys age, race, sex)."""
    changes = {}
    if "age" in generated and "age" in inputs:
        changes["age_change"] = np.abs(np.asarray(generated["age"], np.float64) - inputs["age"])
    if "race" in generated and "race" in inputs:
        changes["race_change"] = 0.5 * np.abs(np.asarray(generated["race"], np.float64) - inputs["race"]).sum(axis=1)
    if "sex" in generated and "sex" in inputs:
        changes["sex_change"] = np.abs(np.asarray(generated["sex"], np.float64) - inputs["sex"])
    return changes


class AttributeChange(PerSampleMeans):
    """``update(generated, inputs)``: evaluator output dicts (``age`` (B,), ``race`` (B, K), ``sex`` (B,)) on
    the generated images and on the inputs. ``compute()`` -> {"age_change", "race_change", "sex_change"}
    (NaN for an attribute the evaluators do not give)."""

    names = tuple(ATTRIBUTE_OUTPUTS)

    def update(self, generated: dict, inputs: dict) -> None:
        n = len(next(iter(generated.values())))
        for key in ("age", "race", "sex"):
            for side, outputs in (("generated", generated), ("inputs", inputs)):
                if key in outputs:
                    float_array(outputs[key], f"{side}[{key!r}]", "AttributeChange", 2 if key == "race" else 1)
        changes = attribute_changes(generated, inputs)
        self._append({name: changes.get(name, np.full(n, np.nan)) for name in self.names})
