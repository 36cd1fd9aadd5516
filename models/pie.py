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
between_rounds      rgb8            "rgb8": each round's output becomes an 8-bit RGB image (levels rounded, as
                                    diffusers' ``numpy_to_pil``), the next round's input and, after the
                                    last round, the result (the channels' mean), as the release passes PIL
                                    images between rounds; "float": the decoder's gray output stays float
posterior           sample          the latents each round starts from: "sample" (a VAE posterior sample, as
                                    the release's pipeline; seeded by the sample's seed and the round) or
                                    "mode" (the posterior mode)
prompt              target_report   "target_report" (the target study's impression) or "instruction"
scheduler           folder          "folder" (the scheduler saved with the weights) or "ddim"
native_resolution   512             side in pixels the networks run at (outputs resized to the request's size)
precision           auto            auto (fp16 on CUDA, fp32 on CPU), fp32, fp16 or bf16
==================  ==============  ===================================================================

Differences from the official code (``run_pie.py`` and ``pipeline_stable_diffusion_pie.py`` of
PediaMedAI/PIE), on purpose: each round's noise and posterior sample come from the sample's seed and the
round number (the release draws from the global RNG), and in the masked mode the region mask is
downsampled bilinearly to the latent grid and the original input's latents are encoded once (the release
re-encodes them each round and also masks the starting noise). ``between_rounds=float`` (cfbench's earlier default) is kept as an option: it avoids compounding
8-bit rounding over the rounds (after three rounds on tiny random weights the two paths differ by up to
0.03-0.07 in intensity), which is
what a model should be judged on, but it is not what the release computes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

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
    between_rounds: str = "rgb8"
    posterior: str = "sample"

    choices: ClassVar[dict[str, tuple[str, ...]]] = {
        **TextPromptedOptions.choices, "between_rounds": ("rgb8", "float"), "posterior": ("sample", "mode")}

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
    adapter_version = 2  # 2: the release's 8-bit RGB images between rounds and posterior samples by default

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
        original = self.round_latents(requests, current, 0)
        region = self.latent_region(requests, tuple(original.shape[-2:]))
        for round_index in range(settings.iterations):
            noise = diffusion.seeded_noise([round_seed(r.seed, round_index) for r in requests],
                                           tuple(original.shape[1:]), components.device)
            start = original if round_index == 0 else self.round_latents(requests, current, round_index)
            keep = None if region is None else diffusion.KeepRegion(region, original, noise)
            latents = diffusion.generate_from_text(components, noise, text, null, settings.steps, settings.guidance,
                                                   start_latents=start, strength=settings.strength, keep=keep)
            if region is not None:
                latents = self.weigh_change(latents, original, region, requests)
            if settings.between_rounds == "rgb8":  # B x 3 x H x W on the 8-bit grid, as a PIL image
                current = torch.round(diffusion.decode_latents_rgb(components, latents) * 255.0) / 255.0
            else:
                current = diffusion.decode_latents(components, latents)
        images = (current.mean(dim=1) if current.dim() == 4 else current).cpu()
        return [EditResult(image=diffusion.resize_images(image[None], request.image.shape)[0].numpy().astype(np.float32),
                           info={"prompt": prompt, "iterations": settings.iterations}, sample_id=request.sample_id)
                for request, image, prompt in zip(requests, images, prompts)]

    def round_latents(self, requests: Sequence[EditRequest], images: torch.Tensor, round_index: int) -> torch.Tensor:
        """Scaled latents a round starts from: the VAE posterior mode of ``images``, or (``posterior=sample``) a
        posterior sample whose noise is seeded by each request's seed and the round."""
        from cfbench import diffusion
        from cfbench.core.seeds import derive_seed

        components = self.components
        mean, std = diffusion.posterior_moments(components, images)
        if self.settings.posterior == "mode":
            return mean * components.latent_scaling
        noise = diffusion.seeded_noise([derive_seed(r.seed, "pie-posterior", round_index) for r in requests],
                                       tuple(mean.shape[1:]), components.device)
        return (mean + std * noise) * components.latent_scaling

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
