"""Image I/O: every image enters and leaves cfbench through here.

In memory an image is float32 HxW in [0, 1] (0 = black). On disk: 8-bit or 16-bit grayscale PNG/JPEG
in; 16-bit grayscale PNG out (quantisation step 1/65535, far below any metric's resolution).
Colour files are converted to luminance (ITU-R 601); an alpha channel is dropped.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from cfbench.core.storage import atomic_write_bytes

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg")


class ImageReadError(ValueError):
    """A file that should hold an image is missing, corrupt or of an unsupported kind."""


def to_float(image: Image.Image, path: str | os.PathLike = "<memory>") -> np.ndarray:
    """A PIL image as float32 HxW in [0, 1]."""
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L"):
        return (np.asarray(image, dtype=np.uint16).astype(np.float32) / 65535.0).astype(np.float32)
    if mode == "I":  # 32-bit integer container, as PIL opens some 16-bit PNGs
        data = np.asarray(image, dtype=np.int64)
        peak = 65535.0 if data.max(initial=0) > 255 else 255.0
        return (np.clip(data, 0, peak) / peak).astype(np.float32)
    if mode == "F":
        data = np.asarray(image, dtype=np.float32)
        if data.size and (data.min() < 0.0 or data.max() > 1.0):
            raise ImageReadError(f"{path}: float image outside [0, 1]")
        return data.copy()
    if mode not in ("L", "1"):
        image = image.convert("L")
    return (np.asarray(image, dtype=np.uint8).astype(np.float32) / 255.0).astype(np.float32)


def resize(image: np.ndarray, size: int) -> np.ndarray:
    """Resize float32 HxW [0, 1] to size x size with antialiased bilinear interpolation."""
    if image.shape == (size, size):
        return image
    resized = Image.fromarray(image.astype(np.float32), mode="F").resize((size, size), Image.BILINEAR)
    return np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)


def load_image(path: str | os.PathLike, resolution: int | None = None) -> np.ndarray:
    """Read a grayscale X-ray as float32 HxW in [0, 1], resized to resolution x resolution when given.

    Raises ImageReadError naming the file when it is missing or cannot be decoded.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"image file not found: {path}")
    try:
        with Image.open(path) as opened:
            opened.load()
            array = to_float(opened, path)
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise ImageReadError(f"cannot read image {path}: {error}") from error
    if array.ndim != 2 or array.size == 0:
        raise ImageReadError(f"image {path} has shape {array.shape}, expected a 2-D grayscale image")
    return resize(array, resolution) if resolution else array


def encode_png16(image: np.ndarray) -> bytes:
    """float32 HxW in [0, 1] -> bytes of a 16-bit grayscale PNG."""
    if image.ndim != 2:
        raise ValueError(f"expected a 2-D image, got shape {image.shape}")
    quantised = np.round(np.clip(image, 0.0, 1.0) * 65535.0).astype(np.uint16)
    buffer = io.BytesIO()
    # compress_level 1: noisy 16-bit images barely compress further, and level 6 costs 1.5x the time
    Image.fromarray(quantised).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def save_png16(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write float32 HxW in [0, 1] as a 16-bit grayscale PNG, atomically."""
    atomic_write_bytes(path, encode_png16(image))


def save_mask_png(path: str | os.PathLike, mask: np.ndarray) -> None:
    """Write a bool HxW mask as an 8-bit PNG (0 / 255), atomically."""
    buffer = io.BytesIO()
    Image.fromarray(np.where(mask, 255, 0).astype(np.uint8)).save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())


def load_mask(path: str | os.PathLike, resolution: int | None = None) -> np.ndarray:
    """Read a mask PNG as bool HxW (pixels >= 0.5 are inside)."""
    return load_image(path, resolution) >= 0.5


def find_image(folder: Path, stem: str) -> Path | None:
    """The first existing ``folder/stem{.png,.jpg,.jpeg}``, or None."""
    for extension in IMAGE_EXTENSIONS:
        candidate = folder / f"{stem}{extension}"
        if candidate.is_file():
            return candidate
    return None
