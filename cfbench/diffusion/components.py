"""The parts every diffusion adapter shares (InstructX2X, PIE, RoentGen and later ones).

- loading a diffusers pipeline folder from a local path (:func:`load_diffusion_components`), with
  the DDIM scheduler the benchmark samples with; the weights identity of a folder;
- the precision policy (:func:`resolve_dtype`);
- VAE encode/decode of grayscale images: float32 ``B x H x W`` in [0, 1] <-> latents
  (the gray image is replicated to 3 channels and mapped to [-1, 1]);
- text encoding, per-sample seeded noise;
- one UNet call for several guidance branches, and the forward (noising) process.

The pipelines built from these parts are :mod:`cfbench.diffusion.instruct_pix2pix` and
:mod:`cfbench.diffusion.text_to_image`. diffusers and transformers are imported inside the functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cfbench.core.errors import WeightsFolderError
from cfbench.core.hashing import folder_sha256
from cfbench.core.precision import PRECISIONS  # noqa: F401  (re-exported: diffusion.PRECISIONS)
from cfbench.core.precision import resolve_dtype as precision_dtype
from cfbench.core.resize import resize_batch



# --------------------------------------------------------------------------------------------- loading

@dataclass
class DiffusionComponents:
    """The parts of a Stable-Diffusion-style pipeline the sampling loops use.

    scheduler: a ``DDIMScheduler`` built from the folder's scheduler config (shared state: the loops
        call ``set_timesteps`` on it before each batch).
    dtype: the dtype of the networks' weights; latents and scheduler arithmetic stay float32.
    vae_dtype: the VAE's dtype when it differs from ``dtype`` (RadEdit's SDXL VAE stays float32 because its
        fp16 decode overflows); None = ``dtype``.
    text_attention_mask: pass the tokenizer's attention mask to the text encoder (BERT-style encoders such
        as CXR-BERT need it; Stable Diffusion's CLIP is called without one, as its pipelines do).
    """

    unet: Any
    vae: Any
    text_encoder: Any
    tokenizer: Any
    scheduler: Any
    device: torch.device
    dtype: torch.dtype
    vae_dtype: torch.dtype | None = None
    text_attention_mask: bool = False

    @property
    def vae_network_dtype(self) -> torch.dtype:
        """The dtype images and latents are cast to for the VAE."""
        return self.vae_dtype or self.dtype

    @property
    def vae_scale_factor(self) -> int:
        """Image pixels per latent pixel (8 for Stable Diffusion)."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def native_resolution(self) -> int:
        """The image side the folder's UNet was configured for: its latent ``sample_size`` times the VAE
        factor (512 for Stable Diffusion and InstructPix2Pix)."""
        size = self.unet.config.sample_size
        return int(size if isinstance(size, int) else size[0]) * self.vae_scale_factor

    @property
    def image_size_multiple(self) -> int:
        """Image sides must be multiples of this: the VAE's factor times the UNet's downsampling (64 for SD)."""
        return self.vae_scale_factor * 2 ** (len(self.unet.config.block_out_channels) - 1)

    @property
    def latent_scaling(self) -> float:
        """The factor between VAE posterior latents and the latents the UNet denoises (0.18215 for SD)."""
        return float(self.vae.config.scaling_factor)


def resolve_dtype(precision: str, device: str | torch.device) -> torch.dtype:
    """The weights dtype for a precision option: "auto" -> float16 on CUDA, float32 elsewhere;
    "fp32" / "fp16" / "bf16" as named (:func:`cfbench.core.precision.resolve_dtype`)."""
    return precision_dtype(precision, device, cuda_auto="fp16")


def load_diffusion_components(
    folder: str | Path,
    pipeline_class_name: str,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    expected_unet_in_channels: int | None = None,
    scheduler: str = "ddim",
) -> DiffusionComponents:
    """Load a diffusers pipeline folder (``model_index.json`` + component folders) from a local path.

    pipeline_class_name: the diffusers class the folder was saved from, e.g.
        ``"StableDiffusionInstructPix2PixPipeline"`` or ``"StableDiffusionPipeline"``.
    expected_unet_in_channels: 8 for InstructPix2Pix (noisy latents + image latents), 4 for text-to-image;
        a mismatch raises ValueError naming the folder.
    scheduler: "ddim" (the folder's noise schedule with Stable Diffusion's DDIM settings, see
        :func:`latent_ddim_scheduler`) or "folder" (the scheduler class and config saved in the folder, as
        the pipeline's own ``__call__`` would use).
    No network access: ``local_files_only``; the safety checker is never loaded.
    """
    if scheduler not in ("ddim", "folder"):
        raise ValueError(f"scheduler must be 'ddim' or 'folder', got {scheduler!r}")
    folder = Path(folder)
    if not (folder / "model_index.json").is_file():
        raise FileNotFoundError(
            f"{folder} is not a diffusers pipeline folder (no model_index.json). Expected the layout written by "
            f"{pipeline_class_name}.save_pretrained: model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/."
        )
    check_model_index(folder)  # before diffusers reads it: only known libraries and classes
    import diffusers

    pipeline_class = getattr(diffusers, pipeline_class_name)
    try:
        pipeline = pipeline_class.from_pretrained(
            folder, dtype=dtype, local_files_only=True, safety_checker=None, requires_safety_checker=False,
        )
    except (ValueError, RuntimeError) as error:
        named = wrong_shape_error(folder, error)
        if named is None:
            raise
        raise named from error
    in_channels = pipeline.unet.config.in_channels
    if expected_unet_in_channels is not None and in_channels != expected_unet_in_channels:
        raise ValueError(
            f"{folder}: the UNet takes {in_channels} input channels, expected {expected_unet_in_channels} "
            f"for {pipeline_class_name}"
        )
    device = torch.device(device)
    for network in (pipeline.unet, pipeline.vae, pipeline.text_encoder):
        network.to(device).eval().requires_grad_(False)
    return DiffusionComponents(
        unet=pipeline.unet,
        vae=pipeline.vae,
        text_encoder=pipeline.text_encoder,
        tokenizer=pipeline.tokenizer,
        scheduler=latent_ddim_scheduler(pipeline.scheduler.config) if scheduler == "ddim" else pipeline.scheduler,
        device=device,
        dtype=dtype,
    )


KNOWN_COMPONENT_CLASSES: dict[str, frozenset[str]] = {
    "diffusers": frozenset({"UNet2DConditionModel", "AutoencoderKL", "AutoencoderTiny", "VQModel"}),
    "transformers": frozenset({"CLIPTextModel", "CLIPTextModelWithProjection", "CLIPTokenizer", "CLIPTokenizerFast",
                               "CLIPImageProcessor", "CLIPFeatureExtractor", "CLIPVisionModelWithProjection",
                               "BertModel", "BertTokenizer", "BertTokenizerFast", "T5EncoderModel", "T5Tokenizer",
                               "T5TokenizerFast"}),
    "stable_diffusion": frozenset({"StableDiffusionSafetyChecker"}),  # diffusers' own module; never loaded here
}
"""The (library, class) pairs a pipeline folder's ``model_index.json`` may name; diffusers schedulers
(``*Scheduler`` classes of the diffusers library) are known too."""


class PipelineFolderError(WeightsFolderError):
    """A diffusers pipeline folder cfbench refuses to load (see :func:`check_model_index`, :func:`wrong_shape_error`)."""


def check_model_index(folder: str | Path) -> dict:
    """The folder's ``model_index.json``, checked before anything it names is imported: every component is
    ``[null, null]`` or a (library, class) of :data:`KNOWN_COMPONENT_CLASSES` (or a diffusers ``*Scheduler``).
    PipelineFolderError naming the file, the component and what it names otherwise."""
    import json
    import re

    path = Path(folder) / "model_index.json"
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise PipelineFolderError(f"{path} cannot be read as JSON: {error}") from None
    if not isinstance(index, dict):
        raise PipelineFolderError(f"{path} is not a JSON object")
    for name, entry in index.items():
        if name.startswith("_") or not isinstance(entry, list):
            continue  # _class_name, _diffusers_version, and plain settings such as requires_safety_checker
        if entry == [None, None]:
            continue
        library, class_name = entry if len(entry) == 2 else (None, None)
        known = (isinstance(library, str) and isinstance(class_name, str)
                 and (class_name in KNOWN_COMPONENT_CLASSES.get(library, ())
                      or (library == "diffusers" and re.fullmatch(r"[A-Za-z0-9]+Scheduler", class_name))))
        if not known:
            raise PipelineFolderError(
                f"{path}: component {name!r} names {entry!r}, which cfbench does not load (known: diffusers UNet, "
                "VAE and schedulers, transformers CLIP/BERT/T5 text models and tokenizers); nothing was imported. "
                "Use a pipeline folder written by diffusers' save_pretrained")
    return index


def wrong_shape_error(folder: Path, error: BaseException) -> PipelineFolderError | None:
    """diffusers' "Cannot load because NAME expected shape A, but got B" (which names no file) as one line
    naming the weights file that holds tensor NAME; None for any other error."""
    import re

    match = re.search(r"because (?P<name>\S+) expected shape (?P<expected>.+?), but got (?P<got>.+?)\.(?:\s|$)",
                      str(error))
    if match is None:
        return None
    from safetensors import safe_open

    holder = None
    for path in sorted(Path(folder).glob("*/*.safetensors")):
        try:
            with safe_open(str(path), framework="pt") as weights:
                if match["name"] in weights.keys():
                    holder = path
                    break
        except Exception:  # noqa: BLE001 -- an unreadable file is not the one we look for
            continue
    where = str(holder) if holder else f"a weights file under {folder}"
    return PipelineFolderError(f"{where}: tensor {match['name']} has shape {match['got']}, the network's config "
                               f"expects {match['expected']}: these weights do not belong to this configuration; "
                               "re-download or re-convert the folder")


COMPONENT_CONFIGS: tuple[str, ...] = ("unet/config.json", "vae/config.json", "text_encoder/config.json",
                                      "scheduler/scheduler_config.json")


def missing_pipeline_parts(folder: Path,
                           parts: tuple[str, ...] = ("model_index.json", *COMPONENT_CONFIGS)) -> list[str]:
    """The files of ``parts`` and the ``tokenizer/`` folder that a pipeline folder lacks ([] when complete)."""
    missing = [name for name in parts if not (folder / name).is_file()]
    return missing + ([] if (folder / "tokenizer").is_dir() else ["tokenizer/"])


def check_resolution(components: DiffusionComponents, resolution: int, folder: str | Path) -> None:
    """ValueError unless the networks in ``folder`` can run at ``resolution`` (a multiple of
    :attr:`DiffusionComponents.image_size_multiple`)."""
    if resolution % components.image_size_multiple:
        raise ValueError(f"option native_resolution={resolution} must be a multiple of "
                         f"{components.image_size_multiple} for the networks in {folder}")


def latent_ddim_scheduler(config: dict) -> Any:
    """A DDIM scheduler with the folder's noise schedule (betas, timestep spacing, offset) and Stable
    Diffusion v1's DDIM settings: no clipping of the predicted sample (latents are not confined to [-1, 1];
    InstructPix2Pix folders ship an Euler config without the key, where DDIM would default to clipping)
    and the final step to alpha_bar of timestep 0 (``set_alpha_to_one=False``)."""
    import diffusers

    return diffusers.DDIMScheduler.from_config(config, clip_sample=False, set_alpha_to_one=False)


def weights_identity(folder: str | Path) -> dict[str, str]:
    """SHA-256 of every weights file under a pipeline folder, keyed by relative path (cached beside
    the files, see :func:`cfbench.core.hashing.cached_sha256`)."""
    return folder_sha256(folder)


# --------------------------------------------------------------------------------------------- images

def resize_images(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize float ``B x H x W`` images in [0, 1] to ``B x size[0] x size[1]`` (antialiased bilinear,
    :func:`cfbench.core.resize.resize_batch`); images already at that size are returned as they are."""
    return resize_batch(images, size, antialias=True)


@torch.no_grad()
def posterior_moments(components: DiffusionComponents, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The VAE posterior of images: (mean, standard deviation), float32 ``B x 4 x H/f x W/f`` unscaled.

    images: float ``B x H x W`` grayscale (replicated to 3 channels) or ``B x 3 x H x W`` RGB, in [0, 1]
    (H, W divisible by the VAE scale factor). The posterior mode is its mean.
    """
    pixels = images.to(device=components.device, dtype=torch.float32)
    rgb = pixels[:, None].expand(-1, 3, -1, -1) if pixels.dim() == 3 else pixels
    posterior = components.vae.encode((rgb * 2.0 - 1.0).to(components.vae_network_dtype)).latent_dist
    return posterior.mean.float(), posterior.std.float()


def encode_images(components: DiffusionComponents, images: torch.Tensor,
                  sample_noise: torch.Tensor | None = None) -> torch.Tensor:
    """VAE posterior mode of images, or a posterior sample ``mean + std * sample_noise``.

    images: float ``B x H x W`` grayscale or ``B x 3 x H x W`` RGB in [0, 1] (see :func:`posterior_moments`).
    sample_noise: None (the mode), or float32 standard normal noise of the latents' shape (per-sample
        seeded, see :func:`seeded_noise`).
    Returns float32 ``B x 4 x H/f x W/f`` *unscaled* latents (what InstructPix2Pix conditions on);
    multiply by ``components.latent_scaling`` for the latents the UNet denoises.
    """
    mean, std = posterior_moments(components, images)
    if sample_noise is None:
        return mean
    return mean + std * sample_noise.to(mean.device)


@torch.no_grad()
def decode_latents_rgb(components: DiffusionComponents, latents: torch.Tensor) -> torch.Tensor:
    """Denoised (scaled) latents -> float32 ``B x 3 x H x W`` RGB images in [0, 1] (the VAE's output clipped)."""
    unscaled = (latents / components.latent_scaling).to(components.vae_network_dtype)
    rgb = components.vae.decode(unscaled).sample.float()
    return (rgb.clamp(-1.0, 1.0) + 1.0) / 2.0


def decode_latents(components: DiffusionComponents, latents: torch.Tensor) -> torch.Tensor:
    """Denoised (scaled) latents -> float32 ``B x H x W`` grayscale images in [0, 1] (mean of the 3 channels)."""
    return decode_latents_rgb(components, latents).mean(dim=1)


# --------------------------------------------------------------------------------------------- text, noise

@torch.no_grad()
def encode_text(components: DiffusionComponents, prompts: Sequence[str], length: int | None = None) -> torch.Tensor:
    """Text encoder last hidden states of prompts, padded/truncated to ``length`` tokens (default: the
    tokenizer's maximum length; 77 for CLIP, 128 for CXR-BERT). The attention mask is passed when
    ``components.text_attention_mask`` is set.

    Returns ``B x L x D`` in the networks' dtype, on their device.
    """
    tokens = components.tokenizer(
        list(prompts), padding="max_length", max_length=length or components.tokenizer.model_max_length,
        truncation=True, return_tensors="pt",
    )
    if components.text_attention_mask:
        hidden = components.text_encoder(tokens.input_ids.to(components.device),
                                         attention_mask=tokens.attention_mask.to(components.device))[0]
    else:
        hidden = components.text_encoder(tokens.input_ids.to(components.device))[0]
    return hidden.to(components.dtype)


def seeded_noise(seeds: Sequence[int], latent_shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """Standard normal noise, one ``latent_shape`` draw per seed from its own CPU ``torch.Generator``.

    Drawing on the CPU makes the noise identical on every device, and per-seed generators make a
    sample's noise independent of the batch it is in. Returns float32 ``B x *latent_shape`` on ``device``.
    """
    draws = [torch.randn(latent_shape, generator=torch.Generator("cpu").manual_seed(int(seed)), dtype=torch.float32)
             for seed in seeds]
    return torch.stack(draws).to(device)


# --------------------------------------------------------------------------------------------- UNet, forward process

def predict_noise_branches(
    components: DiffusionComponents,
    latents: torch.Tensor,
    timestep: torch.Tensor | int,
    branch_image_latents: Sequence[torch.Tensor] | None,
    branch_embeddings: Sequence[torch.Tensor],
) -> list[torch.Tensor]:
    """One UNet call for several conditioning branches of the same noisy latents.

    Each branch i sees ``cat([latents, branch_image_latents[i]], channel)`` (just ``latents`` when
    ``branch_image_latents`` is None: text-to-image UNets) and ``branch_embeddings[i]``; the branches are
    stacked along the batch. Returns one float32 ``B x 4 x h x w`` prediction per branch.
    """
    branches = len(branch_embeddings)
    if branch_image_latents is None:
        model_input = torch.cat([latents] * branches)
    else:
        model_input = torch.cat([torch.cat([latents, image], dim=1) for image in branch_image_latents])
    embeddings = torch.cat(list(branch_embeddings))
    prediction = components.unet(
        model_input.to(components.dtype), timestep, encoder_hidden_states=embeddings, return_dict=False,
    )[0]
    return list(prediction.float().chunk(branches))


def noise_to_timestep(components: DiffusionComponents, clean: torch.Tensor, noise: torch.Tensor,
                      timestep: int) -> torch.Tensor:
    """``sqrt(abar_t) * clean + sqrt(1 - abar_t) * noise`` (the forward process), float32."""
    return components.scheduler.add_noise(clean, noise, torch.tensor([int(timestep)]))
