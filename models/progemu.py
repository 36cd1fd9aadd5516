"""ProgEmu (Masaaki-75/progemu): an Emu3-Gen fine-tune that reads a prior X-ray (as Emu3 vision tokens) and a
progression prompt, and writes the follow-up image's tokens and then an interpretation of the change.

Weights folder (``--model-path`` or ``{weights_dir}/progemu``):

- the ProgEmu LM folder itself (HF ``massaki75/progemu``): BAAI's ``config.json`` and weights, loaded as
  transformers' ``Emu3ForCausalLM`` (the text weights keep their names), plus the tokenizer files
  ``emu3.tiktoken`` and ``emu3_vision_tokens.txt`` (copy them from ``BAAI/Emu3-Stage1`` if absent);
- ``vision_tokenizer/``: ``BAAI/Emu3-VisionTokenizer`` (converted to transformers' ``Emu3VQVAE`` names in
  memory at load), or the folder ``cfbench convert-ckpt --format emu3-vq`` writes.

Prompt (no chat template, as the release's inference): ``bos boi "H*W" img`` + H rows of W prior tokens each
followed by ``eol``, then ``eof eoi`` + progression text + ``boi "H*W" img``. The progression text is
``EditRequest.progression`` (ICG-CXR's ``progression-description``), else the instruction.

The constraint (the release's prefix-constrained processor): visual tokens, ``eol`` every (W+1)-th token,
``eof`` and ``eoi`` after H rows, then text ids below ``text_vocab_limit`` (2 at least, the end id allowed
from the 3rd, forced after ``max_text_tokens`` = 198), then ``eos``. The text after ``eoi`` is returned as
``explanation`` (for BLEU-3 / METEOR / ROUGE-L).

Options:

=================  =========  ================================================================================
option             default    meaning
=================  =========  ================================================================================
prompt             progression  "progression" (else the instruction) or "instruction"
constrain          true       the prefix constraint above; false = free sampling up to the same cap, the grid
                              padded with code 0 / truncated (the release's "global" fit)
top_k              2048       as released (0 = off)
top_p              1.0        (0, 1]
temperature        1.0        > 0
cfg                false      classifier-free guidance (off in the release's script)
cfg_scale          3.0        guidance scale on log-probabilities when cfg=true
negative_prompt    ""         text of the negative prompt ``bos + text + boi "H*W" img`` (the release: "")
max_text_tokens    198        cap on interpretation tokens
text_vocab_limit   100000     text ids allowed after the image: 0 .. limit-1 (the release's range(100000))
native_resolution  512        pixels the VQ runs at (512 -> 64 x 64 tokens, 4,160 grid tokens)
precision          auto       bf16 on CUDA (as released), fp32 on CPU; fp32, fp16, bf16
device_map         none       "auto": transformers/accelerate spread the 8B LM over GPU and CPU memory
=================  =========  ================================================================================

Cost: about 4.4k prompt + 4.2k generated tokens per sample with an 8B model. Batches share one KV cache
(about 0.5 MB per token in bf16: 8.6k tokens x batch 4 = 18 GB on top of 16 GB of weights). On a single
24 GB GPU use ``--batch-size 1`` (or ``device_map=auto``, which offloads layers to CPU and is slow); on 40 GB,
batch 2-4. Runs resume per sample.

Departures from the release: per-sample seeded sampling in our own loop (the release fixes seed 1234 once
and draws from the global RNG); the text is decoded as is (the release also drops ``<...>`` fragments and
text pieces of 5 characters or fewer).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from cfbench.api.model import Capabilities, CounterfactualModel, EditRequest, EditResult, LoadContext
from cfbench.api.options import ModelOptions
from cfbench.api.registry import register, resolve_model_path
from cfbench.core.errors import MissingWeights, WeightsNotFoundError
from cfbench.core.hashing import folder_sha256
from cfbench.core.precision import resolve_dtype

WEIGHTS_HELP = ("Download https://huggingface.co/massaki75/progemu into this folder (add emu3.tiktoken and "
                "emu3_vision_tokens.txt from BAAI/Emu3-Stage1 if it lacks them) and "
                "https://huggingface.co/BAAI/Emu3-VisionTokenizer into its vision_tokenizer/ sub-folder.")


@dataclass(frozen=True)
class ProgEmuOptions(ModelOptions):
    """See the module docstring."""

    prompt: str = "progression"
    constrain: bool = True
    top_k: int = 2048
    top_p: float = 1.0
    temperature: float = 1.0
    cfg: bool = False
    cfg_scale: float = 3.0
    negative_prompt: str = ""
    max_text_tokens: int = 198
    text_vocab_limit: int = 100000
    native_resolution: int = 512
    precision: str = "auto"
    device_map: str = "none"

    choices: ClassVar[dict[str, tuple[str, ...]]] = {
        "prompt": ("progression", "instruction"), "precision": ("auto", "fp32", "fp16", "bf16"),
        "device_map": ("none", "auto")}

    def check(self) -> None:
        if not 0.0 < self.top_p <= 1.0 or self.temperature <= 0 or self.top_k < 0:
            raise ValueError("top_p must lie in (0, 1], temperature > 0, top_k >= 0")
        if self.max_text_tokens < 3 or self.text_vocab_limit < 1 or self.native_resolution < 8:
            raise ValueError("max_text_tokens must be >= 3, text_vocab_limit >= 1, native_resolution >= 8")


@register
class ProgEmu(CounterfactualModel):
    name = "progemu"
    capabilities = Capabilities(edits_image=True, guidance_map=False, explanation=True)
    native_resolution = 512
    weights_subdir = "progemu"
    weights_help = WEIGHTS_HELP
    description = "ProgEmu: prior image + progression prompt -> follow-up image + interpretation (Emu3)"

    def __init__(self, lm, tokenizer, vq, settings: ProgEmuOptions, folder: Path):
        from cfbench.autoregressive.emu3_vq import emu3_spatial_factor

        self.lm, self.tokenizer, self.vq, self.settings, self.folder = lm, tokenizer, vq, settings, folder
        factor = emu3_spatial_factor(vq)
        if settings.native_resolution % factor:
            raise ValueError(f"native_resolution must be a multiple of the VQ's factor {factor}")
        self.grid = settings.native_resolution // factor
        if tokenizer.codebook_size < vq.config.codebook_size:
            raise ValueError(f"{tokenizer.codebook_size} visual tokens < VQ codebook {vq.config.codebook_size}")

    @classmethod
    def load(cls, context: LoadContext) -> ProgEmu:
        from cfbench.autoregressive.emu3_text import (TIKTOKEN_FILE, VISION_TOKENS_FILE, load_emu3_lm,
                                                      load_emu3_tokenizer)
        from cfbench.autoregressive.emu3_vq import load_emu3_vq

        settings = ProgEmuOptions.from_options(context.options)
        folder = resolve_model_path(cls, context.model_path)
        needed = [("ProgEmu LM config", folder / "config.json"),
                  ("Emu3 tokenizer table", folder / TIKTOKEN_FILE),
                  ("Emu3 vision-token list", folder / VISION_TOKENS_FILE),
                  ("Emu3 vision tokenizer config", folder / "vision_tokenizer" / "config.json")]
        missing = [MissingWeights(what, path, WEIGHTS_HELP) for what, path in needed if not path.is_file()]
        if missing:
            raise WeightsNotFoundError(missing)
        dtype = resolve_dtype(settings.precision, context.device, cuda_auto="bf16")
        device_map = None if settings.device_map == "none" else settings.device_map
        lm = load_emu3_lm(folder, dtype=dtype, device=context.device, device_map=device_map)
        vq = load_emu3_vq(folder / "vision_tokenizer", device=context.device)
        return cls(lm, load_emu3_tokenizer(folder), vq, settings, folder)

    # ------------------------------------------------------------------ prompt and grammar

    def progression_text(self, request: EditRequest) -> str:
        if self.settings.prompt == "progression" and request.progression:
            return request.progression
        return request.instruction

    def image_header(self) -> list[int]:
        t = self.tokenizer
        return [t.boi_id, *t.encode(f"{self.grid}*{self.grid}"), t.img_id]

    def prompt_ids(self, prior_codes, text: str) -> list[int]:
        """``bos`` + the prior image (header, rows + eol, eof, eoi) + text + the output image header."""
        t = self.tokenizer
        rows = []
        for row in prior_codes.tolist():
            rows += [t.visual_first + int(code) for code in row] + [t.eol_id]
        return [t.bos_id, *self.image_header(), *rows, t.eof_id, t.eoi_id, *t.encode(text), *self.image_header()]

    def negative_prompt_ids(self) -> list[int]:
        t = self.tokenizer
        return [t.bos_id, *t.encode(self.settings.negative_prompt), *self.image_header()]

    def constraint(self):
        from cfbench import autoregressive as ar

        t = self.tokenizer
        visual = ar.id_set(range(t.visual_first, t.visual_first + self.vq.config.codebook_size))
        text = ar.id_set(range(min(self.settings.text_vocab_limit, t.regular_size)))
        fixed = ar.image_grid(visual, self.grid, self.grid, row_end=t.eol_id) + ar.forced([t.eof_id, t.eoi_id])
        return ar.GrammarConstraint(fixed, ar.TextTail(text, t.eos_id, min_length=2,
                                                       max_length=self.settings.max_text_tokens))

    def split_output(self, tokens: Sequence[int]) -> tuple[list[int], str]:
        """(visual codes in order, padded with 0 / truncated to grid x grid; the text after eoi)."""
        t, cells = self.tokenizer, self.grid * self.grid
        end = tokens.index(t.eoi_id) if t.eoi_id in tokens else len(tokens)
        codes = [tok - t.visual_first for tok in tokens[:end]
                 if t.visual_first <= tok < t.visual_first + self.vq.config.codebook_size][:cells]
        text_ids = [tok for tok in tokens[end + 1:] if tok < t.regular_size]
        return codes + [0] * (cells - len(codes)), t.decode(text_ids).strip()

    # ------------------------------------------------------------------ generation

    def edit(self, requests: Sequence[EditRequest]) -> list[EditResult]:
        import torch

        from cfbench import autoregressive as ar
        from cfbench.autoregressive.emu3_vq import emu3_decode, emu3_encode
        from cfbench.core.resize import resize_batch

        side = self.settings.native_resolution
        priors = torch.stack([resize_batch(torch.from_numpy(r.image)[None], (side, side))[0] for r in requests])
        prior_codes = emu3_encode(self.vq, priors).cpu()
        prompts = [self.prompt_ids(codes, self.progression_text(r)) for codes, r in zip(prior_codes, requests)]
        grammar = self.constraint()
        settings = ar.SamplingSettings(
            temperature=self.settings.temperature, top_k=self.settings.top_k, top_p=self.settings.top_p,
            max_new_tokens=grammar.max_length, stop_ids=(self.tokenizer.eos_id,),
            guidance_scale=self.settings.cfg_scale if self.settings.cfg else 1.0)
        negatives = [self.negative_prompt_ids()] * len(requests) if self.settings.cfg else None
        constraints = [self.constraint() if self.settings.constrain else None for _ in requests]
        outputs = ar.sample_tokens(self.lm, prompts, ar.cpu_generators([r.seed for r in requests]), settings,
                                   pad_id=self.tokenizer.pad_id, constraints=constraints, negative_prompts=negatives)
        split = [self.split_output(tokens) for tokens in outputs]
        grids = torch.tensor([codes for codes, _ in split], dtype=torch.long).view(-1, self.grid, self.grid)
        images = emu3_decode(self.vq, grids).cpu()
        results = []
        for request, image, (_, text), tokens in zip(requests, images, split, outputs):
            out = resize_batch(image[None], request.image.shape)[0].numpy().astype(np.float32)
            results.append(EditResult(image=out, explanation=text, sample_id=request.sample_id, info={
                "generated_tokens": len(tokens), "prompt": self.progression_text(request)}))
        return results

    def identity(self) -> dict[str, Any]:
        return {"weights_sha256": folder_sha256(self.folder), "constrain": self.settings.constrain,
                "cfg": self.settings.cfg}
