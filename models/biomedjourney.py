"""BiomedJourney (Gu et al., arXiv 2310.10765): a faithful, trainable reimplementation on the InstructPix2Pix stack.

No code or weights are public. The model is an InstructPix2Pix latent diffusion model trained on (prior image,
progression description of the two reports, follow-up image) triples, after a first stage on single
image-report pairs with a dummy prior image. ``cfbench train biomedjourney`` is that recipe on the project's one
InstructPix2Pix trainer (:mod:`cfbench.training.instructx2x`, with ``prompt_source`` and ``report_pair_steps``);
its output folder is what this adapter loads (``--model-path OUT`` or ``{weights_dir}/biomedjourney``).

Inference is plain InstructPix2Pix sampling (no region-specific editing) conditioned on the request's
progression prompt (``EditRequest.progression``, ICG-CXR style) or, where a sample has none or with
``prompt=instruction``, its instruction. Resolution, steps and guidance are not published: the defaults are
InstructPix2Pix's.

Options (``--option key=value``): ``prompt`` (progression), ``steps`` (100, DDIM), ``text_guidance`` (7.5),
``image_guidance`` (1.5), ``native_resolution`` (512), ``precision`` (auto); the InstructX2X options exist but
have no effect without RSE.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from cfbench.api.model import Capabilities, EditRequest
from cfbench.api.registry import register
from cfbench.models.instructx2x import InstructPix2PixFamily, InstructX2XSettings

WEIGHTS_HELP = (
    "BiomedJourney has no public weights. Train them with `cfbench train biomedjourney --data DIR --base "
    "INSTRUCT_PIX2PIX_OR_SD_FOLDER --out OUT` (a dataset with target_report for stage 1 and progression "
    "prompts, e.g. ICG-CXR via `cfbench data build icg`), then pass --model-path OUT."
)


@dataclass(frozen=True)
class BiomedJourneySettings(InstructX2XSettings):
    """InstructPix2Pix sampling with the prompt source: "progression" (else the instruction) or "instruction"."""

    prompt: str = "progression"

    choices: ClassVar[dict[str, tuple[str, ...]]] = {
        **InstructX2XSettings.choices, "prompt": ("progression", "instruction")}


@register
class BiomedJourneyModel(InstructPix2PixFamily):
    name = "biomedjourney"
    capabilities = Capabilities(edits_image=True, guidance_map=False)
    description = "BiomedJourney: InstructPix2Pix on progression prompts (reimplementation; train with cfbench train)"
    weights_subdir = "biomedjourney"
    weights_help = WEIGHTS_HELP
    settings_class = BiomedJourneySettings

    def prompt_text(self, request: EditRequest) -> str:
        if self.settings.prompt == "progression" and request.progression:
            return request.progression
        return request.instruction

    def identity_extra(self) -> dict[str, Any]:
        return {"prompt": self.settings.prompt}
