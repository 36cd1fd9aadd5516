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

The constraint (the release's prefix-constrained processor, ``Emu3PrefixConstrainedLogitsHelper``): visual
tokens, ``eol`` every (W+1)-th token, ``eof`` and ``eoi`` after H rows, then text ids below
``text_vocab_limit`` (2 at least, the end id allowed from the 3rd, forced after ``max_text_tokens`` = 198),
then ``eos``. The release's helper tests "every (W+1)-th position" before anything else, so it also forces
``eol`` inside the interpretation: at text positions 63, 128 and 193 (1-based; W = 64) - stripped from the
returned text, but it changes what the model writes after it (:func:`release_text_eol_positions`). The
text after ``eoi`` is returned as ``explanation`` (for BLEU-3 / METEOR / ROUGE-L).

Options:

=================  ===========  ==============================================================================
option             default      meaning
=================  ===========  ==============================================================================
prompt             progression  "progression" (else the instruction) or "instruction"
constrain          true         the prefix constraint above; false = free sampling up to the same cap
text_eol           release      "release": ``eol`` forced at the text positions above, as released; "none":
                                the interpretation is free text (what the grammar means to do)
pad_codes          last         a grid with fewer codes than cells (only without the constraint) is padded
                                with its last code, as the release's "global" fit; "zero": with code 0. No
                                code at all: a black image (the release's empty output)
text_cleanup       release      "release": the release's post-processing: ``<...>`` fragments (special
                                tokens such as the forced ``eol``) removed, text of 5 characters or fewer
                                dropped; "none": the text ids decoded as they are
negative_header    release      header of the CFG negative prompt: "release" = "64*64" whatever the grid (the
                                release's processor without an image); "grid" = the grid's own "H*W"
top_k              2048         as released (0 = off)
top_p              1.0          (0, 1]
temperature        1.0          > 0
cfg                false        classifier-free guidance (off in the release's script)
cfg_scale          3.0          guidance scale on log-probabilities when cfg=true
negative_prompt    ""           text of the negative prompt ``bos + text + boi "64*64" img`` (the release: "")
max_text_tokens    198          cap on interpretation tokens (forced ``eol`` included, as released)
text_vocab_limit   100000       text ids allowed after the image: 0 .. limit-1 (the release's range(100000))
native_resolution  512          pixels the VQ runs at (512 -> 64 x 64 tokens, 4,160 grid tokens)
precision          auto         bf16 on CUDA (as released), fp32 on CPU; fp32, fp16, bf16
device_map         none         "auto": transformers/accelerate spread the 8B LM over GPU and CPU memory
=================  ===========  ==============================================================================

Cost: about 4.4k prompt + 4.2k generated tokens per sample with an 8B model. Batches share one KV cache
(about 0.5 MB per token in bf16: 8.6k tokens x batch 4 = 18 GB on top of 16 GB of weights). On a single
24 GB GPU use ``--batch-size 1`` (or ``device_map=auto``, which offloads layers to CPU and is slow); on 40 GB,
batch 2-4. Runs resume per sample.

Departures from the release: per-sample seeded sampling in our own loop (the release fixes seed 1234 once
and draws from the global RNG). ``text_eol=none`` and ``text_cleanup=none`` are kept as options because the
forced ``eol`` is an artefact of the release's position test, not something the model was trained to write
inside text; the release's numbers were made with it.
"""

from __future__ import annotations

import dataclasses
import re
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
    text_eol: str = "release"
    pad_codes: str = "last"
    text_cleanup: str = "release"
    negative_header: str = "release"
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
        "device_map": ("none", "auto"), "text_eol": ("release", "none"), "pad_codes": ("last", "zero"),
        "text_cleanup": ("release", "none"), "negative_header": ("release", "grid")}

    def check(self) -> None:
        if not 0.0 < self.top_p <= 1.0 or self.temperature <= 0 or self.top_k < 0:
            raise ValueError("top_p must lie in (0, 1], temperature > 0, top_k >= 0")
        if self.max_text_tokens < 3 or self.text_vocab_limit < 1 or self.native_resolution < 8:
            raise ValueError("max_text_tokens must be >= 3, text_vocab_limit >= 1, native_resolution >= 8")


# 2: the release's behaviour by default (forced eol in the text, last-code padding, its text clean-up and
# negative-prompt header); version-1 runs never mix with these.
ADAPTER_VERSION = 2
RELEASE_GRID = 64  # the release's processor assumes 64 x 64 tokens wherever it has no image to measure


def release_text_eol_positions(grid: int, max_text_tokens: int) -> tuple[int, ...]:
    """0-based text positions where the release's prefix constraint forces ``eol``.

    Its helper counts ``offset`` from the output image's ``img`` token (1 = the first generated token) and
    returns ``eol`` whenever ``offset % (grid + 1) == 0``, before any other rule. The fixed part (grid rows
    of grid + 1 tokens, then eof and eoi) ends at offset ``(grid + 1) * grid + 2``, so text position ``k``
    has offset ``(grid + 1) * grid + 3 + k``. For grid 64 and 198 text tokens: 62, 127, 192.
    """
    first = (grid + 1) * grid + 3
    return tuple(k for k in range(max_text_tokens) if (first + k) % (grid + 1) == 0)


def release_text_cleanup(text: str) -> str:
    """The release's text post-processing: every ``<...>`` fragment removed, the rest stripped, and text of
    5 characters or fewer dropped (returned as "")."""
    cleaned = re.sub(r"<.*?>", "", text).strip()
    return cleaned if len(cleaned) > 5 else ""


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

    def image_header(self, side: int | None = None) -> list[int]:
        """``boi "H*W" img`` for a ``side`` x ``side`` grid (default: this model's grid)."""
        t, side = self.tokenizer, side or self.grid
        return [t.boi_id, *t.encode(f"{side}*{side}"), t.img_id]

    def prompt_ids(self, prior_codes, text: str) -> list[int]:
        """``bos`` + the prior image (header, rows + eol, eof, eoi) + text + the output image header."""
        t = self.tokenizer
        rows = []
        for row in prior_codes.tolist():
            rows += [t.visual_first + int(code) for code in row] + [t.eol_id]
        return [t.bos_id, *self.image_header(), *rows, t.eof_id, t.eoi_id, *t.encode(text), *self.image_header()]

    def negative_prompt_ids(self) -> list[int]:
        t = self.tokenizer
        side = RELEASE_GRID if self.settings.negative_header == "release" else self.grid
        return [t.bos_id, *t.encode(self.settings.negative_prompt), *self.image_header(side)]

    def constraint(self):
        from cfbench import autoregressive as ar

        t = self.tokenizer
        visual = ar.id_set(range(t.visual_first, t.visual_first + self.vq.config.codebook_size))
        text = ar.id_set(range(min(self.settings.text_vocab_limit, t.regular_size)))
        fixed = ar.image_grid(visual, self.grid, self.grid, row_end=t.eol_id) + ar.forced([t.eof_id, t.eoi_id])
        eol_at = (release_text_eol_positions(self.grid, self.settings.max_text_tokens)
                  if self.settings.text_eol == "release" else ())
        return ar.GrammarConstraint(fixed, ar.TextTail(text, t.eos_id, min_length=2,
                                                       max_length=self.settings.max_text_tokens,
                                                       forced_at=eol_at, forced_id=t.eol_id))

    def split_output(self, tokens: Sequence[int]) -> tuple[list[int] | None, str]:
        """(visual codes in order, truncated to grid x grid and padded as ``pad_codes`` says, None when there
        is none; the text after eoi, cleaned as ``text_cleanup`` says)."""
        t, cells = self.tokenizer, self.grid * self.grid
        end = tokens.index(t.eoi_id) if t.eoi_id in tokens else len(tokens)
        codes = [tok - t.visual_first for tok in tokens[:end]
                 if t.visual_first <= tok < t.visual_first + self.vq.config.codebook_size][:cells]
        if self.settings.text_cleanup == "release":  # special tokens decoded to their text, then removed
            text = release_text_cleanup(t.decode([tok for tok in tokens[end + 1:] if tok != t.eos_id]))
        else:
            text = t.decode([tok for tok in tokens[end + 1:] if tok < t.regular_size]).strip()
        if not codes:
            return None, text
        padding = codes[-1] if self.settings.pad_codes == "last" else 0
        return codes + [padding] * (cells - len(codes)), text

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
        cells = self.grid * self.grid
        grids = torch.tensor([codes or [0] * cells for codes, _ in split], dtype=torch.long)
        images = emu3_decode(self.vq, grids.view(-1, self.grid, self.grid)).cpu()
        results = []
        for request, image, (codes, text), tokens in zip(requests, images, split, outputs):
            if codes is None:  # the release writes a black image when no visual token came out
                image = torch.zeros_like(image)
            out = resize_batch(image[None], request.image.shape)[0].numpy().astype(np.float32)
            results.append(EditResult(image=out, explanation=text, sample_id=request.sample_id, info={
                "generated_tokens": len(tokens), "prompt": self.progression_text(request)}))
        return results

    def identity(self) -> dict[str, Any]:
        return {"weights_sha256": folder_sha256(self.folder), "adapter_version": ADAPTER_VERSION,
                "settings": dataclasses.asdict(self.settings)}
