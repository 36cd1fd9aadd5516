"""A tiny random RadEdit in the release's three-part layout: ``unet/`` (diffusers UNet2DConditionModel),
``vae/`` (AutoencoderKL with SDXL's scaling factor 0.13025 and ``force_upcast``) and ``text_encoder/`` (a
CXR-BERT folder as BioViL-T ships it: ``config.json`` with ``model_type: cxr-bert`` and remote-code
``auto_map``, ``pytorch_model.bin`` with ``bert.*``, ``cls.predictions.*`` and ``cls_projection_head.*``
keys, ``vocab.txt``, ``tokenizer_config.json`` naming ``CXRBertTokenizer``)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from tests.helpers.tiny_diffusion import TEXT_HIDDEN_SIZE, UNET_CHANNELS, VAE_CHANNELS, _tiny_components

SDXL_VAE_SCALING = 0.13025
_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "no", "left", "right", "small", "large", "pleural",
          "effusion", "edema", "cardiomegaly", "pneumothorax", "atelectasis", "consolidation", "opacity", "."]


def save_tiny_cxr_bert(folder: Path, projection_size: int = 16) -> Path:
    from transformers import BertConfig, BertForMaskedLM

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(_VOCAB + [chr(c) for c in range(97, 123)]) + "\n")
    config = BertConfig(vocab_size=len(_VOCAB) + 26, hidden_size=TEXT_HIDDEN_SIZE, num_hidden_layers=2,
                        num_attention_heads=4, intermediate_size=64, max_position_embeddings=128)
    torch.manual_seed(5)
    model = BertForMaskedLM(config)
    state = dict(model.state_dict())
    torch.manual_seed(6)
    for name, shape in {"dense_to_hidden.weight": (TEXT_HIDDEN_SIZE, TEXT_HIDDEN_SIZE),
                        "dense_to_hidden.bias": (TEXT_HIDDEN_SIZE,), "LayerNorm.weight": (TEXT_HIDDEN_SIZE,),
                        "LayerNorm.bias": (TEXT_HIDDEN_SIZE,),
                        "dense_to_output.weight": (projection_size, TEXT_HIDDEN_SIZE),
                        "dense_to_output.bias": (projection_size,)}.items():
        state[f"cls_projection_head.{name}"] = torch.randn(shape) * 0.02
    torch.save(state, folder / "pytorch_model.bin")
    raw = config.to_dict()
    raw.update({"model_type": "cxr-bert", "architectures": ["CXRBertModel"], "projection_size": projection_size,
                "auto_map": {"AutoConfig": "configuration_cxrbert.CXRBertConfig",
                             "AutoModel": "modeling_cxrbert.CXRBertModel"}})
    (folder / "config.json").write_text(json.dumps(raw))
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"do_lower_case": True, "tokenizer_class": "CXRBertTokenizer", "model_max_length": 512,
         "auto_map": {"AutoTokenizer": ["tokenization_cxrbert.CXRBertTokenizer", None]}}))
    return folder


def save_tiny_radedit(folder: Path, sample_size: int = 16) -> Path:
    """``folder/unet``, ``folder/vae``, ``folder/text_encoder``; images of ``2 * sample_size`` px."""
    folder = Path(folder)
    parts = _tiny_components(4, sample_size, folder, UNET_CHANNELS, VAE_CHANNELS)
    parts["vae"].register_to_config(scaling_factor=SDXL_VAE_SCALING, force_upcast=True)
    parts["unet"].save_pretrained(folder / "unet", safe_serialization=True)
    parts["vae"].save_pretrained(folder / "vae", safe_serialization=True)
    save_tiny_cxr_bert(folder / "text_encoder")
    import shutil

    shutil.rmtree(folder / "_tokenizer_source", ignore_errors=True)
    return folder
