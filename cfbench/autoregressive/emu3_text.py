"""Emu3's text side: the tiktoken tokenizer with Emu3's special ids, and the causal LM as transformers'
``Emu3ForCausalLM``.

Tokenizer files (BAAI layout, read without remote code): ``emu3.tiktoken`` (base64 token + rank per line)
and ``emu3_vision_tokens.txt`` (one special token per line: ``<|image token|>``, ``<|image start|>``,
``<|image end|>``, then ``<|visual token 000000|>`` ...). Special ids start right after the regular
ranks (151643 in the release, whose table has 151643 ranks): ``<|endoftext|>`` (pad), ``<|im_start|>``,
``<|im_end|>``, ``<|extra_0|>`` ... ``<|extra_204|>``, then the vision-token lines in order. Hence, in the
release: pad 151643, eol = extra_200 = 151846, eof = extra_201 = 151847, bos = extra_203 = 151849,
eos = extra_204 = 151850, img 151851, boi 151852, eoi 151853, visual token k = 151854 + k.

The LM folder's ``config.json`` is BAAI's (``model_type`` "Emu3"); its fields map one to one onto
``Emu3TextConfig`` and its weights (``model.*``, ``lm_head.*``) load as they are.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path

import torch

TIKTOKEN_FILE = "emu3.tiktoken"
VISION_TOKENS_FILE = "emu3_vision_tokens.txt"
PATTERN = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"""
           r"""\s*[\r\n]+|\s+(?!\S)|\s+""")
VISUAL_TOKEN = "<|visual token {:06d}|>"
NAMED = {"pad": "<|endoftext|>", "eol": "<|extra_200|>", "eof": "<|extra_201|>", "bos": "<|extra_203|>",
         "eos": "<|extra_204|>", "img": "<|image token|>", "boi": "<|image start|>", "eoi": "<|image end|>"}


@dataclass
class Emu3Tokenizer:
    """tiktoken encoding plus the ids the ProgEmu grammar needs (see the module docstring)."""

    encoding: object
    special: dict[str, int]
    regular_size: int  # number of regular (BPE) ids; they are 0 .. regular_size - 1
    visual_first: int  # id of visual token 0
    codebook_size: int

    def __getattr__(self, name: str) -> int:
        if name.endswith("_id") and name[:-3] in NAMED:
            return self.special[NAMED[name[:-3]]]
        raise AttributeError(name)

    def encode(self, text: str) -> list[int]:
        """Plain text -> ids (special-token text is encoded as ordinary text)."""
        return self.encoding.encode(text, disallowed_special=())

    def encode_with_specials(self, text: str) -> list[int]:
        """Text in which special-token surface forms become their ids (as BAAI's tokenizer does)."""
        return self.encoding.encode(text, allowed_special="all")

    def decode(self, ids) -> str:
        return self.encoding.decode([int(token) for token in ids])


def load_emu3_tokenizer(folder: str | Path) -> Emu3Tokenizer:
    import tiktoken

    folder = Path(folder)
    ranks = {}
    for line in (folder / TIKTOKEN_FILE).read_bytes().splitlines():
        if line.strip():
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    vision = [line.strip() for line in (folder / VISION_TOKENS_FILE).read_text(encoding="utf-8").splitlines()
              if line.strip()]
    names = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", *[f"<|extra_{i}|>" for i in range(205)], *vision]
    start = len(ranks)
    special = {name: start + offset for offset, name in enumerate(names)}
    encoding = tiktoken.Encoding("Emu3", pat_str=PATTERN, mergeable_ranks=ranks, special_tokens=special)
    visual = [name for name in vision if name.startswith("<|visual token")]
    first = special[VISUAL_TOKEN.format(0)]
    if [special[name] for name in visual] != list(range(first, first + len(visual))):
        raise ValueError(f"{folder / VISION_TOKENS_FILE}: visual tokens are not consecutive from 000000")
    missing = sorted(set(NAMED.values()) - set(special))
    if missing:
        raise ValueError(f"{folder / VISION_TOKENS_FILE}: special tokens {missing} are missing")
    return Emu3Tokenizer(encoding, special, start, first, len(visual))


_TEXT_FIELDS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "hidden_act", "max_position_embeddings", "rms_norm_eps",
                "pad_token_id", "bos_token_id", "eos_token_id", "tie_word_embeddings")


def text_config(config: dict):
    """``Emu3TextConfig`` from a BAAI (or transformers) Emu3 ``config.json`` dict; rope_theta -> rope
    parameters; attention dropout 0 (inference)."""
    from transformers import Emu3TextConfig

    fields = {key: config[key] for key in _TEXT_FIELDS if key in config}
    if "text_config" in config:  # an Emu3ForConditionalGeneration folder
        return text_config(config["text_config"])
    theta = config.get("rope_theta", (config.get("rope_parameters") or {}).get("rope_theta", 1e6))
    fields["rope_parameters"] = {"rope_type": "default", "rope_theta": float(theta)}
    return Emu3TextConfig(**fields, attention_dropout=0.0)


def load_emu3_lm(folder: str | Path, dtype=torch.float32, device="cpu", device_map: str | None = None):
    """``Emu3ForCausalLM`` from a ProgEmu / Emu3-Gen folder (config.json + weights), eval mode.
    ``device_map`` ("auto", or None to place on ``device``) is passed to transformers (accelerate offload)."""
    from transformers import Emu3ForCausalLM

    folder = Path(folder)
    config = text_config(json.loads((folder / "config.json").read_text(encoding="utf-8")))
    kwargs = {"device_map": device_map} if device_map else {}
    model = Emu3ForCausalLM.from_pretrained(folder, config=config, dtype=dtype, **kwargs)
    if not device_map:
        model = model.to(device)
    return model.eval()
