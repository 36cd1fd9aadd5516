"""Registration on real anatomy: known similarity transforms applied to NIH X-rays are recovered."""


import numpy as np
import pytest
import SimpleITK as sitk

from cfbench.core.images import load_image
from cfbench.datasets.registration import (
    CALIBRATED_MI_THRESHOLD,
    MI_THRESHOLD,
    RegistrationSettings,
    mutual_information,
    register_pair,
    to_sitk,
)
from tests.helpers.datasets import REAL_CXR_DIR

REAL = REAL_CXR_DIR


def moved(image, angle_deg, scale, shift):
    transform = sitk.Similarity2DTransform()
    transform.SetCenter(((image.shape[1] - 1) / 2, (image.shape[0] - 1) / 2))
    transform.SetAngle(np.radians(angle_deg))
    transform.SetScale(scale)
    transform.SetTranslation(shift)
    source = to_sitk(image)
    out = sitk.Resample(source, source, transform, sitk.sitkLinear, 0.0)
    return np.clip(sitk.GetArrayFromImage(out) / 255.0, 0, 1).astype(np.float32), transform


@pytest.mark.parametrize("name", ["00000001_000.png", "00027426_000.png"])
@pytest.mark.parametrize("angle, scale, shift", [(5.0, 1.05, (15.0, -12.0)), (-4.0, 0.95, (-10.0, 15.0)),
                                                 (2.0, 1.02, (6.0, 4.0))])
def test_known_transforms_are_recovered(name, angle, scale, shift):
    fixed = load_image(REAL / name)
    moving, applied = moved(fixed, angle, scale, shift)
    result = register_pair(fixed, moving)
    # moving(x) = fixed(applied(x)) and registered(x) = moving(result(x)): applied o result = identity
    assert abs(result.angle_deg + angle) < 0.5
    assert abs(result.scale * scale - 1.0) < 0.01
    corners = [(0.0, 0.0), (511.0, 0.0), (0.0, 511.0), (511.0, 511.0), (255.5, 255.5)]
    errors = [np.hypot(*(np.array(applied.TransformPoint(result.transform.TransformPoint(p))) - p)) for p in corners]
    assert max(errors) < 2.0
    assert result.keep and result.mutual_information < MI_THRESHOLD
    inner = (slice(64, 448), slice(64, 448))  # away from the border the resampling leaves empty
    assert np.abs(result.registered[inner] - fixed[inner]).mean() < 0.02


def new_exposure(image, rng):
    """The same anatomy imaged again: other gamma and gain, noise, and a new opacity in one lung."""
    yy, xx = np.mgrid[:image.shape[0], :image.shape[1]]
    opacity = np.exp(-(((yy - rng.uniform(250, 420)) / 60) ** 2 + ((xx - rng.choice([150, 360])) / 50) ** 2))
    out = image ** rng.uniform(0.7, 1.4) + rng.uniform(0.1, 0.3) * opacity
    out = out * rng.uniform(0.85, 1.1) + rng.normal(0, 0.02, image.shape)
    return np.clip(out, 0, 1).astype(np.float32)


def test_mutual_information_of_aligned_and_unrelated_pairs():
    first, second = load_image(REAL / "00000001_000.png"), load_image(REAL / "00027426_000.png")
    rng = np.random.default_rng(0)
    same_patient = [register_pair(image, moved(new_exposure(image, rng), rng.uniform(-5, 5), rng.uniform(0.95, 1.05),
                                               tuple(rng.uniform(-15, 15, 2)))[0]).mutual_information
                    for image in (first, second) for _ in range(2)]
    unrelated = [register_pair(fixed, moving).mutual_information
                 for fixed, moving in ((first, second), (second, first), (first, second[:, ::-1].copy()))]
    assert max(same_patient) < -2.0                              # about -2.4 to -2.6
    assert mutual_information(first, second) > MI_THRESHOLD       # two patients as they are: about -0.63
    # Calibration finding: after registration two different patients reach about -0.89 to -0.93, below the
    # paper's -0.88, so that rule alone keeps them; the calibrated -1.0 separates the groups.
    assert min(unrelated) < MI_THRESHOLD
    assert max(same_patient) < CALIBRATED_MI_THRESHOLD < min(unrelated)


def test_a_run_that_overshoots_is_repeated_with_a_smaller_step():
    """A step of 256 throws the optimiser off the anatomy: a single run keeps the starting transform (never
    worse than no registration); three runs (steps 256, 64, 16) recover the applied transform on the third."""
    fixed = load_image(REAL / "00000001_000.png")
    moving, applied = moved(fixed, 3.0, 1.03, (8.0, -6.0))
    start_mi = mutual_information(fixed, moving)  # the geometric centres coincide: the start is the identity
    single = register_pair(fixed, moving, RegistrationSettings(learning_rate=256.0, attempts=1))
    assert single.optimiser_runs == 1 and single.angle_deg == 0.0 and single.scale == 1.0
    assert single.mutual_information == pytest.approx(start_mi, abs=1e-9)
    np.testing.assert_allclose(single.registered, moving, atol=1e-6)
    repeated = register_pair(fixed, moving, RegistrationSettings(learning_rate=256.0, attempts=3))
    assert repeated.optimiser_runs == 3
    assert abs(repeated.angle_deg + 3.0) < 0.5 and abs(repeated.scale * 1.03 - 1.0) < 0.01
    assert repeated.mutual_information < -2.0 < start_mi


def test_runs_that_lose_the_overlap_keep_the_start():
    """A step of 4096 moves the image off the other one; ITK stops each run and the start transform stays."""
    fixed = load_image(REAL / "00000001_000.png")
    moving, _ = moved(fixed, 3.0, 1.03, (8.0, -6.0))
    result = register_pair(fixed, moving, RegistrationSettings(learning_rate=4096.0, attempts=3))
    assert result.optimiser_runs == 3 and result.angle_deg == 0.0
    assert result.mutual_information == pytest.approx(mutual_information(fixed, moving), abs=1e-9)
