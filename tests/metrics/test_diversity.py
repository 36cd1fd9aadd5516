"""MS-SSIM against pytorch-msssim, and the seed-similarity mean."""

from __future__ import annotations

import numpy as np
import pytest

from cfbench.metrics.diversity import MS_SSIM_WEIGHTS, SeedSimilarity, ms_ssim, scales_for

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _pairs(side: int, n: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    smooth = np.cumsum(np.cumsum(rng.normal(size=(n, side, side)), axis=1), axis=2)
    first = (smooth - smooth.min()) / np.ptp(smooth)
    second = np.clip(first + rng.normal(scale=0.05, size=first.shape) * np.arange(n)[:, None, None], 0, 1)
    return first, second


def test_ms_ssim_equals_pytorch_msssim():
    torch = pytest.importorskip("torch")
    reference = pytest.importorskip("pytorch_msssim", reason="pytorch-msssim is not installed (test extra)")
    first, second = _pairs(176)
    expected = reference.ms_ssim(torch.from_numpy(first)[:, None], torch.from_numpy(second)[:, None], data_range=1.0,
                                 size_average=False).numpy()
    np.testing.assert_allclose(ms_ssim(first, second), expected, atol=1e-6)
    # fewer scales, as at the demo's 128 px: the same definition with the first four weights renormalised
    four = tuple(w / sum(MS_SSIM_WEIGHTS[:4]) for w in MS_SSIM_WEIGHTS[:4])
    expected = reference.ms_ssim(torch.from_numpy(first)[:, None], torch.from_numpy(second)[:, None], data_range=1.0,
                                 size_average=False, weights=list(four)).numpy()
    np.testing.assert_allclose(ms_ssim(first, second, weights=four), expected, atol=1e-6)


def test_scales_follow_the_image_side():
    assert [scales_for(side) for side in (16, 21, 41, 81, 128, 160, 161, 512)] == [1, 2, 3, 4, 4, 4, 5, 5]
    first, second = _pairs(128)
    values = ms_ssim(first, second)
    assert values[0] == pytest.approx(1.0, abs=1e-12)  # identical pair: no spread
    assert 0 < values[2] < values[1] < 1  # more noise, less similar


def test_seed_similarity_is_the_mean_of_the_pairs():
    first, second = _pairs(64, n=4)
    similarity = SeedSimilarity()
    similarity.update(first[:2], second[:2])
    similarity.update(first[2:], second[2:])
    per_pair = ms_ssim(first, second)
    assert similarity.compute() == pytest.approx(per_pair.mean(), abs=1e-12)
    assert similarity.compute_on(np.array([1, 1, 3])) == pytest.approx((2 * per_pair[1] + per_pair[3]) / 3, abs=1e-12)
    with pytest.raises(ValueError, match="shapes differ"):
        ms_ssim(first[:1], second[:1, :32])
