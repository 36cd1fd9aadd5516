"""The one resize of image and map batches held as tensors (generators, RSE maps, the phantom evaluator).

Files are resized on reading by :func:`cfbench.core.images.load_image`; everything already in memory as a
torch tensor goes through :func:`resize_batch`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def resize_batch(batch: torch.Tensor, size: tuple[int, int], antialias: bool = True) -> torch.Tensor:
    """Bilinear resize (``align_corners=False``) of float ``B x H x W`` values in [0, 1] to
    ``B x size[0] x size[1]``, clamped to [0, 1]; a batch already at ``size`` is returned as it is.

    antialias: average over the footprint when downsampling (images: no aliasing); False gives plain
        bilinear sampling, which the official InstructX2X code uses to bring masks to the latent grid.
        Upsampling is the same either way.
    """
    size = (int(size[0]), int(size[1]))
    if tuple(batch.shape[-2:]) == size:
        return batch
    resized = F.interpolate(batch[:, None].float(), size=size, mode="bilinear", antialias=antialias,
                            align_corners=False)
    return resized[:, 0].clamp(0.0, 1.0)
