"""Diversity between two outputs of one input: multi-scale SSIM (Wang, Simoncelli and Bovik, 2003).

MS-SSIM of two float32 HxW images in [0, 1] (data range 1): SSIM's contrast-structure term at every scale and
its luminance term at the coarsest, with an 11-tap Gaussian window (sigma 1.5, "valid" filtering), K1 = 0.01,
K2 = 0.03, 2x2 average pooling between scales, and the paper's five weights (0.0448, 0.2856, 0.3001, 0.2363,
0.1333). In [0, 1]: 1 for identical images. The definition is pytorch-msssim's (tested equal to it to 1e-6);
written here in torch, because pytorch-msssim refuses images below 161 px on a side while the phantom demo runs
at 128 px: there ``ms_ssim`` uses the largest number of scales whose coarsest image still holds the window
(``scales_for``; 4 at 128 px, 5 from 161 px), with the first weights renormalised to sum 1 (the five are used as published), a named
difference recorded with the value (tested against pytorch-msssim given the same weights).

For counterfactuals the two outputs are the same model's answers for one input under two seeds: 1 means the
model ignores its seed (as the true counterfactual, which is unique, would: zero spread), low values mean it
answers differently each time. Across inputs the per-sample values are averaged (``SeedSimilarity``).
"""

from __future__ import annotations

import numpy as np

from cfbench.metrics._inputs import check_indices, empty_error, float_array

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
WINDOW_SIZE = 11
WINDOW_SIGMA = 1.5


def scales_for(side: int, window: int = WINDOW_SIZE) -> int:
    """How many of the five scales fit an image whose smaller side is ``side`` px: the most s with
    side > (window - 1) * 2^(s - 1), as pytorch-msssim's check for s = 5."""
    scales = 1
    while scales < len(MS_SSIM_WEIGHTS) and side > (window - 1) * 2 ** scales:
        scales += 1
    return scales


def ms_ssim(first: np.ndarray, second: np.ndarray, weights: tuple[float, ...] | None = None) -> np.ndarray:
    """MS-SSIM of image pairs: first, second float (B, H, W) or (H, W) in [0, 1] -> (B,) float64 (or a float).

    ``weights``: per-scale exponents; default the paper's five, cut to ``scales_for(min(H, W))`` and renormalised.
    """
    import torch
    import torch.nn.functional as F

    single = np.ndim(first) == 2
    if single:
        first, second = np.asarray(first)[None], np.asarray(second)[None]
    first = float_array(first, "first", "ms_ssim", ndim=3)
    second = float_array(second, "second", "ms_ssim", ndim=3)
    if first.shape != second.shape:
        raise ValueError(f"ms_ssim: image shapes differ, {first.shape} and {second.shape}")
    if weights is None:
        cut = MS_SSIM_WEIGHTS[:scales_for(min(first.shape[1:]))]
        # the five published weights sum to 1.0001 and are used as published; fewer are renormalised to sum 1
        weights = cut if len(cut) == len(MS_SSIM_WEIGHTS) else tuple(w / sum(cut) for w in cut)
    x = torch.from_numpy(first)[:, None]
    y = torch.from_numpy(second)[:, None]
    # the window in float32, then float64, as pytorch-msssim builds it (a float64 window moves values by ~2e-5)
    coords = torch.arange(WINDOW_SIZE, dtype=torch.float32) - WINDOW_SIZE // 2
    window = torch.exp(-coords ** 2 / (2 * WINDOW_SIGMA ** 2))
    window = (window / window.sum()).to(torch.float64)
    rows, columns = window.view(1, 1, -1, 1), window.view(1, 1, 1, -1)

    def blur(image):
        if image.shape[-2] >= WINDOW_SIZE:
            image = F.conv2d(image, rows)
        if image.shape[-1] >= WINDOW_SIZE:
            image = F.conv2d(image, columns)
        return image

    c1, c2 = 0.01 ** 2, 0.03 ** 2
    factors = []
    for scale in range(len(weights)):
        mu_x, mu_y = blur(x), blur(y)
        var_x, var_y = blur(x * x) - mu_x ** 2, blur(y * y) - mu_y ** 2
        covariance = blur(x * y) - mu_x * mu_y
        contrast_structure = (2 * covariance + c2) / (var_x + var_y + c2)
        if scale < len(weights) - 1:
            factors.append(torch.relu(contrast_structure.flatten(1).mean(1)))
            padding = [side % 2 for side in x.shape[2:]]
            x, y = F.avg_pool2d(x, 2, padding=padding), F.avg_pool2d(y, 2, padding=padding)
        else:
            luminance = (2 * mu_x * mu_y + c1) / (mu_x ** 2 + mu_y ** 2 + c1)
            factors.append(torch.relu((luminance * contrast_structure).flatten(1).mean(1)))
    stacked = torch.stack(factors)
    values = torch.prod(stacked ** torch.tensor(weights, dtype=torch.float64).view(-1, 1), dim=0).numpy()
    return float(values[0]) if single else values


class SeedSimilarity:
    """Mean MS-SSIM between two seeds' outputs per input, streamed: ``update(first, second)`` with float (B, H, W)
    in [0, 1]; ``compute()`` -> mean over inputs; ``compute_on(indices)`` for the bootstrap."""

    def __init__(self) -> None:
        self._values: list[np.ndarray] = []

    def update(self, first: np.ndarray, second: np.ndarray) -> None:
        self._values.append(np.asarray(ms_ssim(first, second), np.float64).reshape(-1))

    def _all(self) -> np.ndarray:
        if not self._values:
            raise empty_error(type(self).__name__)
        if len(self._values) > 1:
            self._values = [np.concatenate(self._values)]
        return self._values[0]

    @property
    def num_samples(self) -> int:
        return len(self._all())

    def per_sample(self) -> np.ndarray:
        return self._all().copy()

    def compute(self) -> float:
        return float(self._all().mean())

    def compute_on(self, indices: np.ndarray) -> float:
        return float(self._all()[check_indices(indices, self.num_samples, type(self).__name__)].mean())
