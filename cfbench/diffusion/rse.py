"""Region-Specific Editing (RSE, InstructX2X): where an instruction-guided edit may change the image.

Pure tensor functions, no model calls. The pipeline (see :mod:`cfbench.models.instructx2x`):

1. relevance: ``R = sum_c |eps_text - eps_image|`` from one UNet pass on the noised input latents;
2. clip outliers above ``Q3 + 1.5 IQR`` per image (quartiles by the midpoint rule, as the official code's
   ``np.percentile(..., interpolation="midpoint")``; ``quartiles="linear"`` for NumPy's default rule), then
   min-max normalise to [0, 1];
3. upsample bilinearly from the latent grid to the image grid;
4. guidance map ``G = M * R`` with ``M`` the pseudo mask of the instruction's findings (or a user mask);
5. binary edit mask ``G >= tau``; its latent-grid version drives the per-step latent replacement. As in
   the official inference code, that version is ``(M downsampled bilinearly) * R_latent >= tau`` on the
   latent grid (``latent_mask="official"``); ``latent_mask="max-pool"`` instead marks a latent cell
   editable when any of its pixels is (:func:`mask_on_latent_grid`).

Conventions: maps are torch tensors shaped ``B x H x W`` (one map per image of a batch); every function
works per image, so a batch gives the same maps as its images one by one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cfbench.core.resize import resize_batch

DEFAULT_IQR_FACTOR = 1.5
DEFAULT_TAU = 0.1
QUARTILE_RULES: tuple[str, ...] = ("midpoint", "linear")  # torch.quantile / NumPy interpolation names


def raw_relevance(noise_text: torch.Tensor, noise_image: torch.Tensor) -> torch.Tensor:
    """Unnormalised relevance on the latent grid.

    noise_text, noise_image: ``B x C x h x w`` noise predictions with the instruction (text + image
        conditioning) and without it (image conditioning only), same noised latents.
    Returns float32 ``B x h x w``, >= 0: ``sum over channels of |noise_text - noise_image|``.
    """
    return (noise_text.float() - noise_image.float()).abs().sum(dim=1)


def clip_iqr_outliers(maps: torch.Tensor, factor: float = DEFAULT_IQR_FACTOR,
                      quartiles: str = "midpoint") -> torch.Tensor:
    """Clip each map from above at ``Q3 + factor * (Q3 - Q1)`` (its own quartiles).

    maps: float ``B x H x W``, any range. quartiles: "midpoint" (the mean of the two order statistics
    around the quartile's position, as the official InstructX2X code) or "linear" (linear interpolation
    between them, NumPy's and torch's default). Returns the same shape and dtype; values above the fence
    set to it.
    """
    if quartiles not in QUARTILE_RULES:
        raise ValueError(f"quartiles must be one of {QUARTILE_RULES}, got {quartiles!r}")
    flat = maps.flatten(start_dim=1).float()
    first_quartile = torch.quantile(flat, 0.25, dim=1, interpolation=quartiles)
    third_quartile = torch.quantile(flat, 0.75, dim=1, interpolation=quartiles)
    upper_fence = third_quartile + factor * (third_quartile - first_quartile)
    return torch.minimum(maps, upper_fence.to(maps.dtype)[:, None, None])


def normalise_min_max(maps: torch.Tensor) -> torch.Tensor:
    """Rescale each map linearly to [0, 1] (its minimum -> 0, its maximum -> 1).

    maps: float ``B x H x W``. A constant map carries no information about where to edit and becomes
    all ones (every position equally relevant), so that the pseudo mask alone decides.
    """
    flat = maps.flatten(start_dim=1)
    low = flat.min(dim=1).values[:, None, None]
    high = flat.max(dim=1).values[:, None, None]
    spread = high - low
    constant = spread <= 0
    normalised = (maps - low) / torch.where(constant, torch.ones_like(spread), spread)
    return torch.where(constant, torch.ones_like(maps), normalised).clamp(0.0, 1.0)


def normalised_relevance(
    noise_text: torch.Tensor, noise_image: torch.Tensor, iqr_factor: float = DEFAULT_IQR_FACTOR,
    quartiles: str = "midpoint",
) -> torch.Tensor:
    """The RSE relevance map on the latent grid: raw relevance, IQR-clipped, min-max normalised.

    noise_text, noise_image: ``B x C x h x w`` (see :func:`raw_relevance`); quartiles: see
    :func:`clip_iqr_outliers`. Returns float32 ``B x h x w`` in [0, 1].
    """
    return normalise_min_max(clip_iqr_outliers(raw_relevance(noise_text, noise_image), iqr_factor, quartiles))


def resize_maps(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of float ``B x H x W`` maps in [0, 1] to ``B x size[0] x size[1]`` (stays in [0, 1]),
    without antialiasing, as the official code brings masks to the latent grid
    (:func:`cfbench.core.resize.resize_batch`)."""
    return resize_batch(maps, size, antialias=False)


def relevance_map(
    noise_text: torch.Tensor,
    noise_image: torch.Tensor,
    image_size: tuple[int, int],
    iqr_factor: float = DEFAULT_IQR_FACTOR,
    quartiles: str = "midpoint",
) -> torch.Tensor:
    """The RSE relevance map at image resolution.

    noise_text, noise_image: ``B x C x h x w`` (see :func:`raw_relevance`).
    image_size: (H, W) in pixels of the output map.
    Returns float32 ``B x H x W`` in [0, 1]: :func:`normalised_relevance` upsampled bilinearly.
    """
    return resize_maps(normalised_relevance(noise_text, noise_image, iqr_factor, quartiles), image_size)


def guidance_map(region_mask: torch.Tensor, relevance: torch.Tensor) -> torch.Tensor:
    """``G = M * R``: relevance restricted to the allowed region.

    region_mask: ``B x H x W`` bool or float in [0, 1] (pseudo mask or user mask; ones = anywhere).
    relevance: float ``B x H x W`` in [0, 1]. Returns float32 ``B x H x W`` in [0, 1], zero outside the mask.
    """
    return region_mask.float() * relevance.float()


def binary_edit_mask(guidance: torch.Tensor, tau: float = DEFAULT_TAU) -> torch.Tensor:
    """Where the edit may change the image: bool ``B x H x W``, ``guidance >= tau``."""
    return guidance >= tau


def mask_on_latent_grid(mask: torch.Tensor, latent_size: tuple[int, int]) -> torch.Tensor:
    """A pixel mask on the latent grid: a latent cell is editable when any of its pixels is.

    mask: bool ``B x H x W``. Returns float32 ``B x 1 x h x w`` with values 0 or 1, ready to blend latents.
    Taking the maximum (not the mean) keeps every editable pixel's latent editable; pixels outside the
    mask are restored exactly by the final pixel composite anyway.
    """
    return F.adaptive_max_pool2d(mask[:, None].float(), tuple(latent_size))
