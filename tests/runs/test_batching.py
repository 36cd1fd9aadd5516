"""``--batch-size auto``: the choice per device and model (cfbench.runs.batching), recorded in the manifest;
the results do not depend on it."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Sequence

import pytest

from cfbench.api.model import EditRequest, EditResult
from cfbench.runs import batching
from cfbench.runs.generate import RunSettings, generate
from cfbench.runs.manifest import RunManifest
from tests.helpers.datasets import write_random_dataset
from tests.helpers.fake_models import NoisyEditModel
from tests.runs.test_runner import run_outputs


class UNetLikeModel(NoisyEditModel):
    """NoisyEditModel that exposes ``components.unet`` as the diffusion adapters do, and counts its batches."""

    calls: list[int] = []

    def __init__(self):
        self.components = SimpleNamespace(unet=object())

    def edit(self, requests: Sequence[EditRequest]) -> list[EditResult]:
        UNetLikeModel.calls.append(len(requests))
        return super().edit(requests)


def run_settings(data, out, batch_size):
    return RunSettings(model="tests.helpers.fake_models:NoisyEditModel", split="holdout", data_dir=data, out=out,
                       resolution=32, batch_size=batch_size)


def test_auto_batch_of_a_unet_model_on_cpu_is_the_measured_one_and_recorded(tmp_path):
    data = write_random_dataset(tmp_path / "data", n=2 * batching.CPU_UNET_BATCH + 3)
    UNetLikeModel.calls = []
    generate(run_settings(data, tmp_path / "auto", "auto"), model=UNetLikeModel(), progress=False)
    assert UNetLikeModel.calls == [batching.CPU_UNET_BATCH] * 2 + [3]
    runtime = RunManifest.read(tmp_path / "auto").runtime
    assert runtime.batch_size == batching.CPU_UNET_BATCH
    assert runtime.batch_policy.startswith(f"auto: {batching.CPU_UNET_BATCH} (CPU, diffusion UNet: the knee")
    generate(run_settings(data, tmp_path / "one", 1), progress=False)
    assert run_outputs(tmp_path / "auto") == run_outputs(tmp_path / "one")
    assert RunManifest.read(tmp_path / "one").runtime.batch_policy == "given"


def test_auto_batch_of_a_model_without_a_table_is_one(random_dataset, tmp_path):
    generate(run_settings(random_dataset, tmp_path / "run", "auto"), progress=False)
    runtime = RunManifest.read(tmp_path / "run").runtime
    assert runtime.batch_size == 1 and runtime.batch_policy == "auto: 1 (no measured table for NoisyEditModel)"


@pytest.mark.parametrize("free_gib, resolution, bytes_per_weight, expected", [
    (80, 512, 2, 32),   # 40 GiB budget, 1 GiB per sample: capped at GPU_MAX_BATCH
    (20, 512, 2, 8),    # 10 GiB: 8 fit, 16 do not
    (20, 512, 4, 4),    # float32 doubles the estimate
    (20, 256, 2, 32),   # a quarter of the latent area
    (1, 512, 2, 1),     # nothing fits twice: 1
])
def test_gpu_batch_is_the_largest_power_of_two_that_fits_half_the_free_memory(free_gib, resolution,
                                                                               bytes_per_weight, expected):
    batch, per_sample = batching.gpu_batch(free_gib * 2**30, resolution, bytes_per_weight)
    assert batch == expected
    assert batch == 1 or batch * per_sample <= batching.GPU_MEMORY_FRACTION * free_gib


def test_a_given_batch_size_is_used_as_given():
    assert batching.resolve_batch_size(5, UNetLikeModel(), "cuda") == (5, "given")
