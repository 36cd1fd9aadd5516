"""Models used by the tests: real, deterministic edits (no weights), plus deliberately broken ones."""

from __future__ import annotations

import os
import signal
from typing import Sequence

import numpy as np

from cfbench.interface import Capabilities, CounterfactualModel, EditRequest, EditResult, LoadContext


class NoisyEditModel(CounterfactualModel):
    """Adds seeded noise inside a central square; returns that square as guidance map and an explanation.

    If the environment variable CFBENCH_TEST_KILL_AFTER=N is set, the process kills itself (SIGKILL, no
    clean-up) when it is asked for sample number N+1: a crash part-way through a run.
    """

    name = "noisy-edit"
    capabilities = Capabilities(edits_image=True, guidance_map=True, explanation=True)
    processed = 0

    @classmethod
    def load(cls, context: LoadContext) -> "NoisyEditModel":
        return cls()

    def edit(self, requests: Sequence[EditRequest]) -> list[EditResult]:
        kill_after = os.environ.get("CFBENCH_TEST_KILL_AFTER")
        results = []
        for request in requests:
            if kill_after is not None and NoisyEditModel.processed >= int(kill_after):
                os.kill(os.getpid(), signal.SIGKILL)
            NoisyEditModel.processed += 1
            rng = np.random.default_rng(request.seed)
            height, width = request.image.shape
            region = np.zeros((height, width), dtype=np.float32)
            region[height // 4 : 3 * height // 4, width // 4 : 3 * width // 4] = 1.0
            noise = rng.normal(0.0, 0.1, size=(height, width)).astype(np.float32)
            image = np.clip(request.image + noise * region, 0.0, 1.0).astype(np.float32)
            results.append(EditResult(image=image, guidance_map=region, explanation=f"edited: {request.instruction}",
                                      info={"noise_sum": float(noise.sum())}))
        return results


class NaNModel(CounterfactualModel):
    """Returns NaN for every sample whose id ends in an odd digit, the input otherwise."""

    name = "nan-model"

    @classmethod
    def load(cls, context: LoadContext) -> "NaNModel":
        return cls()

    def edit(self, requests: Sequence[EditRequest]) -> list[EditResult]:
        results = []
        for request in requests:
            image = request.image.copy()
            if int(request.sample_id[-1]) % 2:
                image[0, 0] = np.nan
            results.append(EditResult(image=image))
        return results
