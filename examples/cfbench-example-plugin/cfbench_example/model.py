"""A tiny, weight-free counterfactual model, written the way a real adapter is.

For each operation of the instruction it brightens ("add", level up) or darkens ("remove", level down)
a soft Gaussian blob where that finding usually appears, and returns the blobs as the guidance map.
It is a baseline for plumbing, not a serious generator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from cfbench import Capabilities, CounterfactualModel, EditRequest, EditResult, LoadContext, ModelOptions

# Blob centre (row, column as fractions of the image) and radius per finding, patient left = image right.
FINDING_REGIONS = {
    "pleural effusion": [(0.78, 0.25, 0.12), (0.78, 0.75, 0.12)],
    "atelectasis": [(0.72, 0.30, 0.08), (0.72, 0.70, 0.08)],
    "cardiomegaly": [(0.62, 0.55, 0.16)],
    "edema": [(0.50, 0.35, 0.15), (0.50, 0.65, 0.15)],
    "pneumothorax": [(0.22, 0.20, 0.10), (0.22, 0.80, 0.10)],
}
SIDE = {"right": 0, "left": 1}  # index into the two-sided regions above


@dataclass(frozen=True)
class OpacityOptions(ModelOptions):
    """``--option strength=0.15``: peak intensity change of a blob, in [0, 1] image units."""

    strength: float = 0.15

    def check(self) -> None:
        if not 0.0 <= self.strength <= 1.0:
            raise ValueError(f"strength must lie in [0, 1], got {self.strength}")


class GaussianOpacityModel(CounterfactualModel):
    name = "example-opacity"
    capabilities = Capabilities(edits_image=True, guidance_map=True, explanation=True)
    native_resolution = 512
    description = "example plugin: soft opacities where each finding usually appears"

    def __init__(self, options: OpacityOptions = OpacityOptions()):
        self.strength = options.strength

    @classmethod
    def load(cls, context: LoadContext) -> "GaussianOpacityModel":
        # unknown keys, values that do not convert and out-of-range values raise ValueError naming the option
        return cls(OpacityOptions.from_options(context.options))

    def edit(self, requests: Sequence[EditRequest]) -> list[EditResult]:
        return [self._edit_one(request) for request in requests]

    def _edit_one(self, request: EditRequest) -> EditResult:
        height, width = request.image.shape
        rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
        change = np.zeros((height, width), np.float32)
        for operation in request.operations:
            regions = FINDING_REGIONS.get(operation.finding, [])
            side = SIDE.get((operation.location or "").split(" ")[0])
            if side is not None and len(regions) == 2:
                regions = [regions[side]]
            sign = -1.0 if operation.op == "remove" else 1.0
            for centre_row, centre_col, radius in regions:
                distance = ((rows / height - centre_row) ** 2 + (cols / width - centre_col) ** 2) / radius**2
                change += sign * np.exp(-distance).astype(np.float32)
        image = np.clip(request.image + self.strength * change, 0.0, 1.0).astype(np.float32)
        guidance = np.clip(np.abs(change), 0.0, 1.0).astype(np.float32)
        return EditResult(image=image, guidance_map=guidance,
                          explanation=f"Applied {len(request.operations)} operation(s): {request.instruction}")
