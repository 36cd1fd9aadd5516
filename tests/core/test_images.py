
import numpy as np
import pytest
from PIL import Image

from cfbench.core.images import ImageReadError, load_image, load_mask, resize, save_mask_png, save_png16


def test_png16_round_trip_is_within_quantisation(tmp_path):
    image = np.random.default_rng(0).random((20, 30), dtype=np.float32)
    save_png16(tmp_path / "a.png", image)
    back = load_image(tmp_path / "a.png")
    assert back.dtype == np.float32 and back.shape == (20, 30)
    assert np.abs(back - image).max() <= 0.5 / 65535 + 1e-7
    with Image.open(tmp_path / "a.png") as opened:
        assert opened.mode.startswith("I")  # 16-bit grayscale on disk


def test_8bit_rgb_and_alpha_files_become_grayscale(tmp_path):
    gray = np.arange(256, dtype=np.uint8).reshape(16, 16)
    Image.fromarray(gray).save(tmp_path / "g.png")
    Image.fromarray(np.stack([gray] * 3, -1)).save(tmp_path / "rgb.jpg", quality=100)
    Image.fromarray(np.dstack([gray, gray, gray, np.full_like(gray, 255)])).save(tmp_path / "rgba.png")
    expected = gray.astype(np.float32) / 255
    assert np.array_equal(load_image(tmp_path / "g.png"), expected)
    assert np.array_equal(load_image(tmp_path / "rgba.png"), expected)
    assert np.abs(load_image(tmp_path / "rgb.jpg") - expected).max() < 0.03


def test_resize_to_benchmark_resolution(tmp_path):
    image = np.zeros((64, 64), np.float32)
    image[:, 32:] = 1.0
    save_png16(tmp_path / "a.png", image)
    small = load_image(tmp_path / "a.png", resolution=16)
    assert small.shape == (16, 16)
    assert small[:, :7].max() == 0.0 and small[:, 9:].min() == 1.0
    assert resize(image, 64) is image


def test_mask_round_trip(tmp_path):
    mask = np.zeros((10, 12), bool)
    mask[2:5, 3:9] = True
    save_mask_png(tmp_path / "m.png", mask)
    assert np.array_equal(load_mask(tmp_path / "m.png"), mask)


def test_missing_and_corrupt_files_are_named(tmp_path):
    with pytest.raises(ImageReadError, match="not found: .*nothere.png"):
        load_image(tmp_path / "nothere.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(ImageReadError, match="cannot read image .*broken.png"):
        load_image(tmp_path / "broken.png")


def test_real_nih_xray_loads_as_grayscale_float():
    from tests.helpers.datasets import REAL_CXR_DIR

    image = load_image(REAL_CXR_DIR / "00000001_000.png")
    assert image.dtype == np.float32 and image.shape == (512, 512)
    assert 0.0 <= image.min() < 0.1 and 0.9 < image.max() <= 1.0  # full 8-bit range used
    with Image.open(REAL_CXR_DIR / "00000001_000.png") as opened:
        assert np.array_equal(np.round(image * 255).astype(np.uint8), np.asarray(opened.convert("L")))
    assert load_image(REAL_CXR_DIR / "00000001_000.png", resolution=224).shape == (224, 224)
