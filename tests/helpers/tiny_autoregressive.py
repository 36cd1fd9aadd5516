"""Tiny, randomly initialised doubles of the LLM-CXR and ProgEmu releases, in the releases' own layouts, so
the adapters load them through the same code as the real weights.

- :func:`save_tiny_llm_cxr`: ``lm/`` = a ``GPTNeoXForCausalLM`` folder with a byte-level BPE tokenizer
  carrying LLM-CXR's added special tokens (pad = eos) and embeddings for the image tokens;
  ``vqgan/`` = a taming VQ-GAN Lightning checkpoint (``state_dict`` with ``loss.*`` keys to drop) + its
  OmegaConf-style yaml. 16 px images, 4 x 4 = 16 tokens.
- :func:`save_tiny_progemu`: the LM folder with a BAAI-style ``config.json`` (model_type "Emu3"), the
  weights of a tiny ``Emu3ForCausalLM``, ``emu3.tiktoken`` (the 256 single bytes) and
  ``emu3_vision_tokens.txt``; ``vision_tokenizer/`` = a tiny Emu3 VQ in BAAI key names and config fields.
  32 px images, 8 x 8 tokens.

Weights come from fixed seeds, so two calls write identical networks.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import torch

LLM_CXR_SPECIALS = ["### End", "### Instruction:", "### Response:\n"]
TAMING_DDCONFIG = {"double_z": False, "z_channels": 8, "resolution": 16, "in_channels": 3, "out_ch": 3, "ch": 32,
                   "ch_mult": [1, 2, 2], "num_res_blocks": 1, "attn_resolutions": [4], "dropout": 0.0}
TAMING_CODES = 64
EMU3_CODES = 64
EMU3_VQ_CONFIG = {"ch": 32, "ch_mult": [1, 2, 2], "z_channels": 4, "double_z": False, "codebook_size": EMU3_CODES,
                  "embed_dim": 4, "in_channels": 3, "out_channels": 3, "num_res_blocks": 1,
                  "attn_resolutions": [2], "temporal_downsample_factor": 4}
EMU3_NATIVE_RESOLUTION = 32  # 8 x 8 tokens with the VQ's factor 4
CORPUS = ["Below is an instruction that describes a task. Write a response that appropriately completes the request.",
          "Generate a chest X-ray image that corresponds to the entered free-text radiology reports.",
          "Small left pleural effusion. Moderate cardiomegaly. No pneumothorax. Mild pulmonary edema.",
          "Input: Response: Instruction: < > image report chest lung heart"]


def _byte_level_tokenizer(vocab_size: int = 400):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    backend.train_from_iterator(CORPUS * 4, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>",
                                        bos_token="<|endoftext|>", unk_token="<|endoftext|>")
    tokenizer.add_special_tokens({"additional_special_tokens": LLM_CXR_SPECIALS})
    tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def save_tiny_llm_cxr(folder: str | Path, seed: int = 0) -> Path:
    from torchxrayvision.baseline_models.ieee8023.vqgan import VQModel
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    folder = Path(folder)
    tokenizer = _byte_level_tokenizer()
    torch.manual_seed(seed)
    config = GPTNeoXConfig(vocab_size=len(tokenizer) + TAMING_CODES, hidden_size=32, num_hidden_layers=2,
                           num_attention_heads=4, intermediate_size=64, rotary_pct=0.25,
                           max_position_embeddings=512, eos_token_id=tokenizer.eos_token_id,
                           bos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.eos_token_id)
    GPTNeoXForCausalLM(config).save_pretrained(folder / "lm")
    tokenizer.save_pretrained(folder / "lm")

    vq = VQModel(TAMING_DDCONFIG, TAMING_CODES, 8)
    with torch.no_grad():  # a codebook spread like a trained one (taming's init is nearly all equal)
        vq.quantize.embedding.weight.normal_()
    state = {**vq.state_dict(), "loss.discriminator.main.0.weight": torch.zeros(4, 3, 4, 4),
             "loss.logvar": torch.zeros(())}
    (folder / "vqgan").mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": state, "global_step": 0, "epoch": 0}, folder / "vqgan" / "last-compat.ckpt")
    ddconfig = "\n".join(f"      {key}: {json.dumps(value)}" for key, value in TAMING_DDCONFIG.items())
    (folder / "vqgan" / "project-compat.yaml").write_text(
        "model:\n  base_learning_rate: 4.5e-06\n  target: taming.models.vqgan.VQModel\n  params:\n"
        f"    embed_dim: 8\n    n_embed: {TAMING_CODES}\n    ddconfig:\n{ddconfig}\n"
        "    lossconfig:\n      target: taming.modules.losses.vqperceptual.VQLPIPSWithDiscriminator\n"
        "      params:\n        disc_start: 10000\n", encoding="utf-8")
    return folder


def write_emu3_tokenizer(folder: Path, codebook_size: int = EMU3_CODES) -> None:
    """``emu3.tiktoken`` with the 256 single bytes as ranks and ``emu3_vision_tokens.txt``."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = [base64.b64encode(bytes([value])).decode() + f" {value}" for value in range(256)]
    (folder / "emu3.tiktoken").write_text("\n".join(lines) + "\n", encoding="utf-8")
    vision = ["<|image token|>", "<|image start|>", "<|image end|>",
              *[f"<|visual token {k:06d}|>" for k in range(codebook_size)]]
    (folder / "emu3_vision_tokens.txt").write_text("\n".join(vision) + "\n", encoding="utf-8")


def emu3_tiny_vocab(codebook_size: int = EMU3_CODES) -> int:
    return 256 + 3 + 205 + 3 + codebook_size


def save_tiny_emu3_vq_baai(folder: Path, seed: int = 0):
    """A tiny Emu3 vision tokenizer written in BAAI names; returns the transformers model it was made from."""
    from safetensors.torch import save_file
    from transformers import Emu3VQVAE

    from cfbench.autoregressive.emu3_vq import baai_config, transformers_config, transformers_to_baai

    torch.manual_seed(seed)
    model = Emu3VQVAE(transformers_config(EMU3_VQ_CONFIG)).eval()
    with torch.no_grad():
        model.quantize.embedding.weight.normal_()
    folder.mkdir(parents=True, exist_ok=True)
    state = {key: value.contiguous() for key, value in transformers_to_baai(model.state_dict()).items()}
    save_file(state, folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps(baai_config(model.config), indent=2), encoding="utf-8")
    return model


def save_tiny_progemu(folder: str | Path, seed: int = 0) -> Path:
    from transformers import Emu3ForCausalLM, Emu3TextConfig

    folder = Path(folder)
    write_emu3_tokenizer(folder)
    specials = 256  # ids: endoftext 256, im_start, im_end, extra_0 = 259 ... extra_204 = 463, img 464 ...
    torch.manual_seed(seed)
    fields = dict(vocab_size=emu3_tiny_vocab(), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                  rms_norm_eps=1e-5, pad_token_id=specials, bos_token_id=specials + 3 + 203,
                  eos_token_id=specials + 3 + 204)
    model = Emu3ForCausalLM(Emu3TextConfig(**fields, rope_parameters={"rope_type": "default", "rope_theta": 1e6}))
    model.save_pretrained(folder)
    baai = {"architectures": ["Emu3ForCausalLM"], "model_type": "Emu3", "hidden_act": "silu", "rope_theta": 1e6,
            "auto_map": {"AutoConfig": "configuration_emu3.Emu3Config"}, "torch_dtype": "float32", **fields}
    (folder / "config.json").write_text(json.dumps(baai, indent=2), encoding="utf-8")
    save_tiny_emu3_vq_baai(folder / "vision_tokenizer", seed)
    return folder
