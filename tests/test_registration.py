"""Registration on real anatomy: known similarity transforms applied to NIH X-rays are recovered."""

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from cfbench.images import load_image
from cfbench.registration import MI_THRESHOLD, mutual_information, register_pair, to_sitk

REAL = Path(__file__).parent.parent.parent / "shared" / "data" / "real-cxr"
pytestmark = pytest.mark.skipif(not REAL.is_dir(), reason="real X-rays in ../shared/data/real-cxr not available")


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


def test_mutual_information_of_aligned_and_unrelated_pairs():
    first, second = load_image(REAL / "00000001_000.png"), load_image(REAL / "00027426_000.png")
    aligned = register_pair(first, moved(first, 3.0, 1.03, (8.0, -8.0))[0]).mutual_information
    unrelated_raw = mutual_information(first, second)
    unrelated_registered = register_pair(first, second).mutual_information
    assert aligned < -2.5                      # same image: about -2.8
    assert unrelated_raw > MI_THRESHOLD        # two patients as they are: about -0.63, rejected
    # Documented calibration finding: after registration, two different patients reach about -0.93, below
    # the paper's -0.88, so with these settings the rule alone does not reject them (see the data note).
    assert aligned + 1.0 < unrelated_registered < MI_THRESHOLD
