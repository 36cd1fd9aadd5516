"""Tiny, randomly initialised Stable Diffusion folders for tests.

The folders have the exact layout of the real checkpoints (``model_index.json``, ``unet/``, ``vae/``,
``text_encoder/``, ``tokenizer/``, ``scheduler/``), written with ``save_pretrained``, so code under test
loads them through the same ``from_pretrained`` path as the real weights. The networks are small enough
that a 50-step loop at 32 px runs in about a second on a CPU.

- :func:`save_tiny_instruct_pix2pix`: a ``StableDiffusionInstructPix2PixPipeline`` folder (UNet with
  8 input channels: 4 noisy latent channels + 4 image-conditioning channels).
- :func:`save_tiny_stable_diffusion`: a ``StableDiffusionPipeline`` folder (UNet with 4 input channels).

Weights are drawn from a fixed seed, so two calls write identical networks.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

TINY_SEED = 0
TEXT_HIDDEN_SIZE = 32  # also the UNet's cross_attention_dim
LATENT_CHANNELS = 4
UNET_CHANNELS = (32, 64)
VAE_CHANNELS = (16, 32)  # two VAE blocks -> one downsampling step: 32 px images give 16 px latents
TOKENIZER_MAX_LENGTH = 16

# A few words that appear in chest X-ray edit instructions; every other word falls back to single
# characters (all printable ASCII letters are in the vocabulary), so any instruction tokenises.
_WORDS = ["add", "remove", "the", "finding", "of", "small", "large", "left", "right", "pleural",
          "effusion", "edema", "cardiomegaly", "pneumothorax", "atelectasis", "mild", "severe"]


def _write_tokenizer_files(folder: Path) -> tuple[Path, Path]:
    """A minimal byte-level BPE vocabulary (``vocab.json``) and merges file (``merges.txt``) in CLIP's
    format: single characters, the same with the end-of-word marker ``</w>``, a few whole words, and the
    merges that build those words. Returns (vocab path, merges path)."""
    folder.mkdir(parents=True, exist_ok=True)
    characters = [chr(code) for code in range(33, 127)]
    tokens = ["<|startoftext|>", "<|endoftext|>"] + characters + [c + "</w>" for c in characters]
    merges: list[str] = []
    for word in _WORDS:
        # merge left to right: "a d" -> "ad", "ad d</w>" -> "add</w>"
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        merged = pieces[0]
        for piece in pieces[1:]:
            merges.append(f"{merged} {piece}")
            merged = merged + piece
            if merged not in tokens:
                tokens.append(merged)
    merges = list(dict.fromkeys(merges))  # drop repeats, keep order
    vocab = {token: index for index, token in enumerate(dict.fromkeys(tokens))}
    vocab_path = folder / "vocab.json"
    merges_path = folder / "merges.txt"
    vocab_path.write_text(json.dumps(vocab))
    merges_path.write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return vocab_path, merges_path


def _tiny_components(unet_in_channels: int, sample_size: int, folder: Path,
                     unet_channels: tuple[int, ...], vae_channels: tuple[int, ...],
                     text_max_length: int = TOKENIZER_MAX_LENGTH) -> dict:
    """UNet, VAE, text encoder, tokenizer and DDIM scheduler, all tiny and seeded.

    unet_channels: the UNet's block widths (one block per entry; the first is a cross-attention down block,
        the last a plain down block). vae_channels: the VAE's block widths; its downsampling factor is
        ``2 ** (len(vae_channels) - 1)``. text_max_length: the tokenizer's and text encoder's maximum tokens.
    """
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(TINY_SEED)
    unet = UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=unet_in_channels,
        out_channels=LATENT_CHANNELS,
        block_out_channels=tuple(unet_channels),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D",) * (len(unet_channels) - 1) + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (len(unet_channels) - 1),
        cross_attention_dim=TEXT_HIDDEN_SIZE,
        attention_head_dim=8,
        norm_num_groups=32,
    )
    torch.manual_seed(TINY_SEED + 1)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * len(vae_channels),
        up_block_types=("UpDecoderBlock2D",) * len(vae_channels),
        block_out_channels=tuple(vae_channels),
        layers_per_block=1,
        latent_channels=LATENT_CHANNELS,
        norm_num_groups=16,
        sample_size=sample_size * 2 ** (len(vae_channels) - 1),
    )
    torch.manual_seed(TINY_SEED + 2)
    vocab_path, merges_path = _write_tokenizer_files(folder / "_tokenizer_source")
    tokenizer = CLIPTokenizer(str(vocab_path), str(merges_path), model_max_length=text_max_length)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=TEXT_HIDDEN_SIZE,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=text_max_length,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    ))
    scheduler = DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        clip_sample=False, set_alpha_to_one=False, steps_offset=1,
    )
    return {"unet": unet, "vae": vae, "text_encoder": text_encoder, "tokenizer": tokenizer,
            "scheduler": scheduler}


def _save(pipeline_class_name: str, unet_in_channels: int, folder: Path, sample_size: int,
          unet_channels: tuple[int, ...], vae_channels: tuple[int, ...],
          text_max_length: int = TOKENIZER_MAX_LENGTH) -> Path:
    import shutil

    import diffusers

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    components = _tiny_components(unet_in_channels, sample_size, folder, unet_channels, vae_channels,
                                  text_max_length)
    pipeline_class = getattr(diffusers, pipeline_class_name)
    pipeline = pipeline_class(**components, safety_checker=None, feature_extractor=None,
                              requires_safety_checker=False)
    pipeline.save_pretrained(folder, safe_serialization=True)
    shutil.rmtree(folder / "_tokenizer_source")
    return folder


def save_tiny_instruct_pix2pix(folder: Path, sample_size: int = 8, *,
                               unet_channels: tuple[int, ...] = UNET_CHANNELS,
                               vae_channels: tuple[int, ...] = VAE_CHANNELS) -> Path:
    """Write a tiny ``StableDiffusionInstructPix2PixPipeline`` folder (UNet in_channels=8) and return it.

    sample_size: the UNet's nominal latent side in latent pixels (images are ``2 * sample_size`` px with
        the default VAE); any size divisible by the downsampling factors works at run time, this only
        sets the config's default.
    unet_channels, vae_channels: block widths; the defaults are the tiny test networks, wider or longer
        tuples give bigger random networks for benchmarks (e.g. a 4-block VAE downsamples by 8, as SD's).
    """
    return _save("StableDiffusionInstructPix2PixPipeline", 2 * LATENT_CHANNELS, folder, sample_size,
                 unet_channels, vae_channels)


def save_tiny_stable_diffusion(folder: Path, sample_size: int = 8, *,
                               unet_channels: tuple[int, ...] = UNET_CHANNELS,
                               vae_channels: tuple[int, ...] = VAE_CHANNELS, scheduler: str = "ddim",
                               text_max_length: int = TOKENIZER_MAX_LENGTH) -> Path:
    """Write a tiny ``StableDiffusionPipeline`` folder (UNet in_channels=4) and return it.

    scheduler: "ddim", or "pndm" (Stable Diffusion v1's saved scheduler: the PNDM config of the SD v1 release).
    text_max_length: tokens the tokenizer and text encoder take (default 16; longer for label prompts).
    """
    folder = _save("StableDiffusionPipeline", LATENT_CHANNELS, folder, sample_size, unet_channels, vae_channels,
                   text_max_length)
    if scheduler == "pndm":
        from diffusers import PNDMScheduler

        PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", skip_prk_steps=True,
                      steps_offset=1).save_pretrained(folder / "scheduler")
        index = json.loads((folder / "model_index.json").read_text())
        index["scheduler"] = ["diffusers", "PNDMScheduler"]
        (folder / "model_index.json").write_text(json.dumps(index))
    elif scheduler != "ddim":
        raise ValueError(f"scheduler must be 'ddim' or 'pndm', got {scheduler!r}")
    return folder
