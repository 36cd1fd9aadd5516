"""Effect size: did the edit change the evaluator's belief in each edited finding by the right amount?

Per sample and edited finding k, with p(.) the evaluator's probability of k: the generated change
d_gen = p(generated) - p(input) and the real change d_real = p(real target) - p(input) (the real target is
the later study: it exists on real data as on phantoms). Over the sample's edited findings:

- ``effect_error`` = mean |d_gen - d_real|: under- and over-editing both cost (probability units, [0, 1]);
- ``effect_bias`` = mean (d_gen - d_real) * direction, direction = +1 for an added finding, -1 for a
  removed one, the sign of d_real for a level change: > 0 over-edits, < 0 under-edits (in [-1, 1]).

Edits are given as a (B, K) array: +1 add, -1 remove, 0 a change of level, NaN not edited. A sample with
no edited finding among the K gives NaN (left out of the means). Blind to anything the evaluator does not
see (pixels outside its receptive evidence, realism), and to edits of findings it does not score.
"""

from __future__ import annotations

import numpy as np

from cfbench.metrics._inputs import PerSampleMeans, float_array


def effect_errors(generated: np.ndarray, inputs: np.ndarray, targets: np.ndarray,
                  edits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample (effect_error, effect_bias) from (B, K) probabilities and edits (see the module doc)."""
    d_gen, d_real = generated - inputs, targets - inputs
    edited = np.isfinite(edits)
    direction = np.where(edits == 0, np.sign(d_real), np.nan_to_num(edits))
    count = edited.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        error = np.where(edited, np.abs(d_gen - d_real), 0.0).sum(axis=1) / count
        bias = np.where(edited, (d_gen - d_real) * direction, 0.0).sum(axis=1) / count
    return np.where(count > 0, error, np.nan), np.where(count > 0, bias, np.nan)


class EffectSize(PerSampleMeans):
    """``update(generated, inputs, targets, edits)``: (B, K) evaluator probabilities on the generated images,
    the inputs and the real targets; (B, K) edits. ``compute()`` -> {"effect_error", "effect_bias"}."""

    names = ("effect_error", "effect_bias")

    def update(self, generated, inputs, targets, edits) -> None:
        arrays = [float_array(a, name, "EffectSize", 2) for a, name in
                  ((generated, "generated"), (inputs, "inputs"), (targets, "targets"))]
        edits = float_array(edits, "edits", "EffectSize", 2, allow_nan=True)
        if any(a.shape != edits.shape for a in arrays):
            raise ValueError(f"EffectSize: shapes differ: {[a.shape for a in arrays]} and edits {edits.shape}")
        error, bias = effect_errors(*arrays, edits)
        self._append({"effect_error": error, "effect_bias": bias})
