"""Convert an original LDM checkpoint (``.ckpt`` / ``.safetensors``) into a diffusers pipeline folder.

The official InstructPix2Pix checkpoint (and Stable Diffusion 1.x ones) are single files in the
latent-diffusion (LDM) layout: the UNet under ``model.diffusion_model.``, the VAE under
``first_stage_model.``, the CLIP text encoder under ``cond_stage_model.transformer.`` (optionally an EMA
copy of the UNet under ``model_ema.``). The conversion itself is diffusers' own
(``UNet2DConditionModel.from_single_file``, ``AutoencoderKL.from_single_file`` and its CLIP loader, the
same code ``StableDiffusionPipeline.from_single_file`` runs); this module reads the file once, checks that
it is an LDM checkpoint, and hands diffusers a local **config folder** so nothing is fetched: a diffusers
folder of the same architecture (``unet/config.json``, ``vae/config.json``, ``text_encoder/config.json``,
``tokenizer/``, ``scheduler/scheduler_config.json``; the weights files in it are not read), e.g. a
download of ``timbrooks/instruct-pix2pix`` or ``runwayml/stable-diffusion-v1-5``.

An 8-channel UNet gives a StableDiffusionInstructPix2PixPipeline folder, a 4-channel one a
StableDiffusionPipeline folder (a base for ``cfbench train instructx2x``).
"""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import torch

from cfbench.diffusion.components import COMPONENT_CONFIGS, missing_pipeline_parts

UNET_PREFIX = "model.diffusion_model."
EMA_PREFIX = "model_ema."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIXES: tuple[str, ...] = ("cond_stage_model.transformer.", "cond_stage_model.model.")
CONV_IN_KEY = UNET_PREFIX + "input_blocks.0.0.weight"
WEIGHT_CHOICES: tuple[str, ...] = ("auto", "ema", "raw")


class LdmCheckpointError(ValueError):
    """The file is not a readable LDM checkpoint, or does not match the config folder; names the file."""


def read_checkpoint_file(path: str | Path, allow_pickle: bool = False) -> dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` or torch-pickle (``.ckpt``/``.pt``/``.bin``) file, unwrapped from
    a Lightning-style ``{"state_dict": ...}``.

    Torch files are read with ``weights_only=True``; ``allow_pickle=True`` permits arbitrary Python objects
    (only for files you trust: unpickling can run code)."""
    path = Path(path)
    if not path.is_file():
        raise LdmCheckpointError(f"checkpoint file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(path)
        except Exception as error:  # safetensors raises its own error types
            raise LdmCheckpointError(f"{path} is not a readable safetensors file: {error}") from error
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=not allow_pickle, mmap=False)
    except pickle.UnpicklingError as error:
        hint = "" if allow_pickle else (
            " If the file holds Python objects besides tensors (training callbacks) and you trust it, "
            "pass --allow-pickle")
        raise LdmCheckpointError(f"cannot read {path} as a torch checkpoint: {error}.{hint}") from error
    except Exception as error:  # a file that is not a torch pickle fails in many ways (KeyError, EOFError, ...)
        raise LdmCheckpointError(f"cannot read {path} as a torch checkpoint: {type(error).__name__}: {error}") from error
    while isinstance(loaded, dict) and "state_dict" in loaded:
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict) or not all(isinstance(value, torch.Tensor) for value in loaded.values()):
        raise LdmCheckpointError(f"{path} holds no state dict of tensors (found {type(loaded).__name__})")
    return loaded


def check_ldm_state_dict(state_dict: dict[str, torch.Tensor], path: str | Path) -> None:
    """Raise LdmCheckpointError unless the UNet, VAE and text encoder are all present in LDM key names."""
    keys = list(state_dict)
    parts = {
        f"UNet ({UNET_PREFIX}*)": any(key.startswith(UNET_PREFIX) for key in keys),
        f"VAE ({VAE_PREFIX}*)": any(key.startswith(VAE_PREFIX) for key in keys),
        f"text encoder ({' or '.join(p + '*' for p in CLIP_PREFIXES)})":
            any(key.startswith(CLIP_PREFIXES) for key in keys),
    }
    missing = [name for name, present in parts.items() if not present]
    if not missing:
        return
    looks_like = ""
    if any(key.startswith(("down_blocks.", "conv_in.", "mid_block.")) for key in keys):
        looks_like = " It looks like a diffusers state dict (down_blocks.*, conv_in.*): load it with from_pretrained."
    raise LdmCheckpointError(
        f"{path} is not a complete LDM (latent-diffusion) checkpoint: no {', '.join(missing)} keys among its "
        f"{len(keys)} tensors (first keys: {keys[:4]}).{looks_like}"
    )


def check_config_folder(folder: str | Path) -> Path:
    folder = Path(folder)
    if not folder.is_dir():
        raise LdmCheckpointError(f"config folder not found: {folder}")
    missing = missing_pipeline_parts(folder, COMPONENT_CONFIGS)
    if missing:
        raise LdmCheckpointError(
            f"config folder {folder} lacks {', '.join(missing)}: pass a diffusers folder of the same "
            "architecture (configs and tokenizer; its weights are not used)"
        )
    return folder


def _ema_key(unet_key: str) -> str:
    """LDM's name for the EMA copy of a UNet tensor: dots after ``model.`` removed, under ``model_ema.``."""
    return EMA_PREFIX + "".join(unet_key[len("model."):].split("."))


def select_unet_weights(state_dict: dict[str, torch.Tensor], weights: str, path: str | Path) -> tuple[dict, str]:
    """A state dict whose ``model.diffusion_model.*`` tensors are the EMA or the raw UNet weights.

    weights: "ema" (error if the file has no EMA copy), "raw", or "auto" (EMA when present).
    Returns (state dict without the ``model_ema.*`` entries, "ema" or "raw")."""
    if weights not in WEIGHT_CHOICES:
        raise LdmCheckpointError(f"weights must be one of {WEIGHT_CHOICES}, got {weights!r}")
    unet_keys = [key for key in state_dict if key.startswith(UNET_PREFIX)]
    has_ema = all(_ema_key(key) in state_dict for key in unet_keys)
    if weights == "ema" and not has_ema:
        raise LdmCheckpointError(f"{path} has no EMA copy of the UNet ({EMA_PREFIX}*); use --weights raw")
    use_ema = has_ema and weights in ("ema", "auto")
    selected = {key: value for key, value in state_dict.items() if not key.startswith(EMA_PREFIX)}
    if use_ema:
        for key in unet_keys:
            selected[key] = state_dict[_ema_key(key)]
    return selected, "ema" if use_ema else "raw"


def _check_no_missing_weights(module: torch.nn.Module, component: str, path: Path) -> None:
    """diffusers leaves tensors the checkpoint lacks on the 'meta' device: report them instead."""
    missing = [name for name, tensor in list(module.named_parameters()) + list(module.named_buffers())
               if tensor.device.type == "meta"]
    if missing:
        raise LdmCheckpointError(
            f"{path}: the {component} of the config folder has {len(missing)} tensor(s) the checkpoint does "
            f"not provide (e.g. {missing[:3]}): the checkpoint and the config folder differ in architecture"
        )


def convert_ldm_checkpoint(
    checkpoint: str | Path,
    config_folder: str | Path,
    out: str | Path,
    weights: str = "auto",
    allow_pickle: bool = False,
) -> dict:
    """Convert ``checkpoint`` into a diffusers pipeline folder ``out``; return a summary dict
    (pipeline class, UNet in_channels, which UNet weights were used, tensor count)."""
    import diffusers
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import create_diffusers_clip_model_from_ldm
    from transformers import AutoTokenizer, CLIPTextModel

    checkpoint = Path(checkpoint)
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise LdmCheckpointError(f"output folder {out} exists and is not empty; choose a new folder")
    config_folder = check_config_folder(config_folder)
    state_dict = read_checkpoint_file(checkpoint, allow_pickle=allow_pickle)
    check_ldm_state_dict(state_dict, checkpoint)
    state_dict, used = select_unet_weights(state_dict, weights, checkpoint)

    unet_config = json.loads((config_folder / "unet" / "config.json").read_text())
    checkpoint_channels = state_dict[CONV_IN_KEY].shape[1] if CONV_IN_KEY in state_dict else None
    if checkpoint_channels is not None and checkpoint_channels != unet_config.get("in_channels"):
        raise LdmCheckpointError(
            f"{checkpoint}: the UNet takes {checkpoint_channels} input channels but "
            f"{config_folder / 'unet' / 'config.json'} says in_channels={unet_config.get('in_channels')}; "
            "use a config folder of the same model (InstructPix2Pix: 8, Stable Diffusion: 4)"
        )
    try:
        unet = UNet2DConditionModel.from_single_file(state_dict, config=str(config_folder), subfolder="unet",
                                                     local_files_only=True)
        vae = AutoencoderKL.from_single_file(state_dict, config=str(config_folder), subfolder="vae",
                                             local_files_only=True)
        text_encoder = create_diffusers_clip_model_from_ldm(CLIPTextModel, checkpoint=state_dict,
                                                            config=str(config_folder), subfolder="text_encoder",
                                                            local_files_only=True)
    except (ValueError, RuntimeError, KeyError) as error:
        raise LdmCheckpointError(f"diffusers could not convert {checkpoint} with the configs of "
                                 f"{config_folder}: {error}") from error
    for name, module in (("UNet", unet), ("VAE", vae), ("text encoder", text_encoder)):
        _check_no_missing_weights(module, name, checkpoint)

    tokenizer = AutoTokenizer.from_pretrained(config_folder / "tokenizer")
    scheduler_config = json.loads((config_folder / "scheduler" / "scheduler_config.json").read_text())
    scheduler_class = getattr(diffusers, scheduler_config.get("_class_name", ""), None)
    if scheduler_class is None:
        raise LdmCheckpointError(f"{config_folder / 'scheduler' / 'scheduler_config.json'}: unknown scheduler "
                                 f"class {scheduler_config.get('_class_name')!r}")
    scheduler = scheduler_class.from_pretrained(config_folder, subfolder="scheduler")

    pipeline_class = (diffusers.StableDiffusionInstructPix2PixPipeline if unet.config.in_channels == 8
                      else diffusers.StableDiffusionPipeline)
    pipeline = pipeline_class(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                              scheduler=scheduler, safety_checker=None, feature_extractor=None,
                              requires_safety_checker=False)
    staging = out.parent / f".{out.name}.converting"
    shutil.rmtree(staging, ignore_errors=True)
    pipeline.save_pretrained(staging, safe_serialization=True)
    if out.exists():
        out.rmdir()  # empty, checked above
    staging.rename(out)
    return {"pipeline": pipeline_class.__name__, "unet_in_channels": unet.config.in_channels,
            "unet_weights": used, "tensors": len(state_dict), "out": str(out)}
