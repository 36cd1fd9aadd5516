"""The taming-transformers VQ-GAN (LLM-CXR's image tokenizer) through torchxrayvision's bundled inference
copy of ``VQModel`` (``torchxrayvision.baseline_models.ieee8023.vqgan``; same state-dict names, no taming
package, no Lightning).

Loading: the Lightning checkpoint's ``state_dict`` (``loss.*`` discriminator/LPIPS keys dropped) into a
``VQModel`` built from the OmegaConf yaml's ``model.params`` (``ddconfig``, ``n_embed``, ``embed_dim``), read
with PyYAML. Decoding: index grid -> codebook rows (looked up by hand in ``quantize.embedding``; the copy has
no ``get_codebook_entry``) -> ``decode`` -> clip to [-1, 1] -> (x + 1) / 2 -> channel mean = grayscale [0, 1].
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch


def read_vqgan_yaml(path: str | Path) -> dict:
    """``model.params`` of a taming yaml: ddconfig, n_embed, embed_dim (lossconfig ignored)."""
    import yaml

    config = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    try:
        params = config["model"]["params"]
        return {"ddconfig": dict(params["ddconfig"]), "n_embed": int(params["n_embed"]),
                "embed_dim": int(params["embed_dim"])}
    except (KeyError, TypeError) as error:
        raise ValueError(f"{path}: not a taming VQ-GAN yaml (needs model.params.ddconfig, n_embed, embed_dim)") \
            from error


def read_lightning_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The ``state_dict`` of a Lightning checkpoint without the ``loss.*`` entries. Tries a weights-only load
    first; a checkpoint holding other pickled objects (Lightning callbacks) is loaded fully with a warning
    (only load checkpoints you trust)."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001  (pickled Lightning objects)
        warnings.warn(f"{path}: not a weights-only checkpoint; loading it with pickle", stacklevel=2)
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f"{path}: no state_dict in this checkpoint")
    return {key: value for key, value in state.items() if not key.startswith("loss.")}


def load_taming_vqgan(checkpoint: str | Path, config: str | Path, device="cpu"):
    """A torchxrayvision ``VQModel`` with the checkpoint's weights (strict load), in eval mode."""
    from torchxrayvision.baseline_models.ieee8023.vqgan import VQModel

    params = read_vqgan_yaml(config)
    model = VQModel(params["ddconfig"], params["n_embed"], params["embed_dim"])
    model.load_state_dict(read_lightning_state_dict(checkpoint), strict=True)
    return model.eval().to(device)


def taming_grid_side(vq) -> int:
    """Tokens per side: ddconfig resolution / 2**(levels - 1) (16 for LLM-CXR's 256 px, 5-level VQ-GAN)."""
    return int(vq.encoder.resolution) // 2 ** (vq.encoder.num_resolutions - 1)


@torch.no_grad()
def taming_encode(vq, images: torch.Tensor) -> torch.Tensor:
    """Grayscale ``B x H x W`` in [0, 1] at the VQ's resolution -> ``B x h x w`` code indices (the
    input is replicated to the VQ's input channels and scaled to [-1, 1], as LLM-CXR's preprocessing)."""
    channels = vq.encoder.conv_in.in_channels
    pixels = (images[:, None] * 2 - 1).expand(-1, channels, -1, -1).to(vq.quant_conv.weight)
    quant, _, (_, _, indices) = vq.encode(pixels)
    return indices.view(images.shape[0], *quant.shape[-2:])


@torch.no_grad()
def taming_decode_rgb(vq, indices: torch.Tensor) -> torch.Tensor:
    """``B x h x w`` code indices -> the decoder's ``B x C x H x W`` output clipped to [-1, 1] and mapped to
    [0, 1] (float32; C = 3 for LLM-CXR's VQ-GAN), as the release's ``nn_img_to_img``."""
    codes = vq.quantize.embedding(indices.to(vq.quant_conv.weight.device))  # B h w C
    pixels = vq.decode(codes.permute(0, 3, 1, 2).contiguous())
    return (pixels.float().clamp(-1, 1) + 1) / 2


def taming_decode(vq, indices: torch.Tensor) -> torch.Tensor:
    """``B x h x w`` code indices -> grayscale ``B x H x W`` in [0, 1] (float32): the channels' mean."""
    return taming_decode_rgb(vq, indices).mean(dim=1)
