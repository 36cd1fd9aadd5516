"""The contract of an evaluator: a frozen classifier/regressor that scores images for the metrics.

An evaluator takes a batch of images (float32 Bx H x W in [0, 1], any square size; the evaluator resizes
to its own input size) and returns a dict of per-image outputs, numpy float32, keys from OUTPUT_KEYS:

- ``pathology``: (B, 5) probabilities in [0, 1], columns in ``EVALUATED_FINDINGS`` order
  (Atelectasis, Cardiomegaly, Edema, Pleural Effusion, Pneumothorax); raw sigmoid, never op_norm.
- ``features``: (B, D) feature vectors for FID (1024-d DenseNet ``features2`` for torchxrayvision).
- ``race``: (B, K) class probabilities (softmax), columns in ``race_classes`` order.
- ``sex``: (B,) probability that the patient is male.
- ``age``: (B,) predicted age in years.
- ``embedding``: (B, D) L2-normalised image embeddings (BiomedCLIP, for ProgEmu's CLIP-I).

An evaluator suite (several networks answering together, e.g. DenseNet + race + age models) is itself an
Evaluator. ``identity()`` names everything that changes its outputs (weights SHA-256, library versions,
preprocessing version); cached outputs on real images are keyed on it.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

import numpy as np

from cfbench.core.findings import EVALUATED_FINDINGS

OUTPUT_KEYS: tuple[str, ...] = ("pathology", "features", "race", "sex", "age", "embedding")


class Evaluator(abc.ABC):
    """Scores images. Subclasses set ``name``, ``outputs`` and, if they give ``race``, ``race_classes``."""

    name: ClassVar[str] = ""
    outputs: tuple[str, ...] = ()
    findings: tuple[str, ...] = EVALUATED_FINDINGS
    race_classes: tuple[str, ...] = ()

    @abc.abstractmethod
    def predict(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """Outputs for a batch: images float32 (B, H, W) in [0, 1] -> {key: array with first dim B}."""

    @abc.abstractmethod
    def identity(self) -> dict[str, Any]:
        """Everything that determines the outputs (weights hashes, versions, preprocessing version)."""


def check_images(images: np.ndarray, who: str) -> np.ndarray:
    """Validate a batch handed to an evaluator: float32 (B, H, W), square, finite, in [0, 1].

    Rejects wrongly scaled input (e.g. [-1, 1] or [0, 255]) with a message naming the evaluator.
    """
    if not isinstance(images, np.ndarray) or images.ndim != 3:
        shape = getattr(images, "shape", None)
        raise ValueError(f"{who}: expected images as a (B, H, W) array, got shape {shape}")
    if images.shape[1] != images.shape[2]:
        raise ValueError(f"{who}: images must be square, got {images.shape[1]}x{images.shape[2]}")
    if not np.isfinite(images).all():
        raise ValueError(f"{who}: images contain NaN or inf")
    low, high = float(images.min()), float(images.max())
    if low < 0.0 or high > 1.0:
        raise ValueError(
            f"{who}: images must be float in [0, 1] (cfbench's convention), got [{low:.4g}, {high:.4g}]; "
            "a [-1, 1] or [0, 255] image was probably passed"
        )
    return images.astype(np.float32, copy=False)


def check_outputs(outputs: dict[str, np.ndarray], evaluator: Evaluator, batch: int) -> dict[str, np.ndarray]:
    """Validate what an evaluator returned: the declared keys, first dimension B, finite values."""
    missing = [key for key in evaluator.outputs if key not in outputs]
    if missing:
        raise ValueError(f"evaluator {evaluator.name!r} did not return {missing}")
    for key, value in outputs.items():
        if key not in OUTPUT_KEYS:
            raise ValueError(f"evaluator {evaluator.name!r} returned unknown output {key!r}")
        if value.shape[0] != batch or not np.isfinite(value).all():
            raise ValueError(f"evaluator {evaluator.name!r}: output {key!r} has shape {value.shape} or non-finite "
                             f"values for a batch of {batch}")
    return outputs
