"""Image I/O: every image enters and leaves cfbench through here.

In memory an image is float32 HxW in [0, 1] (0 = black). On disk: PNG or JPEG in, 16-bit grayscale PNG
out (quantisation step 1/65535, far below any metric's resolution).

Intake policy (what :func:`load_image` accepts; anything else raises :class:`ImageReadError` naming the
file, so a run records that sample as failed and goes on):

- the format is read from the content (PNG or JPEG signature), not from the extension; a file whose
  content does not match its extension is read by its content, with a warning;
- the size is checked from the header before any pixel is decoded: more than ``max_image_pixels()``
  (64 MP, far above a 4096 x 4096 radiograph; environment variable ``CFBENCH_MAX_IMAGE_PIXELS``) is
  refused, so a decompression bomb costs nothing;
- grayscale (8-bit, 16-bit, 1-bit) is read as it is; RGB(A) and palette files are accepted only when they
  hold a grayscale picture (channels equal within 2/255, alpha fully opaque) and refused otherwise (a
  colour or transparent picture is not an X-ray);
- resized to a square ``resolution``, a non-square image is first centre-cropped to its shorter side
  (as torchxrayvision's ``XRayCenterCrop``), never stretched.
"""

from __future__ import annotations

import io
import logging
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from cfbench.core.storage import atomic_write_bytes

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg")
def max_image_pixels() -> int:
    """The pixel limit in force (``CFBENCH_MAX_IMAGE_PIXELS``, checked: ConfigError naming it when not a number)."""
    from cfbench.core.config import environment_int

    return environment_int("CFBENCH_MAX_IMAGE_PIXELS")
GRAY_TOLERANCE = 2  # 8-bit levels by which the channels of an "RGB" grayscale picture may differ (JPEG noise)
_SIGNATURES = {"PNG": (b"\x89PNG\r\n\x1a\n",), "JPEG": (b"\xff\xd8\xff",)}
_EXTENSION_FORMAT = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}
logger = logging.getLogger(__name__)


class ImageReadError(ValueError):
    """A file that should hold an image is missing, corrupt or of an unsupported kind."""


def _grayscale(image: Image.Image, path) -> Image.Image:
    """The image itself when it is grayscale; a colour-model image (RGB, RGBA, palette, LA, ...) converted
    to 8-bit gray when it holds a grayscale picture; ImageReadError otherwise."""
    if image.mode in ("L", "1", "I", "F", "I;16", "I;16B", "I;16L"):
        return image
    rgba = np.asarray(image.convert("RGBA"), dtype=np.int16)
    if (rgba[..., 3] < 255).any():
        raise ImageReadError(f"{path}: has transparent pixels (mode {image.mode}); an X-ray has no transparency")
    spread = int((rgba[..., :3].max(axis=-1) - rgba[..., :3].min(axis=-1)).max(initial=0))
    if spread > GRAY_TOLERANCE:
        raise ImageReadError(f"{path}: a colour picture (mode {image.mode}, channels differ by up to {spread}/255); "
                             "cfbench reads grayscale X-rays")
    return Image.fromarray(rgba[..., :3].mean(axis=-1).round().astype(np.uint8), mode="L")


SIXTEEN_BIT_MAX = 65535.0


def to_sixteen_bit(image: np.ndarray) -> np.ndarray:
    """float32 HxW in [0, 1] (clipped) -> uint16 levels 0..65535, rounded: what a 16-bit PNG stores."""
    return np.round(np.clip(image, 0.0, 1.0) * SIXTEEN_BIT_MAX).astype(np.uint16)


def from_sixteen_bit(levels: np.ndarray) -> np.ndarray:
    """uint16 levels -> float32 HxW in [0, 1]: the one conversion every 16-bit read goes through."""
    return (np.asarray(levels, dtype=np.uint16).astype(np.float32) / SIXTEEN_BIT_MAX).astype(np.float32)


def to_float(image: Image.Image, path: str | os.PathLike = "<memory>") -> np.ndarray:
    """A PIL image as float32 HxW in [0, 1] (grayscale pictures only; see the module's intake policy)."""
    image = _grayscale(image, path)
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L"):
        return from_sixteen_bit(np.asarray(image, dtype=np.uint16))
    if mode == "I":  # 32-bit integer container, as PIL opens some 16-bit PNGs
        data = np.asarray(image, dtype=np.int64)
        peak = SIXTEEN_BIT_MAX if data.max(initial=0) > 255 else 255.0
        return (np.clip(data, 0, peak) / peak).astype(np.float32)
    if mode == "F":
        data = np.asarray(image, dtype=np.float32)
        if data.size and (data.min() < 0.0 or data.max() > 1.0):
            raise ImageReadError(f"{path}: float image outside [0, 1]")
        return data.copy()
    if mode == "1":
        image = image.convert("L")
    return (np.asarray(image, dtype=np.uint8).astype(np.float32) / 255.0).astype(np.float32)


def center_crop_square(image: np.ndarray) -> np.ndarray:
    """The centred square of side min(H, W) (torchxrayvision's XRayCenterCrop); a square image unchanged."""
    height, width = image.shape
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    return image[top : top + side, left : left + side]


def resize(image: np.ndarray, size: int) -> np.ndarray:
    """Resize float32 HxW [0, 1] to size x size with antialiased bilinear interpolation."""
    if image.shape == (size, size):
        return image
    resized = Image.fromarray(image.astype(np.float32), mode="F").resize((size, size), Image.BILINEAR)
    return np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)


def _sniffed_format(path: Path) -> str:
    with open(path, "rb") as stream:
        head = stream.read(8)
    for name, signatures in _SIGNATURES.items():
        if head.startswith(signatures):
            return name
    raise ImageReadError(f"cannot read image {path}: not a PNG or JPEG file (starts with {head!r})")


def load_image(path: str | os.PathLike, resolution: int | None = None) -> np.ndarray:
    """Read a grayscale X-ray as float32 HxW in [0, 1]; with ``resolution``, centre-cropped to a square and
    resized to resolution x resolution (see the module's intake policy).

    Raises ImageReadError naming the file when it is missing, too large, not a grayscale PNG/JPEG, or
    cannot be decoded.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"image file not found: {path}")
    found = _sniffed_format(path)
    expected = _EXTENSION_FORMAT.get(path.suffix.lower())
    if expected is not None and expected != found:
        logger.warning("%s is a %s file named %s; read as %s", path, found, path.suffix, found)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            opened = Image.open(path, formats=[found])
        with opened:
            width, height = opened.size
            if width * height > max_image_pixels():
                raise ImageReadError(_too_large(path, width, height))
            opened.load()
            array = to_float(opened, path)
    except Image.DecompressionBombError:
        raise ImageReadError(_too_large(path, *_header_size(path))) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        if isinstance(error, ImageReadError):
            raise
        raise ImageReadError(f"cannot read image {path}: {error}") from error
    if array.ndim != 2 or array.size == 0:
        raise ImageReadError(f"image {path} has shape {array.shape}, expected a 2-D grayscale image")
    if not resolution:
        return array
    return resize(center_crop_square(array), resolution)


def _header_size(path: Path) -> tuple[int, int]:
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # read the header only
    try:
        with Image.open(path) as opened:
            return opened.size
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def _too_large(path: Path, width: int, height: int) -> str:
    return (f"image {path} is {width} x {height} = {width * height / 1e6:.0f} MP, over the limit of "
            f"{max_image_pixels() / 1e6:.0f} MP (set CFBENCH_MAX_IMAGE_PIXELS to allow larger images)")


def png_intact(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a complete PNG (every chunk present with its checksum); nothing is decoded."""
    try:
        with Image.open(path, formats=["PNG"]) as opened:
            opened.verify()
        return True
    except Exception:  # noqa: BLE001 -- missing, truncated, not a PNG: all mean "not intact"
        return False


PNG_COMPRESSION = 1
"""zlib level of the 16-bit PNGs a run writes (0-9): noisy 16-bit images barely compress further, level 6
costs 1.5x the time of 1, and level 0 writes about 2.5x faster for about 22 % larger files. The level
changes the bytes, never the pixels."""


def check_png_compression(level: int) -> int:
    if isinstance(level, bool) or not isinstance(level, int) or not 0 <= level <= 9:
        raise ValueError(f"png_compression must be an integer from 0 to 9, got {level!r}")
    return level


def encode_png16(image: np.ndarray, compress_level: int = PNG_COMPRESSION) -> bytes:
    """float32 HxW in [0, 1] -> bytes of a 16-bit grayscale PNG (zlib level ``compress_level``)."""
    if image.ndim != 2:
        raise ValueError(f"expected a 2-D image, got shape {image.shape}")
    buffer = io.BytesIO()
    Image.fromarray(to_sixteen_bit(image)).save(buffer, format="PNG", compress_level=check_png_compression(compress_level))
    return buffer.getvalue()


def save_png16(path: str | os.PathLike, image: np.ndarray, compress_level: int = PNG_COMPRESSION) -> None:
    """Write float32 HxW in [0, 1] as a 16-bit grayscale PNG, atomically."""
    atomic_write_bytes(path, encode_png16(image, compress_level))


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
