"""Convert CXR-IRGen's released Lightning checkpoints into the folder the ``cxr-irgen`` adapter loads
(``cfbench convert-ckpt DIFFUSION.ckpt --format cxr-irgen ...``; layout in :mod:`cfbench.models.cxr_irgen`).

The release (github.com/junjie-shentu/CXR-IRGen, diffusers 0.14, transformers 4.28, Lightning 1.8) saves whole
LightningModules, so each checkpoint's ``state_dict`` holds every sub-network under its attribute name:

- the diffusion checkpoint (``DiffusionModel_t2iSD``): ``unet.*`` (diffusers UNet2DConditionModel, fine-tuned),
  ``vae.*`` (SD-1.4's AutoencoderKL; diffusers 0.14 named the VAE's attention ``query``/``key``/``value``/
  ``proj_attn``, renamed here to ``to_q``/``to_k``/``to_v``/``to_out.0``) and ``text_encoder.*`` (SD-1.4's
  CLIPTextModel, transformers 4.28 names with ``text_model.`` and the ``position_ids`` buffer);
- the prior checkpoint (``PriorModel``): ``prior_model.*`` (a ViTModel over latents), ``vae.*`` and
  ``language_model.*`` (the BartForConditionalGeneration of the LM checkpoint, frozen);
- the LM checkpoint (``LMModel``): ``model.*`` (BartForConditionalGeneration).

The configs come from local folders, so nothing is fetched: ``--config`` (a CompVis/stable-diffusion-v1-4
folder: UNet, VAE and text-encoder configs, tokenizer, PNDM scheduler), ``--clip-vision`` (openai/
clip-vit-base-patch32, copied as a CLIPVisionModel) and ``--bart`` (facebook/bart-base: config and tokenizer).
The ViT's config is read from its tensors' shapes (hidden size, layers, MLP width, patch and image size;
heads = hidden / 64, 12 at 768 as ViT-Base; the rest ViTConfig's defaults, as the release builds it).
transformers' own loader reads the transformers parts (it knows their older key names); every network must
receive every tensor, or the conversion fails naming what is missing.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from pathlib import Path

import torch

from cfbench.core.hashing import file_sha256
from cfbench.models.cxr_irgen import (
    CLIP_VISION_DIR,
    CONVERSION_RECORD,
    REPORT_DECODER_DIR,
    REPORT_ENCODER_DIR,
)
from cfbench.training.ldm_convert import LdmCheckpointError, check_config_folder, read_checkpoint_file

DIFFUSION_PREFIXES: tuple[str, ...] = ("unet.", "vae.", "text_encoder.")
PRIOR_PREFIX = "prior_model."
PRIOR_LM_PREFIX = "language_model."
LM_PREFIX = "model."
_LEGACY_VAE_ATTENTION = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}
_IGNORED_UNEXPECTED = ("position_ids",)


class CxrIrgenCheckpointError(LdmCheckpointError):
    """A CXR-IRGen checkpoint or config folder that cannot be converted; the message names the file."""


def with_prefix(state_dict: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The tensors under ``prefix``, with the prefix removed."""
    return {key[len(prefix):]: value for key, value in state_dict.items() if key.startswith(prefix)}


def rename_legacy_vae_attention(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """diffusers < 0.15 VAE attention names (``attentions.N.query`` ...) -> today's (``attentions.N.to_q`` ...);
    other keys unchanged."""
    renamed = {}
    for key, value in state_dict.items():
        parts = key.split(".")
        for index in range(len(parts) - 1):
            if parts[index].isdigit() and index > 0 and parts[index - 1] == "attentions" \
                    and parts[index + 1] in _LEGACY_VAE_ATTENTION:
                parts[index + 1] = _LEGACY_VAE_ATTENTION[parts[index + 1]]
        renamed[".".join(parts)] = value
    return renamed


def vit_config_fields(state_dict: dict[str, torch.Tensor]) -> dict[str, int]:
    """ViTConfig fields read from a ViTModel state dict (transformers 4.x names): hidden_size,
    num_hidden_layers, intermediate_size, num_channels, patch_size, image_size, num_attention_heads."""
    try:
        projection = state_dict["embeddings.patch_embeddings.projection.weight"]
        positions = state_dict["embeddings.position_embeddings"]
        intermediate = state_dict["encoder.layer.0.intermediate.dense.weight"]
    except KeyError as error:
        raise CxrIrgenCheckpointError(f"the report ViT lacks {error}") from None
    hidden, channels, patch = int(projection.shape[0]), int(projection.shape[1]), int(projection.shape[2])
    per_side = math.isqrt(int(positions.shape[1]) - 1)
    layers = len({key.split(".")[2] for key in state_dict if key.startswith("encoder.layer.")})
    return {"hidden_size": hidden, "num_hidden_layers": layers, "intermediate_size": int(intermediate.shape[0]),
            "num_channels": channels, "patch_size": patch, "image_size": per_side * patch,
            "num_attention_heads": max(1, hidden // 64)}


def _load_transformers_part(model_class, config, state_dict: dict[str, torch.Tensor], what: str, source: Path):
    """Instantiate ``model_class`` with ``config`` and ``state_dict`` through transformers' loader (which maps
    older key names); CxrIrgenCheckpointError when a tensor is missing or left over."""
    from safetensors.torch import save_file

    with tempfile.TemporaryDirectory() as staging:
        config.save_pretrained(staging)
        save_file({key: value.detach().contiguous().clone() for key, value in state_dict.items()},
                  str(Path(staging) / "model.safetensors"))
        model, info = model_class.from_pretrained(staging, local_files_only=True, output_loading_info=True)
    unexpected = [key for key in info["unexpected_keys"] if not key.endswith(_IGNORED_UNEXPECTED)]
    if info["missing_keys"] or unexpected or info["mismatched_keys"]:
        raise CxrIrgenCheckpointError(
            f"{source}: the {what} does not match its config: missing {sorted(info['missing_keys'])[:4]}, "
            f"unexpected {sorted(unexpected)[:4]}, mismatched {sorted(info['mismatched_keys'])[:4]}")
    return model.eval()


def _load_diffusers_part(model_class, config: dict, state_dict: dict[str, torch.Tensor], what: str, source: Path):
    model = model_class.from_config(config)
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as error:
        raise CxrIrgenCheckpointError(f"{source}: the {what} does not match the config folder's: {error}") from error
    return model.eval()


def _parts(state_dict: dict[str, torch.Tensor], prefixes: tuple[str, ...], path: Path) -> dict[str, dict]:
    parts = {prefix: with_prefix(state_dict, prefix) for prefix in prefixes}
    missing = [prefix + "*" for prefix, part in parts.items() if not part]
    if missing:
        hint = (" It looks like an LDM checkpoint: use --format ldm."
                if any(key.startswith("model.diffusion_model.") for key in state_dict) else "")
        raise CxrIrgenCheckpointError(f"{path} has no {', '.join(missing)} tensors (first keys: "
                                      f"{list(state_dict)[:4]}).{hint}")
    return parts


def convert_cxr_irgen(
    diffusion_checkpoint: str | Path,
    config_folder: str | Path,
    clip_vision: str | Path,
    out: str | Path,
    report_checkpoint: str | Path | None = None,
    lm_checkpoint: str | Path | None = None,
    bart: str | Path | None = None,
    allow_pickle: bool = False,
) -> dict:
    """Write the ``cxr-irgen`` folder ``out`` (new or empty); return a summary dict.

    report_checkpoint: the prior checkpoint (``prior_model.*``); with it, ``bart`` (config + tokenizer folder)
        is required and the BART weights come from ``lm_checkpoint`` (``model.*``) or, without one, from the
        prior checkpoint's ``language_model.*``. Without it the folder has no report head (the adapter then
        runs with ``--option report=false``).
    """
    import diffusers
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import (AutoTokenizer, BartConfig, BartForConditionalGeneration, CLIPTextConfig,
                              CLIPTextModel, CLIPVisionModel, ViTConfig, ViTModel)

    diffusion_checkpoint, out = Path(diffusion_checkpoint), Path(out)
    if out.exists() and any(out.iterdir()):
        raise CxrIrgenCheckpointError(f"output folder {out} exists and is not empty; choose a new folder")
    config_folder = check_config_folder(config_folder)
    if not (Path(clip_vision) / "config.json").is_file():
        raise CxrIrgenCheckpointError(f"--clip-vision {clip_vision} is not a transformers folder (no config.json): "
                                      "pass a local copy of openai/clip-vit-base-patch32")
    if report_checkpoint is not None and (bart is None or not (Path(bart) / "config.json").is_file()):
        raise CxrIrgenCheckpointError(f"--bart {bart} is not a transformers folder (no config.json): the report head "
                                      "needs a local copy of facebook/bart-base (config and tokenizer)")
    sources = {"diffusion": diffusion_checkpoint}
    parts = _parts(read_checkpoint_file(diffusion_checkpoint, allow_pickle), DIFFUSION_PREFIXES, diffusion_checkpoint)
    unet = _load_diffusers_part(UNet2DConditionModel, UNet2DConditionModel.load_config(config_folder / "unet"),
                                parts["unet."], "UNet (unet.*)", diffusion_checkpoint)
    vae = _load_diffusers_part(AutoencoderKL, AutoencoderKL.load_config(config_folder / "vae"),
                               rename_legacy_vae_attention(parts["vae."]), "VAE (vae.*)", diffusion_checkpoint)
    text_config = CLIPTextConfig.from_pretrained(config_folder / "text_encoder")
    text_encoder = _load_transformers_part(CLIPTextModel, text_config, parts["text_encoder."],
                                           "text encoder (text_encoder.*)", diffusion_checkpoint)
    scheduler_config = json.loads((config_folder / "scheduler" / "scheduler_config.json").read_text())
    scheduler_class = getattr(diffusers, scheduler_config.get("_class_name", ""), None)
    if scheduler_class is None:
        raise CxrIrgenCheckpointError(f"{config_folder / 'scheduler'}: unknown scheduler "
                                      f"{scheduler_config.get('_class_name')!r}")
    pipeline = diffusers.StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=AutoTokenizer.from_pretrained(config_folder / "tokenizer"),
        unet=unet, scheduler=scheduler_class.from_pretrained(config_folder, subfolder="scheduler"),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    from transformers.utils import logging as transformers_logging

    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()  # a CLIPModel folder's text tower is expected to be left over
    try:
        vision, info = CLIPVisionModel.from_pretrained(clip_vision, local_files_only=True, output_loading_info=True)
    finally:
        transformers_logging.set_verbosity(verbosity)
    if info["missing_keys"]:
        raise CxrIrgenCheckpointError(f"{clip_vision}: no CLIP vision weights for {sorted(info['missing_keys'])[:4]}")

    report = None
    if report_checkpoint is not None:
        report_checkpoint = Path(report_checkpoint)
        sources["report"] = report_checkpoint
        prior_state = read_checkpoint_file(report_checkpoint, allow_pickle)
        vit_state = _parts(prior_state, (PRIOR_PREFIX,), report_checkpoint)[PRIOR_PREFIX]
        encoder = _load_transformers_part(ViTModel, ViTConfig(**vit_config_fields(vit_state)), vit_state,
                                          "report ViT (prior_model.*)", report_checkpoint)
        if lm_checkpoint is not None:
            lm_checkpoint = Path(lm_checkpoint)
            sources["lm"] = lm_checkpoint
            lm_state = read_checkpoint_file(lm_checkpoint, allow_pickle)
            bart_state = _parts(lm_state, (LM_PREFIX,), lm_checkpoint)[LM_PREFIX]
            bart_source = lm_checkpoint
        else:
            bart_state = _parts(prior_state, (PRIOR_LM_PREFIX,), report_checkpoint)[PRIOR_LM_PREFIX]
            bart_source = report_checkpoint
        decoder = _load_transformers_part(BartForConditionalGeneration, BartConfig.from_pretrained(bart), bart_state,
                                          "report BART", bart_source)
        report = (encoder, decoder, AutoTokenizer.from_pretrained(bart, local_files_only=True))

    staging = out.parent / f".{out.name}.converting"
    shutil.rmtree(staging, ignore_errors=True)
    pipeline.save_pretrained(staging, safe_serialization=True)
    vision.save_pretrained(staging / CLIP_VISION_DIR)
    if report is not None:
        report[0].save_pretrained(staging / REPORT_ENCODER_DIR)
        report[1].save_pretrained(staging / REPORT_DECODER_DIR)
        report[2].save_pretrained(staging / REPORT_DECODER_DIR)
    record = {"format": "cxr-irgen", "sources": {name: {"file": path.name, "sha256": file_sha256(path)}
                                                 for name, path in sources.items()},
              "report_head": report is not None}
    (staging / CONVERSION_RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    if out.exists():
        out.rmdir()  # empty, checked above
    staging.rename(out)
    return {"out": str(out), "report_head": report is not None, "sources": sorted(sources),
            "tensors": sum(len(part) for part in parts.values())}
