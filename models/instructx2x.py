"""InstructX2X (Region-Specific Editing on InstructPix2Pix) and its ablations.

Registry names (one class hierarchy; the variants differ only in which RSE parts they use):

- ``instructx2x``: full RSE, guidance map ``G = M * R`` (pseudo mask times relevance map);
- ``instructx2x-relevance-only``: ``G = R`` (no pseudo mask);
- ``instructx2x-mask-only``: ``G = M`` (no relevance pass);
- ``instructpix2pix``: no RSE at all (the papers' "wo RSE" row): the plain InstructPix2Pix loop.

Any InstructPix2Pix-format diffusers folder loads (the official InstructX2X checkpoint or another
InstructPix2Pix fine-tune). The sampling loop, guidance and VAE handling live in :mod:`cfbench.diffusion.components`,
the RSE maps in :mod:`cfbench.diffusion.rse`; this module only wires them to the benchmark's request/result contract.

Options (``--option key=value``), defaults from the paper / official inference code (``inference/rse_x2x.py``
of hgminn/InstructX2X):

===================  =========  ========================================================================
option               default    meaning
===================  =========  ========================================================================
steps                100        DDIM steps
text_guidance        7.5        s_T, text classifier-free guidance scale
image_guidance       1.5        s_I, image classifier-free guidance scale
t_rel                0.8        relevance timestep as a fraction of the training timesteps (0.8 -> t = 800)
iqr_factor           1.5        relevance clipped at Q3 + iqr_factor * IQR
quartiles            midpoint   how Q1 and Q3 are taken: "midpoint" (as the release's
                                ``np.percentile(..., interpolation="midpoint")``) or "linear" (NumPy's default)
tau                  0.1        binary edit mask threshold on the guidance map (G >= tau)
pseudo_masks         auto       "auto" (the dataset's ``pseudo_masks.npz``, e.g. MS-CXR boxes written by
                                ``cfbench data build mimic --ms-cxr``, else NIH), "nih" (NIH ChestX-ray14
                                boxes shipped with torchxrayvision) or a file from ``cfbench masks build`` or
                                ``cfbench masks import-instructx2x`` (the release's own masks and matching)
relevance_noise      fresh      noise of the relevance pass: "fresh" (its own draw, as the release) or
                                "shared" (the sampling noise)
start_latents        sample     "sample" (as the release: the loop starts from one VAE posterior sample and
                                the relevance pass and the background replacement use another) or "mode"
                                (the posterior mode for both)
native_resolution    512        side in pixels the networks run at (inputs are resized, outputs resized back)
precision            auto       auto: on CUDA the release's policy (UNet and VAE weights in fp32 run under
                                fp16 autocast, text encoder in fp16), fp32 on the CPU; fp32, fp16 or bf16:
                                every network in that dtype, no autocast
latent_mask          official   latent-grid edit mask: "official" = (M downsampled) * R_latent >= tau, as the
                                official code; "max-pool" = a latent cell is editable when any pixel is
background_timestep  current    noise level of the replaced background after each step: "current" (the
                                step's starting timestep, as the official code) or "next" (its new timestep)
===================  =========  ========================================================================

Every random draw comes from the request's seed (the release draws from the global RNG): the sampling
noise from ``seed``, the relevance noise and the two posterior samples from seeds derived from it, so a
sample's result does not depend on its batch. ``relevance_noise=shared`` and ``start_latents=mode`` are
cfbench's earlier behaviour, kept as options because they lower the variance between seeds (the relevance
map and the starting point then no longer carry noise of their own), which helps when comparing ablations
on few samples; they are not what the paper's numbers were made with. The release selects pseudo masks by
substring match of its 31 finding names in the instruction text; import them with ``cfbench masks
import-instructx2x`` to get that (cfbench's own masks match parsed findings and locations instead).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from cfbench.api.model import (
    Capabilities,
    EditRequest,
    EditResult,
    LoadContext,
)
from cfbench.api.registry import register
from cfbench.core.findings import Operation, parse_instruction
from cfbench.models.diffusers_folder import DiffusersFolderModel, DiffusionOptions

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from cfbench.diffusion import DiffusionComponents, InstructPix2PixConditioning

# torch, diffusers and the modules built on them (cfbench.diffusion.components, cfbench.diffusion.rse) are imported inside the
# methods that run the networks, so that registering these models (e.g. for `cfbench models`) stays cheap.

WEIGHTS_HELP = (
    "Download the InstructX2X checkpoint (diffusers format, linked from https://github.com/hgminn/InstructX2X) "
    "and unpack it so that the folder holds model_index.json, unet/, vae/, text_encoder/, tokenizer/ and "
    "scheduler/; any InstructPix2Pix-format diffusers folder (e.g. a save_pretrained of timbrooks/instruct-pix2pix "
    "or of a fine-tune) works too."
)


# cfbench's InstructX2X trained on its phantom suite (`cfbench phantom train-generator`): the default weights of
# instructx2x, its ablations and instructpix2pix on phantom splits (see cfbench/data/phantom_instructx2x/).
PHANTOM_CHECKPOINT = "phantom_instructx2x"


@dataclass(frozen=True)
class InstructX2XSettings(DiffusionOptions):
    """Sampling and RSE parameters (see the module docstring for meanings and defaults)."""

    steps: int = 100
    text_guidance: float = 7.5
    image_guidance: float = 1.5
    t_rel: float = 0.8
    iqr_factor: float = 1.5
    quartiles: str = "midpoint"
    tau: float = 0.1
    pseudo_masks: str = "auto"
    relevance_noise: str = "fresh"
    start_latents: str = "sample"
    latent_mask: str = "official"
    background_timestep: str = "current"

    choices: ClassVar[dict[str, tuple[str, ...]]] = {
        **DiffusionOptions.choices, "latent_mask": ("official", "max-pool"), "background_timestep": ("current", "next"),
        "quartiles": ("midpoint", "linear"), "relevance_noise": ("fresh", "shared"), "start_latents": ("sample", "mode")}

    def check(self) -> None:
        super().check()
        if not 0.0 < self.t_rel <= 1.0:
            raise ValueError(f"t_rel must lie in (0, 1], got {self.t_rel}")


def load_pseudo_masks(source: str, size: int, dataset_root: Path | None = None):
    """The pseudo masks named by the ``pseudo_masks`` option: "auto", "nih" or a saved PseudoMasks file."""
    from cfbench.datasets.pseudo_masks import PseudoMasks, default_pseudo_masks, nih_pseudo_masks

    if source == "auto":
        return default_pseudo_masks(dataset_root, size)
    if source == "nih":
        return nih_pseudo_masks(resolution=size)
    path = Path(source).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"pseudo mask file {path} not found (option pseudo_masks); "
                                "build one with `cfbench masks build` or use pseudo_masks=nih")
    return PseudoMasks.load(path)


def instruction_operations(request: EditRequest) -> list[Operation]:
    """The request's parsed operations, else the instruction parsed here; [] for free text that does not
    follow the instruction grammar (so no finding is named and the whole image may be edited)."""
    if request.operations:
        return list(request.operations)
    try:
        return parse_instruction(request.instruction)
    except ValueError:
        return []


class InstructPix2PixFamily(DiffusersFolderModel):
    """InstructPix2Pix sampling with optional Region-Specific Editing; subclasses choose the RSE parts.

    uses_relevance: multiply the guidance map by the relevance map R (one extra two-branch UNet call).
    uses_pseudo_mask: multiply the guidance map by the pseudo mask M of the instruction's findings
        (or by the request's ``region_mask`` when given).
    With neither, there is no guidance map, no edit mask and no composite: plain InstructPix2Pix.
    """

    uses_relevance: ClassVar[bool] = False
    uses_pseudo_mask: ClassVar[bool] = False
    weights_subdir = "instructx2x"
    weights_help = WEIGHTS_HELP
    settings_class = InstructX2XSettings
    # 2: the release's behaviour by default (fresh relevance noise, posterior-sample start, midpoint
    # quartiles, the release's CUDA precision policy); version 1 runs (shared noise, mode, linear) never mix.
    adapter_version = 2
    pipeline_class = "StableDiffusionInstructPix2PixPipeline"
    unet_in_channels = 8

    def __init__(self, components: DiffusionComponents, settings: InstructX2XSettings,
                 weights_folder: Path, pseudo_masks=None):
        super().__init__(components, settings, weights_folder)
        self.pseudo_masks = pseudo_masks
        self.autocast = False  # the release's policy: UNet and VAE calls under fp16 autocast (CUDA only)

    @classmethod
    def uses_rse(cls) -> bool:
        return cls.uses_relevance or cls.uses_pseudo_mask

    @staticmethod
    def release_precision(settings: InstructX2XSettings, device) -> bool:
        """Whether the release's precision policy applies: ``precision=auto`` on a CUDA device."""
        import torch

        return settings.precision == "auto" and torch.device(device).type == "cuda"

    @classmethod
    def weights_dtype(cls, settings: InstructX2XSettings, device):
        """float32 under the release's policy (its UNet and VAE are cast to float32 after an fp16 load),
        else the ``precision`` option's dtype."""
        import torch

        return torch.float32 if cls.release_precision(settings, device) else super().weights_dtype(settings, device)

    def prepare(self, context: LoadContext) -> None:
        """The release's precision policy (text encoder in fp16, autocast on), and the pseudo masks of the
        ``pseudo_masks`` option (variants that use them)."""
        import torch

        if self.release_precision(self.settings, self.components.device):
            self.components.text_encoder.to(torch.float16)
            self.autocast = True
        if self.uses_pseudo_mask:
            dataset_root = context.dataset.root if context.dataset is not None else None
            self.pseudo_masks = load_pseudo_masks(self.settings.pseudo_masks, self.settings.native_resolution, dataset_root)

    def precision_policy(self) -> str:
        """What the networks run in, in words (recorded in the identity)."""
        if self.autocast:
            return "release: UNet and VAE float32 under fp16 autocast, text encoder float16"
        return f"all networks {str(self.components.dtype).removeprefix('torch.')}"

    def identity_extra(self) -> dict[str, Any]:
        return {"pseudo_masks": getattr(self.pseudo_masks, "source", None),
                "rse": {"relevance": self.uses_relevance, "pseudo_mask": self.uses_pseudo_mask},
                "precision_policy": self.precision_policy()}

    def prompt_text(self, request: EditRequest) -> str:
        """The text the UNet is conditioned on: the instruction (BiomedJourney overrides it)."""
        return request.instruction

    # ----------------------------------------------------------------------------------- edit

    def edit(self, requests: Sequence[EditRequest]) -> list[EditResult]:
        """Edit a batch in one pass: every UNet call sees all images of the batch (3 branches each).

        Each sample's noise comes from its own generator seeded with ``request.seed``, so a sample's
        result does not depend on the batch it is in (up to floating-point reduction order)."""
        import torch

        from cfbench import diffusion
        from cfbench.diffusion import rse

        if not requests:
            return []
        components, settings = self.components, self.settings
        inputs = torch.from_numpy(np.stack([request.image for request in requests])).float()
        output_size = tuple(inputs.shape[-2:])
        prompts = [self.prompt_text(request) for request in requests]
        # text encoding outside autocast, as the release (its fp16 text encoder runs in fp16)
        text_embeddings = diffusion.encode_text(components, prompts)
        null_embeddings = diffusion.encode_text(components, [""] * len(requests))
        with self.autocast_context():
            model_images = diffusion.resize_images(inputs, (settings.native_resolution, settings.native_resolution))
            mean, std = diffusion.posterior_moments(components, model_images)
            latent_shape = tuple(mean.shape[1:])
            source_latents = start_latents = mean * components.latent_scaling
            if settings.start_latents == "sample":
                start_latents = self._posterior_sample(requests, "start-posterior", mean, std)
                source_latents = self._posterior_sample(requests, "source-posterior", mean, std)
            conditioning = diffusion.InstructPix2PixConditioning(
                image_latents=mean, text_embeddings=text_embeddings, null_embeddings=null_embeddings)
            noise = diffusion.seeded_noise([request.seed for request in requests], latent_shape, components.device)
            relevance_noise = noise
            if settings.relevance_noise == "fresh":
                relevance_noise = self._derived_noise(requests, "relevance-noise", latent_shape)

            guidance, latent_guidance = self.guidance_maps(requests, source_latents, relevance_noise, conditioning,
                                                           output_size)
            edit_mask = None if guidance is None else rse.binary_edit_mask(guidance, settings.tau)
            latent_mask = None
            if edit_mask is not None and settings.latent_mask == "official":
                latent_mask = rse.binary_edit_mask(latent_guidance, settings.tau)[:, None].float().to(components.device)
            elif edit_mask is not None:
                latent_mask = rse.mask_on_latent_grid(edit_mask, source_latents.shape[-2:]).to(components.device)

            latents = diffusion.edit_with_instruct_pix2pix(
                components, source_latents, noise, conditioning, settings.steps,
                settings.text_guidance, settings.image_guidance, edit_mask=latent_mask,
                background_timestep=settings.background_timestep, start_latents=start_latents,
            )
            decoded = diffusion.decode_latents(components, latents).float().cpu()
        generated = diffusion.resize_images(decoded, output_size)
        if edit_mask is not None:  # pixels outside the edit mask are the input's, exactly
            generated = torch.where(edit_mask.cpu(), generated, inputs)
        return [self._result(index, generated, guidance, edit_mask, request.sample_id)
                for index, request in enumerate(requests)]

    def autocast_context(self):
        """fp16 autocast on CUDA under the release's precision policy, else nothing."""
        import contextlib

        import torch

        return torch.autocast("cuda", dtype=torch.float16) if self.autocast else contextlib.nullcontext()

    def _derived_noise(self, requests: Sequence[EditRequest], purpose: str, latent_shape: tuple[int, ...]):
        """Standard normal latents-shaped noise per request, from a seed derived from its seed and ``purpose``."""
        from cfbench import diffusion
        from cfbench.core.seeds import derive_seed

        return diffusion.seeded_noise([derive_seed(request.seed, purpose) for request in requests],
                                      latent_shape, self.components.device)

    def _posterior_sample(self, requests: Sequence[EditRequest], purpose: str, mean, std):
        """Scaled latents of one VAE posterior sample per request (``mean + std * noise``), seeded per request."""
        noise = self._derived_noise(requests, purpose, tuple(mean.shape[1:]))
        return (mean + std * noise) * self.components.latent_scaling

    def _result(self, index: int, generated: torch.Tensor, guidance: torch.Tensor | None,
                edit_mask: torch.Tensor | None, sample_id: str) -> EditResult:
        info: dict[str, Any] = {"steps": self.settings.steps, "text_guidance": self.settings.text_guidance,
                                "image_guidance": self.settings.image_guidance}
        if edit_mask is not None:
            info["edit_fraction"] = float(edit_mask[index].float().mean())
        return EditResult(
            image=generated[index].numpy().astype(np.float32),
            guidance_map=None if guidance is None else guidance[index].cpu().numpy().astype(np.float32),
            info=info,
            sample_id=sample_id,
        )

    # ----------------------------------------------------------------------------------- RSE

    def guidance_maps(self, requests: Sequence[EditRequest], source_latents: torch.Tensor, noise: torch.Tensor,
                      conditioning: InstructPix2PixConditioning,
                      output_size: tuple[int, int]) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The guidance maps G = M * R, float32 in [0, 1] on the CPU: at the requests' size (``B x H x W``)
        and on the latent grid (``B x h x w``: M downsampled bilinearly times the latent-grid R); (None,
        None) without RSE."""
        import torch

        from cfbench.diffusion import rse

        if not self.uses_rse():
            return None, None
        latent_size = tuple(source_latents.shape[-2:])
        region = torch.ones((len(requests), *output_size))
        if self.uses_pseudo_mask:
            region = self.region_masks(requests, output_size)
        latent_relevance = torch.ones((len(requests), *latent_size))
        if self.uses_relevance:
            latent_relevance = self.relevance_maps(source_latents, noise, conditioning)
        pixel_relevance = rse.resize_maps(latent_relevance, output_size)
        return (rse.guidance_map(region, pixel_relevance),
                rse.guidance_map(rse.resize_maps(region.float(), latent_size), latent_relevance))

    def relevance_maps(self, source_latents: torch.Tensor, noise: torch.Tensor,
                       conditioning: InstructPix2PixConditioning) -> torch.Tensor:
        """R on the latent grid, float32 ``B x h x w`` in [0, 1] (CPU): one two-branch UNet pass on the source
        latents noised to ``t_rel`` with ``noise`` (the relevance noise: its own seeded draw, or the sampling
        noise with ``relevance_noise=shared``). Upsample with :func:`cfbench.diffusion.rse.resize_maps` for the
        image-size map."""
        from cfbench import diffusion
        from cfbench.diffusion import rse

        components = self.components
        timestep = min(round(self.settings.t_rel * components.scheduler.config.num_train_timesteps),
                       components.scheduler.config.num_train_timesteps - 1)
        noised = diffusion.noise_to_timestep(components, source_latents, noise, timestep)
        with_text, image_only = diffusion.predict_text_and_image_noise(components, noised, timestep, conditioning)
        return rse.normalised_relevance(with_text.cpu(), image_only.cpu(), self.settings.iqr_factor,
                                        self.settings.quartiles)

    def region_masks(self, requests: Sequence[EditRequest], output_size: tuple[int, int]) -> torch.Tensor:
        """M per request, bool ``B x H x W``: the user's ``region_mask`` when given, else the pseudo mask of
        the findings (and locations) the instruction names, or of the names it contains with the release's
        masks (``matching="substring"``); the whole image when it names no known finding."""
        import torch

        height, width = output_size
        masks = []
        for request in requests:
            if request.region_mask is not None:
                mask = np.asarray(request.region_mask, dtype=bool)
            else:
                mask = self.pseudo_masks.mask_for(instruction_operations(request), resolution=height,
                                                  instruction=request.instruction)
            if mask.shape != (height, width):
                raise ValueError(f"sample {request.sample_id!r}: region mask has shape {mask.shape}, "
                                 f"expected {(height, width)} (the image's)")
            masks.append(torch.from_numpy(np.array(mask, dtype=bool)))
        return torch.stack(masks)


@register
class InstructX2XModel(InstructPix2PixFamily):
    phantom_weights = PHANTOM_CHECKPOINT
    name = "instructx2x"
    uses_relevance = True
    uses_pseudo_mask = True
    capabilities = Capabilities(edits_image=True, guidance_map=True)
    description = "InstructX2X: InstructPix2Pix + Region-Specific Editing (pseudo mask x relevance map)"


@register
class InstructX2XRelevanceOnlyModel(InstructPix2PixFamily):
    phantom_weights = PHANTOM_CHECKPOINT
    name = "instructx2x-relevance-only"
    uses_relevance = True
    capabilities = Capabilities(edits_image=True, guidance_map=True)
    description = "InstructX2X ablation: RSE with the relevance map only (no pseudo mask)"


@register
class InstructX2XMaskOnlyModel(InstructPix2PixFamily):
    phantom_weights = PHANTOM_CHECKPOINT
    name = "instructx2x-mask-only"
    uses_pseudo_mask = True
    capabilities = Capabilities(edits_image=True, guidance_map=True)
    description = "InstructX2X ablation: RSE with the pseudo mask only (no relevance map)"


@register
class InstructPix2PixModel(InstructPix2PixFamily):
    phantom_weights = PHANTOM_CHECKPOINT
    name = "instructpix2pix"
    capabilities = Capabilities(edits_image=True, guidance_map=False)
    description = "InstructPix2Pix sampling without RSE (InstructX2X 'wo RSE' row); any InstructPix2Pix folder"
