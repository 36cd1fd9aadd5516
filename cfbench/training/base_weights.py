"""Starting weights for InstructX2X training: an InstructPix2Pix folder, or a Stable Diffusion folder.

Both are diffusers pipeline folders (``model_index.json``, ``unet/``, ``vae/``, ``text_encoder/``,
``tokenizer/``, ``scheduler/``). An InstructPix2Pix UNet has 8 input channels (4 noisy latent channels,
then 4 channels of the conditioning image's latents) and is used as it is. A Stable Diffusion UNet has 4;
its first convolution is widened to 8 input channels, the 4 new ones zero-initialised, so the widened
UNet computes exactly what the Stable Diffusion UNet computed, whatever the conditioning image, until
training moves those weights (the InstructPix2Pix recipe).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from cfbench.diffusion.components import missing_pipeline_parts

LATENT_CHANNELS = 4
INSTRUCT_PIX2PIX_IN_CHANNELS = 2 * LATENT_CHANNELS


class BaseModelError(ValueError):
    """The base folder is not a usable diffusers Stable Diffusion / InstructPix2Pix folder."""


@dataclass
class BaseComponents:
    """The networks and helpers of a base folder, with ``unet`` already 8-channel.

    kind: "instruct-pix2pix" (loaded as is) or "stable-diffusion" (conv_in widened).
    """

    unet: torch.nn.Module
    vae: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: object
    scheduler: object
    kind: str
    folder: Path


def check_base_folder(folder: str | Path) -> Path:
    """Raise BaseModelError naming the missing files when ``folder`` lacks a pipeline's parts."""
    folder = Path(folder)
    if not folder.is_dir():
        raise BaseModelError(f"base model folder not found: {folder}")
    missing = missing_pipeline_parts(folder)
    if missing:
        raise BaseModelError(
            f"{folder} is not a diffusers Stable Diffusion / InstructPix2Pix folder: missing {', '.join(missing)}. "
            "Pass a folder written by save_pretrained (for an LDM .ckpt, convert it first with "
            "`cfbench convert-ckpt`)"
        )
    return folder


def widen_conv_in(unet: torch.nn.Module, in_channels: int = INSTRUCT_PIX2PIX_IN_CHANNELS) -> torch.nn.Module:
    """Replace ``unet.conv_in`` by a convolution with ``in_channels`` inputs: the old weights fill the
    first input channels, the extra ones are zero. Updates the UNet's config. Returns the UNet."""
    old = unet.conv_in
    if old.in_channels > in_channels:
        raise BaseModelError(f"conv_in already has {old.in_channels} input channels (> {in_channels})")
    new = torch.nn.Conv2d(
        in_channels, old.out_channels, kernel_size=old.kernel_size, stride=old.stride, padding=old.padding,
        dilation=old.dilation, bias=old.bias is not None, dtype=old.weight.dtype, device=old.weight.device,
    )
    with torch.no_grad():
        new.weight.zero_()
        new.weight[:, : old.in_channels] = old.weight
        if old.bias is not None:
            new.bias.copy_(old.bias)
    unet.conv_in = new
    unet.register_to_config(in_channels=in_channels)
    return unet


def load_base_components(folder: str | Path) -> BaseComponents:
    """Load a base folder (see the module docstring) for training, on the CPU in float32."""
    import diffusers
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import AutoTokenizer, CLIPTextModel

    folder = check_base_folder(folder)
    unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet")
    channels = unet.config.in_channels
    if channels == INSTRUCT_PIX2PIX_IN_CHANNELS:
        kind = "instruct-pix2pix"
    elif channels == LATENT_CHANNELS:
        kind = "stable-diffusion"
        widen_conv_in(unet)
    else:
        raise BaseModelError(
            f"{folder / 'unet' / 'config.json'}: in_channels is {channels}; expected "
            f"{INSTRUCT_PIX2PIX_IN_CHANNELS} (InstructPix2Pix) or {LATENT_CHANNELS} (Stable Diffusion)"
        )
    vae = AutoencoderKL.from_pretrained(folder, subfolder="vae")
    text_encoder = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder")
    tokenizer = AutoTokenizer.from_pretrained(folder / "tokenizer")
    scheduler_config = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    scheduler_class = getattr(diffusers, scheduler_config.get("_class_name", ""), None)
    if scheduler_class is None:
        raise BaseModelError(
            f"{folder / 'scheduler' / 'scheduler_config.json'}: unknown scheduler class "
            f"{scheduler_config.get('_class_name')!r}"
        )
    scheduler = scheduler_class.from_pretrained(folder, subfolder="scheduler")
    return BaseComponents(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                          scheduler=scheduler, kind=kind, folder=folder)
