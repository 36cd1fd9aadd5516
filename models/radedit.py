"""RadEdit (Pérez-García et al., ECCV 2024): edit-friendly DDPM inversion with an edit mask and a keep mask.

Weights come from three releases; one folder with three sub-folders (``--model-path``, or
``{weights_dir}/radedit``), or a path per part through ``--option unet=... vae=... text_encoder=...`` (each a
folder or ``hf:ORG/NAME[@REV]`` from the local Hugging Face cache):

==============  ===================================  ===========================================================
part            release                              layout
==============  ===================================  ===========================================================
unet/           microsoft/radedit (gated), unet/      diffusers UNet2DConditionModel: config.json + safetensors
vae/            stabilityai/sdxl-vae                 diffusers AutoencoderKL, scaling_factor 0.13025; kept in
                                                     float32 (its fp16 decode overflows)
text_encoder/   microsoft/BiomedVLP-BioViL-T         CXR-BERT: config.json, pytorch_model.bin, vocab.txt; loaded
                                                     as transformers BERT + projection, no remote code; max
                                                     length 128, attention mask passed
==============  ===================================  ===========================================================

A missing sub-folder falls back to that release's snapshot in the local Hugging Face cache (what
``cfbench weights fetch radedit`` downloads), so ``--model-path hf:microsoft/radedit`` works after a fetch.

Scheduler, as released: DDIM, linear betas 1e-4..0.02, 1000 training steps, trailing spacing, steps_offset 1,
no clipping, epsilon prediction, eta 1. The loop is :mod:`cfbench.diffusion.ddpm_inversion`: invert the input
with the empty prompt, skip the first ``skip_ratio`` of the steps, reverse with the edit prompt (classifier-free
guidance) and the recorded noise, the inversion prompt's prediction outside the edit mask, and paste-back of the
inverted latents (``paste_back``: ``released`` or ``corrected``, see :func:`~cfbench.diffusion.edit_from_inversion`).

Options (``--option key=value``):

=================  ============  ========================================================================
option             default       meaning
=================  ============  ========================================================================
steps              100           DDIM steps of the schedule (users' calls: 100-200)
guidance           7.5           classifier-free guidance weight of the edit prompt (>= 0; 15 also quoted)
skip_ratio         0.3           fraction of the steps skipped (the reverse pass starts that far from noise)
paste_back         released      ``released`` (pasted one step too noisy, everywhere outside the edit mask) or
                                 ``corrected`` (keep mask only, at the right noise level); in the manifest
keep_mask          complement    ``complement``: the complement of the edit mask dilated by ``keep_margin``;
                                 ``none``: no keep mask
keep_margin        0.05          dilation of the edit mask before taking the complement, fraction of the side
prompt             finding       ``finding`` (the operations as RadEdit's prompts phrase them) or
                                 ``target_report`` (the target study's impression)
posterior          sample        the input's latents: ``sample`` (as released; seeded by the request) or ``mode``
pseudo_masks       auto          edit masks: the dataset's ``pseudo_masks.npz`` (MS-CXR), else NIH (see
                                 instructx2x); the request's ``region_mask`` replaces it
native_resolution  512           side in pixels the networks run at
precision          auto          UNet and text encoder dtype (auto: fp16 on CUDA); the VAE stays float32
unet, vae,         ""            a path (or hf:ORG/NAME) per part, instead of the model folder's sub-folder
text_encoder
=================  ============  ========================================================================

Prompts: each operation becomes "<level> <location> <finding>" capitalised ("Small left pleural effusion"),
a removal "No <finding>" ("No pleural effusion"); several are joined with ". ". An instruction outside the
grammar is used as it is. The edit mask is the instruction's pseudo mask on the latent grid (a latent cell is
editable when any of its pixels is), the whole image when no known finding is named.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from cfbench.api.model import Capabilities, EditRequest, EditResult, LoadContext
from cfbench.api.prompts import text_prompt
from cfbench.api.registry import register, resolve_model_path
from cfbench.core.errors import MissingWeights, WeightsNotFoundError
from cfbench.core.findings import Operation
from cfbench.core.seeds import derive_seed
from cfbench.models.diffusers_folder import DiffusersFolderModel, DiffusionOptions
from cfbench.models.instructx2x import instruction_operations, load_pseudo_masks

PARTS: dict[str, tuple[str, str]] = {
    "unet": ("microsoft/radedit", "the RadEdit UNet (Hugging Face microsoft/radedit, gated: accept the research "
                                  "licence; its unet/ folder)"),
    "vae": ("stabilityai/sdxl-vae", "the SDXL VAE (Hugging Face stabilityai/sdxl-vae: config.json + "
                                    "diffusion_pytorch_model.safetensors)"),
    "text_encoder": ("microsoft/BiomedVLP-BioViL-T", "the BioViL-T text encoder (Hugging Face "
                                                     "microsoft/BiomedVLP-BioViL-T: config.json, pytorch_model.bin, "
                                                     "vocab.txt)"),
}
PART_FILES: dict[str, str] = {"unet": "config.json", "vae": "config.json", "text_encoder": "vocab.txt"}
WEIGHTS_HELP = ("RadEdit needs three parts in one folder: unet/ (microsoft/radedit), vae/ (stabilityai/sdxl-vae) "
                "and text_encoder/ (microsoft/BiomedVLP-BioViL-T); `cfbench weights fetch radedit` downloads all "
                "three into the Hugging Face cache (after accepting microsoft/radedit's terms).")


@dataclass(frozen=True)
class RadEditSettings(DiffusionOptions):
    """Sampling parameters (see the module docstring for meanings and defaults)."""

    steps: int = 100
    guidance: float = 7.5
    skip_ratio: float = 0.3
    paste_back: str = "released"
    keep_mask: str = "complement"
    keep_margin: float = 0.05
    prompt: str = "finding"
    posterior: str = "sample"
    pseudo_masks: str = "auto"
    unet: str = ""
    vae: str = ""
    text_encoder: str = ""

    choices: ClassVar[dict[str, tuple[str, ...]]] = {
        **DiffusionOptions.choices, "paste_back": ("released", "corrected"), "keep_mask": ("complement", "none"),
        "prompt": ("finding", "target_report"), "posterior": ("sample", "mode")}

    def check(self) -> None:
        super().check()
        if not 0.0 <= self.skip_ratio < 1.0:
            raise ValueError(f"skip_ratio must lie in [0, 1), got {self.skip_ratio}")
        if self.guidance < 0:
            raise ValueError(f"guidance must be >= 0, got {self.guidance}")
        if not 0.0 <= self.keep_margin < 1.0:
            raise ValueError(f"keep_margin must lie in [0, 1), got {self.keep_margin}")


def finding_prompt(operations: Sequence[Operation], fallback: str) -> str:
    """The operations as RadEdit's prompts phrase a finding ("Small left pleural effusion"; removals
    "No pleural effusion"), joined with ". "; ``fallback`` (the instruction) when there are none."""
    phrases = []
    for operation in operations:
        if operation.op == "remove":
            words = ["no", operation.finding]
        else:
            words = [operation.level_to or "", operation.location or "", operation.finding]
        text = " ".join(word for word in words if word)
        phrases.append(text[:1].upper() + text[1:])
    return ". ".join(phrases) if phrases else fallback


def radedit_scheduler():
    """The released scheduler: DDIM, linear betas 1e-4..0.02, trailing spacing, steps_offset 1, no clipping."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
                         timestep_spacing="trailing", steps_offset=1, clip_sample=False, prediction_type="epsilon")


def resolve_parts(folder: Path | None, settings: RadEditSettings) -> dict[str, Path]:
    """The folder of each part: the option's path, else ``folder/<part>``, else the release in the local
    Hugging Face cache; WeightsNotFoundError naming every part that is missing and where to get it."""
    from cfbench.core import hub

    found, missing = {}, []
    for part, (repo, how) in PARTS.items():
        given = getattr(settings, part)
        if hub.is_hub_spec(given):
            candidate = hub.resolve_hub_path(given)
        elif given:
            candidate = Path(given).expanduser()
        else:
            candidate = folder / part if folder is not None else None
            if candidate is None or not (candidate / PART_FILES[part]).is_file():
                candidate = hub.resolve_hub_path(hub.HubSpec(repo))
                if candidate is not None and part == "unet" and (candidate / "unet").is_dir():
                    candidate = candidate / "unet"
        if candidate is None or not (candidate / PART_FILES[part]).is_file():
            shown = candidate or (folder / part if folder is not None else Path(given or part))
            missing.append(MissingWeights(f"RadEdit part {part!r}: {how}", shown / PART_FILES[part],
                                          f"Download {repo} into {shown} (or `cfbench weights fetch radedit`), "
                                          f"or pass --option {part}=PATH."))
        else:
            found[part] = candidate
    if missing:
        raise WeightsNotFoundError(missing, footer=WEIGHTS_HELP)
    return found


@register
class RadEditModel(DiffusersFolderModel):
    name = "radedit"
    capabilities = Capabilities(edits_image=True, guidance_map=True)
    description = "RadEdit: edit-friendly DDPM inversion with edit and keep masks (UNet + SDXL VAE + BioViL-T)"
    weights_subdir = "radedit"
    weights_help = WEIGHTS_HELP
    hub_repos = tuple(repo for repo, _ in PARTS.values())
    settings_class = RadEditSettings

    @classmethod
    def load(cls, context: LoadContext) -> RadEditModel:
        import torch
        from diffusers import AutoencoderKL, UNet2DConditionModel

        from cfbench import diffusion
        from cfbench.diffusion.bert_text import load_cxr_bert

        settings = RadEditSettings.from_options(context.options)
        folder = None if all(getattr(settings, part) for part in PARTS) else resolve_model_path(cls, context.model_path)
        parts = resolve_parts(folder, settings)
        dtype = diffusion.resolve_dtype(settings.precision, context.device)
        device = torch.device(context.device)
        unet = UNet2DConditionModel.from_pretrained(parts["unet"], dtype=dtype, local_files_only=True)
        vae = AutoencoderKL.from_pretrained(parts["vae"], dtype=torch.float32, local_files_only=True)
        text_encoder, tokenizer = load_cxr_bert(parts["text_encoder"], dtype)
        for network in (unet, vae, text_encoder):
            network.to(device).eval().requires_grad_(False)
        components = diffusion.DiffusionComponents(
            unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=radedit_scheduler(),
            device=device, dtype=dtype, vae_dtype=torch.float32, text_attention_mask=True)
        diffusion.check_resolution(components, settings.native_resolution, parts["unet"])
        model = cls(components, settings, parts["unet"])
        model.parts = parts
        model.prepare(context)
        return model

    def prepare(self, context: LoadContext) -> None:
        dataset_root = context.dataset.root if context.dataset is not None else None
        self.pseudo_masks = load_pseudo_masks(self.settings.pseudo_masks, self.settings.native_resolution, dataset_root)

    def identity(self) -> dict[str, Any]:
        from cfbench import diffusion

        settings = self.settings
        return {"weights_sha256": {part: diffusion.weights_identity(path) for part, path in self.parts.items()},
                "paste_back": settings.paste_back, "keep_mask": settings.keep_mask, "posterior": settings.posterior,
                "pseudo_masks": getattr(self.pseudo_masks, "source", None)}

    # ----------------------------------------------------------------------------------- edit

    def prompt_for(self, request: EditRequest) -> str:
        if self.settings.prompt == "target_report":
            return text_prompt(request, "target_report", self.name)
        return finding_prompt(instruction_operations(request), request.instruction)

    def edit(self, requests: Sequence[EditRequest]) -> list[EditResult]:
        """Invert and edit a batch in one pass; each sample's posterior sample and forward noise come from
        its own seed, so results do not depend on the batch."""
        import torch

        from cfbench import diffusion

        if not requests:
            return []
        components, settings = self.components, self.settings
        side = settings.native_resolution
        images = diffusion.resize_images(torch.from_numpy(np.stack([r.image for r in requests])).float(), (side, side))
        latent_shape = (components.vae.config.latent_channels, side // components.vae_scale_factor,
                        side // components.vae_scale_factor)
        posterior_noise = None if settings.posterior == "mode" else diffusion.seeded_noise(
            [derive_seed(r.seed, "radedit-posterior") for r in requests], latent_shape, components.device)
        clean = diffusion.encode_images(components, images, posterior_noise) * components.latent_scaling
        forward_noise = diffusion.seeded_noise([derive_seed(r.seed, "radedit-forward") for r in requests],
                                               (settings.steps, *latent_shape), components.device)
        prompts = [self.prompt_for(request) for request in requests]
        null = diffusion.encode_text(components, [""] * len(requests))
        inversion_prompt = diffusion.GuidedText(null, null, 1.0, unconditional=True)
        inversion = diffusion.invert_edit_friendly(components, clean, forward_noise, inversion_prompt, settings.steps)
        edit_prompt = diffusion.GuidedText(diffusion.encode_text(components, prompts), null, settings.guidance)
        edit_mask, keep_mask = self.latent_masks(requests, latent_shape[1:])
        latents = diffusion.edit_from_inversion(
            components, inversion, edit_prompt, skip_steps=int(settings.skip_ratio * settings.steps),
            edit_mask=edit_mask, keep_mask=keep_mask, paste_back=settings.paste_back)
        decoded = diffusion.decode_latents(components, latents).cpu()
        guidance = diffusion.resize_images(edit_mask[:, 0].cpu(), requests[0].image.shape)
        results = []
        for index, (request, prompt) in enumerate(zip(requests, prompts)):
            image = diffusion.resize_images(decoded[index:index + 1], request.image.shape)[0]
            results.append(EditResult(
                image=image.clamp(0, 1).numpy().astype(np.float32),
                guidance_map=guidance[index].clamp(0, 1).numpy().astype(np.float32),
                info={"prompt": prompt, "paste_back": settings.paste_back,
                      "edit_fraction": float(edit_mask[index].mean())}, sample_id=request.sample_id))
        return results

    def latent_masks(self, requests: Sequence[EditRequest], latent_size: tuple[int, int]):
        """(edit, keep) masks, float32 ``B x 1 x h x w`` on the latent grid; keep is None with keep_mask=none."""
        import torch
        import torch.nn.functional as F

        pixel = []
        for request in requests:
            if request.region_mask is not None:
                mask = np.asarray(request.region_mask, dtype=bool)
            else:
                mask = self.pseudo_masks.mask_for(instruction_operations(request), resolution=request.image.shape[0],
                                                  instruction=request.instruction)
            pixel.append(torch.from_numpy(np.asarray(mask, dtype=np.float32)))
        edit = F.adaptive_max_pool2d(torch.stack(pixel)[:, None], latent_size).to(self.components.device)
        if self.settings.keep_mask == "none":
            return edit, None
        radius = int(np.ceil(self.settings.keep_margin * latent_size[0]))
        dilated = F.max_pool2d(edit, 2 * radius + 1, stride=1, padding=radius) if radius else edit
        return edit, 1.0 - dilated
