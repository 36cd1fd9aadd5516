"""Models used by the tests: real, deterministic edits (no weights), plus deliberately broken ones."""

from __future__ import annotations

import os
import signal
from typing import Sequence

import numpy as np

from cfbench.api.evaluator import Evaluator, check_images
from cfbench.api.model import Capabilities, CounterfactualModel, EditRequest, EditResult, LoadContext


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


class RegionStatisticsEvaluator(Evaluator):
    """A deterministic, weight-free evaluator: outputs are fixed functions of regional image means.

    pathology: sigmoid of 8 * (mean of five image regions - 0.5); race: softmax over three global
    statistics; sex: sigmoid of the left-right difference; age: 100 * overall mean; features: the image
    averaged down to 8x8 (64-d). Equal images give equal outputs, which is what the pipeline tests need.
    """

    name = "region-statistics"
    outputs = ("pathology", "features", "race", "sex", "age")
    race_classes = ("group_a", "group_b", "group_c")

    def __init__(self):
        self.calls = 0

    def predict(self, images: np.ndarray) -> dict[str, np.ndarray]:
        images = check_images(images, self.name)
        self.calls += len(images)
        batch, size, _ = images.shape
        half, quarter = size // 2, size // 4
        regions = [images[:, half:, :half], images[:, half:, half:], images[:, quarter:3 * quarter, quarter:3 * quarter],
                   images[:, :half, :], images[:, :quarter, :]]
        means = np.stack([r.mean(axis=(1, 2)) for r in regions], axis=1)
        pathology = 1.0 / (1.0 + np.exp(-8.0 * (means - 0.5)))
        stats = np.stack([images.mean(axis=(1, 2)), images.std(axis=(1, 2)), images[:, :, :half].mean(axis=(1, 2))], 1)
        race = np.exp(4 * stats) / np.exp(4 * stats).sum(axis=1, keepdims=True)
        sex = 1.0 / (1.0 + np.exp(-8.0 * (images[:, :, :half].mean(axis=(1, 2)) - images[:, :, half:].mean(axis=(1, 2)))))
        block = size // 8
        features = images[:, : block * 8, : block * 8].reshape(batch, 8, block, 8, block).mean(axis=(2, 4)).reshape(batch, 64)
        return {"pathology": pathology.astype(np.float32), "features": features.astype(np.float32),
                "race": race.astype(np.float32), "sex": sex.astype(np.float32),
                "age": (100.0 * images.mean(axis=(1, 2))).astype(np.float32)}

    def identity(self) -> dict:
        return {"evaluator": self.name, "version": 1}


class DownsampleEmbedder(Evaluator):
    """A weight-free embedder: the image averaged down to 4x4, centred and L2-normalised (16-d)."""

    name = "downsample-embedder"
    outputs = ("embedding",)

    def predict(self, images: np.ndarray) -> dict[str, np.ndarray]:
        images = check_images(images, self.name)
        batch, size, _ = images.shape
        block = size // 4
        small = images[:, : block * 4, : block * 4].reshape(batch, 4, block, 4, block).mean(axis=(2, 4)).reshape(batch, 16)
        small = small - small.mean(axis=1, keepdims=True)
        return {"embedding": (small / np.linalg.norm(small, axis=1, keepdims=True)).astype(np.float32)}

    def identity(self) -> dict:
        return {"evaluator": self.name}


class RegionEchoModel(CounterfactualModel):
    """Returns the request's region mask as the image (1 inside, 0 outside; 0.5 everywhere when there is none):
    shows what reached the adapter through ``EditRequest.region_mask``."""

    name = "region-echo"

    @classmethod
    def load(cls, context: LoadContext) -> "RegionEchoModel":
        return cls()

    def edit(self, requests: Sequence[EditRequest]) -> list[EditResult]:
        return [EditResult(image=np.full(request.image.shape, 0.5, np.float32) if request.region_mask is None
                           else np.asarray(request.region_mask, dtype=np.float32)) for request in requests]


class TrainingCopyModel(CounterfactualModel):
    """Returns an image of the dataset's train split for every request (the current image of train row
    ``hash(sample_id) % n``), unchanged: the memoriser the memorisation measures must catch."""

    name = "training-copy"

    def __init__(self, dataset):
        from cfbench.datasets.edit_dataset import EditDataset

        self.train = EditDataset(dataset.root, "train", dataset.resolution)

    @classmethod
    def load(cls, context: LoadContext) -> "TrainingCopyModel":
        return cls(context.dataset)

    def edit(self, requests: Sequence[EditRequest]) -> list[EditResult]:
        samples = self.train.samples
        return [EditResult(image=self.train.current_image(samples[sum(map(ord, r.sample_id)) % len(samples)]))
                for r in requests]


class SeedIgnoringNoiseModel(CounterfactualModel):
    """Adds the same fixed noise whatever the seed (option ``use_seed=1``: noise from the request's seed)."""

    name = "seed-noise"

    def __init__(self, use_seed: bool):
        self.use_seed = use_seed

    @classmethod
    def load(cls, context: LoadContext) -> "SeedIgnoringNoiseModel":
        return cls(context.options.get("use_seed") == "1")

    def edit(self, requests: Sequence[EditRequest]) -> list[EditResult]:
        results = []
        for request in requests:
            rng = np.random.default_rng(request.seed if self.use_seed else 0)
            noise = rng.normal(0.0, 0.1, size=request.image.shape).astype(np.float32)
            results.append(EditResult(image=np.clip(request.image + noise, 0.0, 1.0).astype(np.float32)))
        return results
