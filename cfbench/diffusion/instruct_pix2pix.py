"""The InstructPix2Pix editing pipeline: three-branch classifier-free guidance and the explicit DDIM
editing loop with an optional edit region (InstructX2X's RSE restricts it; plain InstructPix2Pix edits
everywhere). Read top to bottom: conditioning, guided noise, the loop."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cfbench.diffusion.components import DiffusionComponents, noise_to_timestep, predict_noise_branches


@dataclass(frozen=True)
class InstructPix2PixConditioning:
    """What the UNet is conditioned on, for a batch of B images.

    image_latents: float32 ``B x 4 x h x w`` unscaled VAE latents of the input images.
    text_embeddings: ``B x L x D`` embeddings of the instructions.
    null_embeddings: ``B x L x D`` embeddings of the empty prompt.
    """

    image_latents: torch.Tensor
    text_embeddings: torch.Tensor
    null_embeddings: torch.Tensor


@torch.no_grad()
def predict_text_and_image_noise(
    components: DiffusionComponents, latents: torch.Tensor, timestep: int, conditioning: InstructPix2PixConditioning,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise predictions with (image, instruction) and with (image, empty prompt): one two-branch UNet call.

    These are the two terms the text guidance contrasts; RSE reads its relevance map off their difference.
    """
    with_text, image_only = predict_noise_branches(
        components, latents, timestep,
        [conditioning.image_latents, conditioning.image_latents],
        [conditioning.text_embeddings, conditioning.null_embeddings],
    )
    return with_text, image_only


@torch.no_grad()
def predict_guided_noise(
    components: DiffusionComponents,
    latents: torch.Tensor,
    timestep: torch.Tensor | int,
    conditioning: InstructPix2PixConditioning,
    text_guidance: float,
    image_guidance: float,
) -> torch.Tensor:
    """InstructPix2Pix three-branch classifier-free guidance, one UNet call with 3B samples:

    ``eps = eps_uncond + s_T (eps_text - eps_image) + s_I (eps_image - eps_uncond)``, where eps_text sees
    (image, instruction), eps_image (image, empty prompt), eps_uncond (zero image latents, empty prompt).
    """
    image = conditioning.image_latents
    with_text, image_only, unconditional = predict_noise_branches(
        components, latents, timestep,
        [image, image, torch.zeros_like(image)],
        [conditioning.text_embeddings, conditioning.null_embeddings, conditioning.null_embeddings],
    )
    return (unconditional
            + text_guidance * (with_text - image_only)
            + image_guidance * (image_only - unconditional))


@torch.no_grad()
def edit_with_instruct_pix2pix(
    components: DiffusionComponents,
    source_latents: torch.Tensor,
    noise: torch.Tensor,
    conditioning: InstructPix2PixConditioning,
    num_steps: int,
    text_guidance: float,
    image_guidance: float,
    edit_mask: torch.Tensor | None = None,
    background_timestep: str = "current",
    start_latents: torch.Tensor | None = None,
) -> torch.Tensor:
    """The explicit DDIM (eta = 0) editing loop of InstructPix2Pix, with an optional edit region.

    source_latents: float32 ``B x 4 x h x w`` scaled latents of the input images (the UNet's space).
    noise: float32, same shape, the per-sample noise (see :func:`seeded_noise`); it is used both to start
        and for the replaced background, so the background follows one consistent noising path.
    edit_mask: float32 ``B x 1 x h x w`` with 1 = editable, or None (edit everywhere). After every step
        the latents outside the mask are replaced by the source latents noised with the same noise to
        ``background_timestep``: "current", the timestep the step started from (as the official
        InstructX2X inference code does), or "next", the step's new timestep (the noise level the
        denoised latents are at; the clean source latents after the last step).
    start_latents: scaled latents the loop starts from, noised with ``noise`` to the first timestep (not
        pure noise); None = ``source_latents``. The official InstructX2X code starts from one VAE posterior
        sample and replaces the background with another (see :mod:`cfbench.models.instructx2x`).
    Returns the denoised scaled latents, float32 ``B x 4 x h x w``.
    """
    if background_timestep not in ("current", "next"):
        raise ValueError(f"background_timestep must be 'current' or 'next', got {background_timestep!r}")
    scheduler = components.scheduler
    scheduler.set_timesteps(num_steps, device="cpu")
    timesteps = [int(t) for t in scheduler.timesteps]

    start = source_latents if start_latents is None else start_latents
    latents = noise_to_timestep(components, start, noise, timesteps[0])
    for index, timestep in enumerate(timesteps):
        guided = predict_guided_noise(components, latents, timestep, conditioning, text_guidance, image_guidance)
        latents = scheduler.step(guided, timestep, latents, eta=0.0, return_dict=False)[0]

        if edit_mask is not None:
            if background_timestep == "current":
                background = noise_to_timestep(components, source_latents, noise, timestep)
            elif index + 1 < len(timesteps):
                background = noise_to_timestep(components, source_latents, noise, timesteps[index + 1])
            else:
                background = source_latents
            latents = edit_mask * latents + (1.0 - edit_mask) * background
    return latents
