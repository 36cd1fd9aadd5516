"""Pixel-space measures between two images (float32 HxW in [0, 1]).

Used for edit locality and, on phantoms, for the distance to the exact counterfactual.
"""

from __future__ import annotations

import math

import numpy as np


class MeanAbsoluteDifference:
    """Sample-averaged mean absolute difference, optionally over a pixel mask.

    ``update(a, b, mask)`` adds one sample: mean |a - b| over the pixels where ``mask`` is True (all
    pixels when mask is None). Samples whose mask selects no pixel are counted in ``skipped`` and do not
    enter the mean. ``compute()`` returns the mean over samples (NaN before any sample), in intensity
    units of the [0, 1] scale.
    """

    def __init__(self) -> None:
        self.total = 0.0
        self.count = 0
        self.skipped = 0

    def update(self, a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> None:
        if a.shape != b.shape:
            raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
        difference = np.abs(a.astype(np.float64) - b.astype(np.float64))
        if mask is not None:
            if mask.shape != a.shape:
                raise ValueError(f"mask shape {mask.shape} differs from image shape {a.shape}")
            if not mask.any():
                self.skipped += 1
                return
            difference = difference[mask]
        self.total += float(difference.mean())
        self.count += 1

    def compute(self) -> float:
        return self.total / self.count if self.count else math.nan
