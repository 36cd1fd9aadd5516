"""``--batch-size auto`` (the CLI default): the batch a run uses per device and model, from measured tables.

A sample's result does not depend on the batch it is in (each sample has its own seed and generator;
tested), so the batch is a speed setting only, recorded in the manifest's runtime (``batch_size``, and
``batch_policy``: how it was chosen).

- CPU, models that run a diffusion UNet (they expose ``components.unet``): ``CPU_UNET_BATCH`` = 8, the knee of
  the per-sample cost of the shipped phantom InstructX2X (``benchmarks/bench_batching.py``; 2 cores, 128 px, 2
  DDIM steps, a loaded machine: batch 1 / batch b = 1.55 at 2, 2.09 at 4, 3.21 at 8, 3.94 at 16; an earlier
  measurement found 2.5 at 8). Doubling to 16 gains 1.23x against 1.54x for 4 -> 8, and a 512-px network
  would need twice the memory for its 3 guidance branches, so the table stops at 8.
- CUDA, those models: the largest power of two up to ``GPU_MAX_BATCH`` whose estimated memory fits in
  ``GPU_MEMORY_FRACTION`` of the device's free memory. The estimate per sample,
  ``GPU_UNET_GIB_PER_SAMPLE`` at 512 px in 16-bit weights, scaled with the latent area and doubled in
  float32, is NOT yet measured on a device: ``benchmarks/gpu_suite.py`` measures the peak memory at batch
  1 and 8 to replace it, and the manifest says "estimated".
- Every other model (reference models, autoregressive models, plugins): 1, as before, since no table has
  been measured for them; pass ``--batch-size B`` to choose.
"""

from __future__ import annotations

from typing import Any

AUTO = "auto"
CPU_UNET_BATCH = 8
GPU_MAX_BATCH = 32
GPU_MEMORY_FRACTION = 0.5
GPU_UNET_GIB_PER_SAMPLE = 1.0  # at 512 px, 16-bit weights, three guidance branches: an estimate (see above)
UNMEASURED_BATCH = 1


def _unet_components(model: Any) -> Any | None:
    components = getattr(model, "components", None)
    return components if getattr(components, "unet", None) is not None else None


def gpu_batch(free_bytes: int, resolution: int, bytes_per_weight: int) -> tuple[int, float]:
    """(batch, estimated GiB per sample) for a diffusion UNet at ``resolution`` px with ``free_bytes`` free."""
    per_sample_gib = GPU_UNET_GIB_PER_SAMPLE * (resolution / 512) ** 2 * (2 if bytes_per_weight >= 4 else 1)
    budget_gib = GPU_MEMORY_FRACTION * free_bytes / 2**30
    batch = 1
    while batch * 2 <= GPU_MAX_BATCH and batch * 2 * per_sample_gib <= budget_gib:
        batch *= 2
    return batch, per_sample_gib


def resolve_batch_size(requested: int | str, model: Any, device: str) -> tuple[int, str]:
    """(batch size, how it was chosen) for a run of ``model`` on ``device``; ``requested`` is a whole number
    (used as given) or ``"auto"``."""
    if requested != AUTO:
        return int(requested), "given"
    components = _unet_components(model)
    if components is None:
        return UNMEASURED_BATCH, f"auto: {UNMEASURED_BATCH} (no measured table for {type(model).__name__})"
    if str(device).startswith("cuda"):
        import torch

        free_bytes, _ = torch.cuda.mem_get_info(torch.device(device))
        settings = getattr(model, "settings", None)
        resolution = getattr(settings, "native_resolution", 512)
        bytes_per_weight = torch.empty((), dtype=components.dtype).element_size()
        batch, per_sample = gpu_batch(free_bytes, resolution, bytes_per_weight)
        return batch, (f"auto: {batch} (GPU: {free_bytes / 2**30:.1f} GiB free, {GPU_MEMORY_FRACTION:.0%} of it at "
                       f"an estimated {per_sample:.2f} GiB per sample at {resolution} px, not yet measured)")
    return CPU_UNET_BATCH, f"auto: {CPU_UNET_BATCH} (CPU, diffusion UNet: the knee of its measured per-sample cost)"
