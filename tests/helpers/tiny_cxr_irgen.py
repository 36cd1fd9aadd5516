"""Tiny, randomly initialised doubles of CXR-IRGen's release, in its layout: three Lightning checkpoints (the
``state_dict`` of whole LightningModules, with diffusers 0.14 / transformers 4.28 key names) and the local
folders the conversion reads in place of the hub (CompVis/stable-diffusion-v1-4, openai/clip-vit-base-patch32 as
a full CLIPModel folder, facebook/bart-base with a BART-style byte-level tokenizer).

- ``diffusion.ckpt``: ``unet.*`` (a UNet other than the config folder's, so the test sees which one is used),
  ``vae.*`` with the VAE attention as ``query``/``key``/``value``/``proj_attn``, ``text_encoder.*`` with
  ``text_model.`` and the ``position_ids`` buffer;
- ``prior.ckpt``: ``prior_model.*`` (ViTModel over 16 x 16 x 4 latents, patch 2), ``vae.*``, ``language_model.*``;
- ``lm.ckpt``: ``model.*`` (the same BartForConditionalGeneration).

Sizes: 32 px images, VAE factor 2, 16 px latents; text and CLIP-vision width 32 (the UNet's cross-attention
width), ViT and BART width 32. Weights come from fixed seeds.
"""

from __future__ import annotations

from pathlib import Path

import torch

from tests.helpers.tiny_diffusion import TEXT_HIDDEN_SIZE, save_tiny_stable_diffusion

SIZE = 32
LATENT_SIDE = SIZE // 2
TEXT_MAX_LENGTH = 96  # the label prompts tokenise mostly to single characters in the tiny vocabulary
BART_WIDTH = 32
CORPUS = ["the heart size is normal . no pleural effusion or pneumothorax .",
          "small left pleural effusion . moderate cardiomegaly . mild pulmonary edema .",
          "lungs are clear . no acute cardiopulmonary process ."]
BART_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # ids 0..4, as facebook/bart-base


def bart_tokenizer():
    """A byte-level BPE tokenizer with BART's special tokens at BART's ids (<s> 0, <pad> 1, </s> 2)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=BART_SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    backend.train_from_iterator(CORPUS * 4, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", pad_token="<pad>", eos_token="</s>",
                                   unk_token="<unk>", mask_token="<mask>")


def legacy_vae_keys(state_dict: dict) -> dict:
    """Today's VAE attention names back to diffusers 0.14's (to_q -> query, ..., to_out.0 -> proj_attn)."""
    legacy = {".to_q.": ".query.", ".to_k.": ".key.", ".to_v.": ".value.", ".to_out.0.": ".proj_attn."}
    renamed = {}
    for key, value in state_dict.items():
        if ".attentions." in key:
            for new, old in legacy.items():
                key = key.replace(new, old)
        renamed[key] = value
    return renamed


def _lightning(state: dict, path: Path) -> Path:
    torch.save({"state_dict": state, "epoch": 9, "global_step": 1000, "pytorch-lightning_version": "1.8.3.post0"},
               path)
    return path


def save_tiny_cxr_irgen_release(folder: str | Path, seed: int = 0) -> dict:
    """Write the tiny release into ``folder``; returns the paths by name: ``sd_config``, ``clip``, ``bart``,
    ``diffusion_ckpt``, ``prior_ckpt``, ``lm_ckpt``; and ``_models``: the UNet, ViT and BART written."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from safetensors.torch import load_file
    from transformers import (BartConfig, BartForConditionalGeneration, CLIPConfig, CLIPModel, CLIPTextModel,
                              ViTConfig, ViTModel)

    folder = Path(folder)
    paths = {"sd_config": folder / "stable-diffusion-v1-4", "clip": folder / "clip-vit-base-patch32",
             "bart": folder / "bart-base"}
    save_tiny_stable_diffusion(paths["sd_config"], sample_size=LATENT_SIDE, scheduler="pndm",
                               text_max_length=TEXT_MAX_LENGTH)
    torch.manual_seed(seed + 10)
    clip = CLIPModel(CLIPConfig(
        text_config={"vocab_size": 64, "hidden_size": 16, "intermediate_size": 16, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "max_position_embeddings": 16},
        vision_config={"hidden_size": TEXT_HIDDEN_SIZE, "intermediate_size": 37, "num_hidden_layers": 2,
                       "num_attention_heads": 2, "image_size": 224, "patch_size": 32},
        projection_dim=16))
    clip.save_pretrained(paths["clip"])

    tokenizer = bart_tokenizer()
    torch.manual_seed(seed + 11)
    bart = BartForConditionalGeneration(BartConfig(
        vocab_size=len(tokenizer), d_model=BART_WIDTH, encoder_layers=1, decoder_layers=2, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=37, decoder_ffn_dim=37, max_position_embeddings=128,
        bos_token_id=0, pad_token_id=1, eos_token_id=2, decoder_start_token_id=2, forced_eos_token_id=2))
    bart.config.save_pretrained(paths["bart"])
    tokenizer.save_pretrained(paths["bart"])
    torch.manual_seed(seed + 12)
    trained_bart = BartForConditionalGeneration(bart.config).eval()  # the fine-tuned weights, not bart-base's
    with torch.no_grad():
        trained_bart.final_logits_bias.normal_(0, 1.0)

    # the diffusion LightningModule: a fine-tuned UNet, SD's VAE and text encoder
    torch.manual_seed(seed + 13)
    unet = UNet2DConditionModel.from_pretrained(paths["sd_config"], subfolder="unet")
    with torch.no_grad():
        for parameter in unet.parameters():
            parameter.add_(0.02 * torch.randn_like(parameter))
    vae = AutoencoderKL.from_pretrained(paths["sd_config"], subfolder="vae")
    text_encoder = CLIPTextModel.from_pretrained(paths["sd_config"], subfolder="text_encoder")
    text_state = {f"text_model.{key}": value for key, value in text_encoder.state_dict().items()}
    text_state["text_model.embeddings.position_ids"] = torch.arange(TEXT_MAX_LENGTH)[None]
    diffusion = {**{f"unet.{k}": v for k, v in unet.state_dict().items()},
                 **{f"vae.{k}": v for k, v in legacy_vae_keys(vae.state_dict()).items()},
                 **{f"text_encoder.{k}": v for k, v in text_state.items()}}
    paths["diffusion_ckpt"] = _lightning(diffusion, folder / "diffusion-epoch=9-val_loss=0.100.ckpt")

    # the prior LightningModule: ViTModel(ViTConfig(image_size, patch_size=2, num_channels=4)), frozen VAE and LM
    torch.manual_seed(seed + 14)
    vit = ViTModel(ViTConfig(image_size=LATENT_SIDE, patch_size=2, num_channels=4, hidden_size=BART_WIDTH,
                             num_hidden_layers=2, num_attention_heads=1, intermediate_size=37))
    vit.save_pretrained(folder / "_vit")  # transformers writes ViT tensors in its 4.x names
    vit_state = load_file(folder / "_vit" / "model.safetensors")
    assert "encoder.layer.0.attention.attention.query.weight" in vit_state  # the release's (transformers 4.28) names
    prior = {**{f"prior_model.{k}": v for k, v in vit_state.items()},
             **{f"vae.{k}": v for k, v in legacy_vae_keys(vae.state_dict()).items()},
             **{f"language_model.{k}": v for k, v in trained_bart.state_dict().items()}}
    paths["prior_ckpt"] = _lightning(prior, folder / "prior-epoch=9-val_loss=0.01.ckpt")
    paths["lm_ckpt"] = _lightning({f"model.{k}": v for k, v in trained_bart.state_dict().items()},
                                  folder / "lm-epoch=19-val_loss=0.50.ckpt")
    paths["_models"] = {"unet": unet, "vit": vit, "bart": trained_bart}
    return paths
