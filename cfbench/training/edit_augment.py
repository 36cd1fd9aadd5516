"""Augmentation of (prior, target, instruction) training pairs for instruction-guided editors.

The same geometric transform is applied to the prior and the target image, so the pair stays aligned:

1. rotation by an angle drawn uniformly from [-rotation_degrees, +rotation_degrees] (degrees,
   counter-clockwise, bilinear, about the image centre; corners that rotate in are filled with 0 = black);
2. centre crop keeping ``center_crop_fraction`` of the side, resized back to the input size;
3. horizontal flip with probability ``hflip_probability``. A flip moves the patient's left lung to the
   other side of the image, so the words "left" and "right" are swapped in the instruction and in the
   operations' locations ("left lower lobe" -> "right lower lobe"), keeping text and image consistent.

Images are float32 HxW arrays in [0, 1]. Every random draw comes from the ``numpy.random.Generator``
the caller passes in, so an augmentation is reproducible from its seed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

import numpy as np
import torch
import torchvision.transforms.functional as TF
from torchvision.transforms import InterpolationMode

from cfbench.core.findings import Operation

_LEFT_RIGHT = re.compile(r"\b(left|right)\b", flags=re.IGNORECASE)


def swap_left_right(text: str) -> str:
    """Swap the whole words "left" and "right" (any case; the case pattern of each word is kept:
    "Left" -> "Right", "LEFT" -> "RIGHT"). Words that merely contain them ("leftover") are untouched."""

    def swap(match: re.Match) -> str:
        word = match.group(0)
        other = "right" if word.lower() == "left" else "left"
        if word.isupper():
            return other.upper()
        if word[0].isupper():
            return other.capitalize()
        return other

    return _LEFT_RIGHT.sub(swap, text)


def flip_operation(operation: Operation) -> Operation:
    """The operation as it reads after a horizontal flip of the image (left/right swapped in its location)."""
    if operation.location is None:
        return operation
    return replace(operation, location=swap_left_right(operation.location))


@dataclass(frozen=True)
class AugmentSettings:
    """rotation_degrees: maximum absolute rotation in degrees (0 disables).
    center_crop_fraction: side of the centre crop as a fraction of the image side, in (0, 1] (1 disables).
    hflip_probability: probability in [0, 1] of a horizontal flip (with the left/right word swap)."""

    rotation_degrees: float = 2.0
    center_crop_fraction: float = 1.0
    hflip_probability: float = 0.5

    def __post_init__(self) -> None:
        if self.rotation_degrees < 0:
            raise ValueError(f"rotation_degrees must be >= 0, got {self.rotation_degrees}")
        if not 0.0 < self.center_crop_fraction <= 1.0:
            raise ValueError(f"center_crop_fraction must lie in (0, 1], got {self.center_crop_fraction}")
        if not 0.0 <= self.hflip_probability <= 1.0:
            raise ValueError(f"hflip_probability must lie in [0, 1], got {self.hflip_probability}")


@dataclass
class AugmentedPair:
    """An augmented training pair. ``angle`` (degrees) and ``flipped`` record what was applied."""

    past: np.ndarray
    current: np.ndarray
    instruction: str
    operations: list[Operation]
    angle: float
    flipped: bool


def _transform(image: np.ndarray, angle: float, crop_fraction: float, flip: bool) -> np.ndarray:
    side_y, side_x = image.shape
    tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None]  # 1xHxW
    if angle != 0.0:
        tensor = TF.rotate(tensor, angle, interpolation=InterpolationMode.BILINEAR, fill=0.0)
    if crop_fraction < 1.0:
        crop = [max(1, round(side_y * crop_fraction)), max(1, round(side_x * crop_fraction))]
        tensor = TF.center_crop(tensor, crop)
        tensor = TF.resize(tensor, [side_y, side_x], interpolation=InterpolationMode.BILINEAR, antialias=True)
    if flip:
        tensor = torch.flip(tensor, dims=[-1])
    return np.clip(tensor[0].numpy(), 0.0, 1.0).astype(np.float32)


def augment_pair(
    past: np.ndarray,
    current: np.ndarray,
    instruction: str,
    operations: list[Operation],
    settings: AugmentSettings,
    rng: np.random.Generator,
) -> AugmentedPair:
    """Apply one random draw of ``settings`` to both images and, on a flip, to the text.

    The draws are made in a fixed order (angle, then flip), each time, whatever the settings, so that the
    stream of a generator does not depend on which augmentations are enabled.
    """
    if past.shape != current.shape:
        raise ValueError(f"prior and target images differ in shape: {past.shape} vs {current.shape}")
    angle = float(rng.uniform(-1.0, 1.0)) * settings.rotation_degrees
    flip = bool(rng.random() < settings.hflip_probability)
    new_past = _transform(past, angle, settings.center_crop_fraction, flip)
    new_current = _transform(current, angle, settings.center_crop_fraction, flip)
    if flip:
        instruction = swap_left_right(instruction)
        operations = [flip_operation(operation) for operation in operations]
    return AugmentedPair(new_past, new_current, instruction, list(operations), angle, flip)
