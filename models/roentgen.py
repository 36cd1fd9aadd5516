"""RoentGen: a Stable Diffusion model fine-tuned on MIMIC-CXR impressions (text -> chest X-ray).

A text-to-image baseline: it does not see the input X-ray. Each request is prompted with the target
study's impression (``EditRequest.target_report``; build MIMIC-EDIT-INSTRUCTION with ``--reports``,
phantom datasets carry one), or with the instruction when ``prompt=instruction``. The loop, text
encoding and VAE decoding are the shared ones of :mod:`cfbench.diffusion.components`; sampling follows the model's
published usage: 75 steps, guidance scale 4, the folder's own scheduler, no safety checker.

Options (``--option key=value``):

==================  ==============  ======================================================================
option              default         meaning
==================  ==============  ======================================================================
steps               75              denoising steps
guidance            4.0             classifier-free guidance scale
prompt              target_report   "target_report" (the target study's impression) or "instruction"
scheduler           folder          "folder" (the scheduler saved with the weights) or "ddim"
native_resolution   512             side in pixels the networks run at (outputs resized to the request's size)
precision           auto            auto (fp16 on CUDA, fp32 on CPU), fp32, fp16 or bf16
==================  ==============  ======================================================================
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cfbench.api.model import Capabilities, EditRequest, EditResult
from cfbench.api.prompts import text_prompt
from cfbench.api.registry import register
from cfbench.models.diffusers_folder import TextPromptedModel, TextPromptedOptions

WEIGHTS_HELP = (
    "RoentGen's weights are on the Hugging Face hub as StanfordAIMI/roent-gen-v1-0 (credentialed access: "
    "accept the terms there). Download the repository and point --model-path (or {weights_dir}/roentgen) at "
    "the folder holding model_index.json, unet/, vae/, text_encoder/, tokenizer/ and scheduler/."
)


@dataclass(frozen=True)
class RoentGenSettings(TextPromptedOptions):
    """Sampling parameters (see the module docstring for meanings and defaults)."""

    steps: int = 75
    guidance: float = 4.0


@register
class RoentGenModel(TextPromptedModel):
    name = "roentgen"
    capabilities = Capabilities(edits_image=False)
    description = "RoentGen: Stable Diffusion fine-tuned on MIMIC-CXR, prompted with the target impression"
    weights_subdir = "roentgen"
    weights_help = WEIGHTS_HELP
    hub_repos = ("StanfordAIMI/roent-gen-v1-0",)
    settings_class = RoentGenSettings

    def edit(self, requests: Sequence[EditRequest]) -> list[EditResult]:
        """Generate a batch in one pass (2 guidance branches x batch per UNet call); each sample's noise
        comes from its own seed, so results do not depend on the batch."""
        from cfbench import diffusion

        if not requests:
            return []
        components, settings = self.components, self.settings
        prompts = [text_prompt(request, settings.prompt, self.name) for request in requests]
        side = settings.native_resolution // components.vae_scale_factor
        noise = diffusion.seeded_noise([request.seed for request in requests],
                                       (components.unet.config.in_channels, side, side), components.device)
        latents = diffusion.generate_from_text(
            components, noise, diffusion.encode_text(components, prompts),
            diffusion.encode_text(components, [""] * len(requests)), settings.steps, settings.guidance)
        images = diffusion.decode_latents(components, latents).cpu()
        results = []
        for request, image, prompt in zip(requests, images, prompts):
            resized = diffusion.resize_images(image[None], request.image.shape)[0]
            results.append(EditResult(image=resized.numpy().astype(np.float32), info={"prompt": prompt},
                                      sample_id=request.sample_id))
        return results
