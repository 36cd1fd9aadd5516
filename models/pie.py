"""PIE (Progressive Image Editing): iterated image-to-image diffusion towards a report.

Each of ``iterations`` rounds encodes the current image, noises it back by ``strength`` of the
``steps`` timesteps and denoises it with the prompt (classifier-free guidance); the result is the next
round's input. With a user ``region_mask`` (``EditRequest.region_mask``), as in PIE's masked mode: during
each round the latents outside the mask follow the *original* input's noising path, and each round ends
with ``init + beta_1 (z - init)`` outside the mask and ``init + beta_2 (z - init)`` inside it (``init``:
the original input's latents). Weights: a Stable Diffusion folder fine-tuned on chest X-rays (the PIE
authors use ``IrohXu/stable-diffusion-mimic-cxr-v0.1``). The loop is :func:`cfbench.diffusion.text_to_image.generate_from_text`.

Options (``--option key=value``):

==================  ==============  ===================================================================
option              default         meaning
==================  ==============  ===================================================================
iterations          10              rounds of image-to-image editing (N in the paper)
strength            0.5             fraction of the timesteps each round rolls back (gamma)
steps               50              timesteps of the full schedule (a round runs strength x steps)
guidance            7.5             classifier-free guidance scale
beta_1              0.01            end-of-round weight of the change outside the region mask
beta_2              0.75            end-of-round weight of the change inside the region mask
prompt              target_report   "target_report" (the target study's impression) or "instruction"
scheduler           folder          "folder" (the scheduler saved with the weights) or "ddim"
native_resolution   512             side in pixels the networks run at (outputs resized to the request's size)
precision           auto            auto (fp16 on CUDA, fp32 on CPU), fp32, fp16 or bf16
==================  ==============  ===================================================================

Differences from the official code, on purpose: images stay float between rounds (the official script
round-trips through 8-bit PIL images), the VAE posterior mode is encoded (not a sample), each round's
noise comes from the sample's seed and the round number, and the region mask is downsampled bilinearly
to the latent grid.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from cfbench.api.model import Capabilities, EditRequest, EditResult
from cfbench.api.prompts import text_prompt
from cfbench.api.registry import register
from cfbench.models.diffusers_folder import TextPromptedModel, TextPromptedOptions

if TYPE_CHECKING:  # pragma: no cover
    import torch

WEIGHTS_HELP = (
    "PIE runs on a Stable Diffusion folder fine-tuned on chest X-rays: download IrohXu/stable-diffusion-mimic-cxr-v0.1 "
    "from the Hugging Face hub (see github.com/PediaMedAI/PIE) and point --model-path (or {weights_dir}/pie) at the "
    "folder holding model_index.json, unet/, vae/, text_encoder/, tokenizer/ and scheduler/."
)


@dataclass(frozen=True)
class PIESettings(TextPromptedOptions):
    """Sampling parameters (see the module docstring for meanings and defaults)."""

    iterations: int = 10
    strength: float = 0.5
    steps: int = 50
    guidance: float = 7.5
    beta_1: float = 0.01
    beta_2: float = 0.75

    def check(self) -> None:
        super().check()
        if self.iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {self.iterations}")
        if not 0.0 < self.strength <= 1.0 or int(self.steps * self.strength) < 1:
            raise ValueError(f"strength must lie in (0, 1] and leave at least one step, got {self.strength}")


def round_seed(seed: int, round_index: int) -> int:
    """The noise seed of one editing round of a sample: a function of the sample's seed and the round."""
    return int.from_bytes(hashlib.sha256(f"pie:{seed}:{round_index}".encode()).digest()[:4], "little")


@register
class PIEModel(TextPromptedModel):
    name = "pie"
    capabilities = Capabilities(edits_image=True)
    description = "PIE: iterated image-to-image Stable Diffusion towards the target report (progressive editing)"
    weights_subdir = "pie"
    weights_help = WEIGHTS_HELP
    hub_repos = ("IrohXu/stable-diffusion-mimic-cxr-v0.1",)
    settings_class = PIESettings

    def edit(self, requests: Sequence[EditRequest]) -> list[EditResult]:
        """All rounds for a batch at once; each sample's noise comes from its own seed and the round, so
        results do not depend on the batch."""
        import torch

        from cfbench import diffusion

        if not requests:
            return []
        components, settings = self.components, self.settings
        prompts = [text_prompt(request, settings.prompt, self.name) for request in requests]
        size = (settings.native_resolution, settings.native_resolution)
        current = diffusion.resize_images(torch.from_numpy(np.stack([r.image for r in requests])).float(), size)
        text = diffusion.encode_text(components, prompts)
        null = diffusion.encode_text(components, [""] * len(requests))
        original = diffusion.encode_images(components, current) * components.latent_scaling
        region = self.latent_region(requests, tuple(original.shape[-2:]))
        for round_index in range(settings.iterations):
            noise = diffusion.seeded_noise([round_seed(r.seed, round_index) for r in requests],
                                           tuple(original.shape[1:]), components.device)
            start = original if round_index == 0 else (
                diffusion.encode_images(components, current) * components.latent_scaling)
            keep = None if region is None else diffusion.KeepRegion(region, original, noise)
            latents = diffusion.generate_from_text(components, noise, text, null, settings.steps, settings.guidance,
                                                   start_latents=start, strength=settings.strength, keep=keep)
            if region is not None:
                latents = self.weigh_change(latents, original, region, requests)
            current = diffusion.decode_latents(components, latents)
        images = current.cpu()
        return [EditResult(image=diffusion.resize_images(image[None], request.image.shape)[0].numpy().astype(np.float32),
                           info={"prompt": prompt, "iterations": settings.iterations}, sample_id=request.sample_id)
                for request, image, prompt in zip(requests, images, prompts)]

    def latent_region(self, requests: Sequence[EditRequest], latent_size: tuple[int, int]) -> torch.Tensor | None:
        """The requests' region masks on the latent grid (float32 ``B x 1 x h x w``, 1 = editable; bilinear),
        all ones for requests without one; None when no request has one."""
        import torch

        from cfbench.diffusion import rse

        if all(request.region_mask is None for request in requests):
            return None
        masks = [torch.ones(request.image.shape) if request.region_mask is None
                 else torch.from_numpy(np.asarray(request.region_mask, dtype=np.float32)) for request in requests]
        return rse.resize_maps(torch.stack(masks), latent_size)[:, None].to(self.components.device)

    def weigh_change(self, latents: torch.Tensor, original: torch.Tensor, region: torch.Tensor,
                     requests: Sequence[EditRequest]) -> torch.Tensor:
        """PIE's end-of-round weighting ``init + beta (z - init)``: beta_1 outside the region, beta_2 inside;
        requests without a region mask keep their latents unchanged."""
        import torch

        change = latents - original
        weighted = original + change * (self.settings.beta_1 * (1.0 - region) + self.settings.beta_2 * region)
        masked = torch.tensor([r.region_mask is not None for r in requests], device=latents.device)[:, None, None, None]
        return torch.where(masked, weighted, latents)
