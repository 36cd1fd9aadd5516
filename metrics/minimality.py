"""Minimality: how much a counterfactual changed the input outside the region the edit concerns.

Per sample, with x the input, g the generated image (float HxW in [0, 1]) and R the edit region (bool HxW:
the true lesion-change mask on phantoms, the pseudo mask of the instruction's findings on real data):

- ``relative_change_outside`` = sum over pixels outside R of |g - x|, divided by the sum of x there: the
  fraction of the input's intensity that the edit moved outside its region (0 = untouched; unitless, >= 0).
- ``w1_outside``: the Wasserstein-1 distance between the intensity distributions of g and of x outside R,
  in intensity units: the mean absolute difference of their sorted values (the exact W1 of two empirical
  distributions with the same number of points, as ``scipy.stats.wasserstein_distance``). It is blind to
  where a change is (a permutation of pixels costs 0), and sees a global gain or bias drift that a signed
  mean change can hide (W1 <= the mean absolute change, with equality for a uniform bias).

Samples whose region covers the whole image (no pixel outside) give NaN and are left out of the means.
"""

from __future__ import annotations

import math

import numpy as np

from cfbench.metrics._inputs import PerSampleMeans, float_array


def relative_change_outside(generated: np.ndarray, image: np.ndarray, region: np.ndarray) -> float:
    """Sum of |generated - image| outside ``region`` over the sum of ``image`` there (NaN: nothing outside)."""
    outside = ~np.asarray(region, bool)
    if not outside.any():
        return math.nan
    moved = float(np.abs(generated - image).sum(where=outside, dtype=np.float64))
    mass = float(np.asarray(image).sum(where=outside, dtype=np.float64))
    return moved / mass if mass > 0 else (0.0 if moved == 0 else math.inf)


def w1_outside(generated: np.ndarray, image: np.ndarray, region: np.ndarray) -> float:
    """Wasserstein-1 distance between the intensities of ``generated`` and ``image`` outside ``region``."""
    outside = ~np.asarray(region, bool)
    if not outside.any():
        return math.nan
    return float(np.abs(np.sort(generated[outside], kind="stable").astype(np.float64)
                        - np.sort(image[outside], kind="stable").astype(np.float64)).mean())


class Minimality(PerSampleMeans):
    """``update(generated, images, regions)``: (B, H, W) generated images and inputs in [0, 1], (B, H, W) bool
    regions. ``compute()`` -> {"relative_change_outside", "w1_outside"}: means over samples."""

    names = ("relative_change_outside", "w1_outside")

    def update(self, generated, images, regions) -> None:
        generated = float_array(generated, "generated", "Minimality", 3)
        images = float_array(images, "images", "Minimality", 3)
        regions = np.asarray(regions, bool)
        if not generated.shape == images.shape == regions.shape:
            raise ValueError(f"Minimality: shapes differ: generated {generated.shape}, images {images.shape}, "
                             f"regions {regions.shape}")
        self._append({"relative_change_outside": [relative_change_outside(g, x, r)
                                                  for g, x, r in zip(generated, images, regions)],
                      "w1_outside": [w1_outside(g, x, r) for g, x, r in zip(generated, images, regions)]})
