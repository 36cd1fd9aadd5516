"""The text-to-image (and image-to-image) pipeline of Stable Diffusion with two-branch classifier-free
guidance, used by RoentGen and PIE: the explicit loop over the scheduler's timesteps, with an optional
region held to a reference path (:class:`KeepRegion`, PIE's masked mode)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cfbench.diffusion.components import DiffusionComponents, noise_to_timestep, predict_noise_branches


@torch.no_grad()
def generate_from_text(
    components: DiffusionComponents,
    noise: torch.Tensor,
    text_embeddings: torch.Tensor,
    null_embeddings: torch.Tensor,
    num_steps: int,
    guidance: float,
    start_latents: torch.Tensor | None = None,
    strength: float = 1.0,
    keep: KeepRegion | None = None,
) -> torch.Tensor:
    """The explicit text-to-image (and image-to-image) loop of Stable Diffusion with classifier-free guidance.

    noise: float32 ``B x 4 x h x w`` per-sample standard normal noise (see :func:`seeded_noise`).
    text_embeddings / null_embeddings: ``B x L x D``.
    start_latents: None for text-to-image (start from ``noise`` times the scheduler's initial sigma), or
        scaled latents of images to edit (img2img): the last ``int(num_steps * strength)`` of the
        ``num_steps`` timesteps are run, starting from ``start_latents`` noised to the first of them.
    keep: optionally hold a region to a reference path during the loop (see :class:`KeepRegion`).
    Each step: one UNet call with 2B samples, ``eps = eps_null + guidance (eps_text - eps_null)``, then the
    scheduler's step (whatever scheduler the components carry: DDIM, or the folder's own, e.g. PNDM).
    Returns the denoised scaled latents, float32 ``B x 4 x h x w``.
    """
    scheduler = components.scheduler
    scheduler.set_timesteps(num_steps, device="cpu")
    timesteps = scheduler.timesteps
    if start_latents is None:
        latents = noise * float(scheduler.init_noise_sigma)
    else:
        if not 0.0 < strength <= 1.0:
            raise ValueError(f"strength must lie in (0, 1], got {strength}")
        first = (num_steps - min(int(num_steps * strength), num_steps)) * scheduler.order
        timesteps = timesteps[first:]
        if hasattr(scheduler, "set_begin_index"):  # schedulers that count their steps start mid-way
            scheduler.set_begin_index(first)
        latents = scheduler.add_noise(start_latents, noise, timesteps[:1])
    for index, timestep in enumerate(timesteps):
        if keep is not None and index > 0:
            latents = keep.apply(components, latents, timestep)
        model_input = scheduler.scale_model_input(latents, timestep)
        with_text, unconditional = predict_noise_branches(
            components, model_input, timestep, None, [text_embeddings, null_embeddings])
        guided = unconditional + guidance * (with_text - unconditional)
        latents = scheduler.step(guided, timestep, latents, return_dict=False)[0]
    return latents


@dataclass(frozen=True)
class KeepRegion:
    """Outside ``mask`` (float32 ``B x 1 x h x w``, 1 = editable), the latents entering each step after the
    first are replaced by ``reference`` (scaled clean latents) noised with ``noise`` to that step's timestep."""

    mask: torch.Tensor
    reference: torch.Tensor
    noise: torch.Tensor

    def apply(self, components: DiffusionComponents, latents: torch.Tensor, timestep) -> torch.Tensor:
        background = noise_to_timestep(components, self.reference, self.noise, int(timestep))
        return self.mask * latents + (1.0 - self.mask) * background
