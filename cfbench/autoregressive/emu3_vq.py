"""Emu3's vision tokenizer (ProgEmu's image tokenizer) as transformers' ``Emu3VQVAE``.

BAAI releases it (``BAAI/Emu3-VisionTokenizer``) with its own module names: ``down`` / ``mid`` / ``up``
ModuleLists, attention as 1x1 convolutions ``q, k, v, proj_out`` with a ``norm`` inside the attention
block, and the config fields ``ch, ch_mult, z_channels, double_z``. transformers' ``Emu3VQVAE`` holds the
same network as ``down_block.down`` / ``middle_block`` / ``up_block.up``, linear ``q_proj, k_proj, v_proj,
out_proj`` (one head over all channels, the same 1/sqrt(C) scaling) and the attention norms beside the
blocks (``attn_norms``, ``attn_norm``). :func:`baai_to_transformers` renames the keys and squeezes the
1x1 kernels; :func:`transformers_to_baai` is its exact inverse. Everything else (temporal stacks, causal
3-D convs, spatial norms, codebook) keeps its name.

Pixels: the VQ reads RGB in [-1, 1] (the release's image processor: mean 0.5, std 0.5) and writes the same;
a grayscale X-ray is replicated to three channels, and the output is turned to gray with PIL's ``L``
weights (0.299, 0.587, 0.114), as the release's ``.convert('L')``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

_LEVEL = r"(?P<a>\d+)"
_BLOCK = r"(?P<b>\d+)"
_ATTENTION = (("q", "q_proj"), ("k", "k_proj"), ("v", "v_proj"), ("proj_out", "out_proj"))


def _rules() -> list[tuple[str, str, bool]]:
    """(BAAI prefix, transformers prefix, is an attention projection) with {a}/{b} level/block indices;
    the first rule whose prefix matches a key applies."""
    rules = []
    for side, baai, hf in (("encoder", "down", "down_block.down"), ("decoder", "up", "up_block.up")):
        rules.append((f"{side}.{baai}.{{a}}.attn.{{b}}.norm.", f"{side}.{hf}.{{a}}.attn_norms.{{b}}.", False))
        rules += [(f"{side}.{baai}.{{a}}.attn.{{b}}.{old}.", f"{side}.{hf}.{{a}}.attn.{{b}}.{new}.", True)
                  for old, new in _ATTENTION]
        rules.append((f"{side}.{baai}.", f"{side}.{hf}.", False))
    for side in ("encoder", "decoder"):
        rules.append((f"{side}.mid.attn_1.norm.", f"{side}.middle_block.attn_norm.", False))
        rules += [(f"{side}.mid.attn_1.{old}.", f"{side}.middle_block.attn_1.{new}.", True) for old, new in _ATTENTION]
        rules.append((f"{side}.mid.", f"{side}.middle_block.", False))
    return rules


def _pattern(template: str) -> re.Pattern:
    return re.compile("^" + re.escape(template).replace(r"\{a\}", _LEVEL).replace(r"\{b\}", _BLOCK))


_FORWARD = [(_pattern(baai), hf, projection) for baai, hf, projection in _rules()]
_BACKWARD = [(_pattern(hf), baai, projection) for baai, hf, projection in _rules()]


def _rename(state: dict[str, torch.Tensor], rules, to_linear: bool) -> dict[str, torch.Tensor]:
    renamed = {}
    for key, value in state.items():
        new_key = key
        for pattern, template, projection in rules:
            match = pattern.match(key)
            if match:
                new_key = template.format(**match.groupdict()) + key[match.end():]
                if projection and key.endswith(".weight"):
                    value = value.reshape(value.shape[0], value.shape[1]) if to_linear \
                        else value.reshape(*value.shape, 1, 1)
                break
        if new_key in renamed:
            raise ValueError(f"two keys map to {new_key!r}")
        renamed[new_key] = value
    return renamed


def baai_to_transformers(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """BAAI ``Emu3VisionVQModel`` state dict -> transformers ``Emu3VQVAE`` state dict (new dict)."""
    return _rename(state, _FORWARD, to_linear=True)


def transformers_to_baai(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of :func:`baai_to_transformers`."""
    return _rename(state, _BACKWARD, to_linear=False)


_CONFIG_FIELDS = {  # BAAI name -> transformers name
    "ch": "base_channels", "ch_mult": "channel_multiplier", "z_channels": "latent_channels",
    "double_z": "double_latent", "codebook_size": "codebook_size", "embed_dim": "embed_dim",
    "in_channels": "in_channels", "out_channels": "out_channels", "num_res_blocks": "num_res_blocks",
    "temporal_downsample_factor": "temporal_downsample_factor", "attn_resolutions": "attn_resolutions",
}


def is_baai_config(config: dict) -> bool:
    return config.get("model_type") == "Emu3VisionVQ" or ("ch" in config and "base_channels" not in config)


def transformers_config(baai: dict):
    """An ``Emu3VQVAEConfig`` from a BAAI ``config.json`` dict (attention width = ch * ch_mult[-1], 1 head)."""
    from transformers import Emu3VQVAEConfig

    fields = {new: baai[old] for old, new in _CONFIG_FIELDS.items() if old in baai}
    fields["hidden_size"] = int(baai["ch"]) * int(list(baai["ch_mult"])[-1])
    fields["num_attention_heads"] = 1
    return Emu3VQVAEConfig(**fields)


def baai_config(config) -> dict:
    """The BAAI ``config.json`` dict of an ``Emu3VQVAEConfig`` (for writing BAAI-layout folders)."""
    fields = {old: getattr(config, new) for old, new in _CONFIG_FIELDS.items()}
    fields = {key: list(value) if isinstance(value, tuple) else value for key, value in fields.items()}
    return {"model_type": "Emu3VisionVQ", "architectures": ["Emu3VisionVQModel"], "dropout": 0.0, **fields}


def read_state_dict(folder: Path) -> dict[str, torch.Tensor]:
    """All tensors of a folder's ``*.safetensors`` files (else ``pytorch_model*.bin``, weights only)."""
    from safetensors.torch import load_file

    state: dict[str, torch.Tensor] = {}
    files = sorted(folder.glob("*.safetensors"))
    for path in files:
        state.update(load_file(path))
    if not files:
        for path in sorted(folder.glob("pytorch_model*.bin")):
            state.update(torch.load(path, map_location="cpu", weights_only=True))
    if not state:
        raise FileNotFoundError(f"no *.safetensors or pytorch_model*.bin weights in {folder}")
    return state


def load_emu3_vq(folder: str | Path, device="cpu", dtype=torch.float32):
    """``Emu3VQVAE`` from a BAAI vision-tokenizer folder (converted in memory, strict load) or from a folder
    written by :func:`convert_emu3_vq_folder` / ``save_pretrained`` (transformers layout)."""
    from transformers import Emu3VQVAE

    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    if is_baai_config(config):
        model = Emu3VQVAE(transformers_config(config))
        model.load_state_dict(baai_to_transformers(read_state_dict(folder)), strict=True)
    else:
        model = Emu3VQVAE.from_pretrained(folder)
    return model.eval().to(device=device, dtype=dtype)


def convert_emu3_vq_folder(source: str | Path, destination: str | Path) -> Path:
    """Write the transformers-layout folder (config.json + model.safetensors) of a BAAI vision tokenizer."""
    model = load_emu3_vq(source)
    destination = Path(destination)
    model.save_pretrained(destination)
    return destination


def emu3_spatial_factor(vq) -> int:
    """Pixels per token side: 2**(levels - 1) (8 for the release: 512 px -> 64 x 64 tokens)."""
    return 2 ** (len(vq.config.channel_multiplier) - 1)


@torch.no_grad()
def emu3_encode(vq, images: torch.Tensor) -> torch.Tensor:
    """Grayscale ``B x H x W`` in [0, 1] (H, W multiples of the spatial factor) -> ``B x h x w`` indices."""
    pixels = (images[:, None] * 2 - 1).expand(-1, vq.config.in_channels, -1, -1)
    pixels = pixels.to(device=vq.device, dtype=vq.dtype)
    sizes = torch.tensor([list(images.shape[-2:])] * images.shape[0])
    return torch.stack(list(vq.encode(pixels, sizes).image_tokens))


@torch.no_grad()
def emu3_decode(vq, indices: torch.Tensor) -> torch.Tensor:
    """``B x h x w`` indices -> grayscale ``B x H x W`` in [0, 1] (float32)."""
    pixels = vq.decode(indices.to(vq.device)).float().clamp(-1, 1)
    rgb = (pixels + 1) / 2
    if rgb.shape[1] == 3:
        weights = torch.tensor([0.299, 0.587, 0.114], device=rgb.device).view(1, 3, 1, 1)
        return (rgb * weights).sum(dim=1).clamp(0, 1)
    return rgb.mean(dim=1)
