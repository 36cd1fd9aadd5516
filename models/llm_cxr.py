"""LLM-CXR (hyn2028/llm-cxr): a Dolly-v2-3b causal LM (``GPTNeoXForCausalLM``) fine-tuned to write 256
VQ-GAN image tokens for a radiology report; a taming VQ-GAN decodes them. Text-to-image: the input image
is not used.

Weights folder (``--model-path`` or ``{weights_dir}/llm-cxr``):

- ``lm/``: the released causal-LM folder (``config.json``, weights, tokenizer files with the added special
  tokens ``### End``, ``### Instruction:``, ``### Response:\\n``);
- ``vqgan/``: the VQ-GAN Lightning checkpoint (one ``*.ckpt``) and its OmegaConf yaml (one ``*.yaml``),
  loaded through torchxrayvision's bundled ``VQModel`` (:mod:`cfbench.autoregressive.taming_vq`).

Image token id = VQ index + ``len(tokenizer)`` (50281 for the release), computed from the tokenizer.

Options (``--option key=value``), defaults as released:

==============  ==============  ==============================================================================
option          default         meaning
==============  ==============  ==============================================================================
prompt          target_report   the report in the prompt: the target study's impression, or "instruction"
constrain       true            the answer is forced to ``<`` + grid x grid image tokens + ``>`` (no retry
                                needed); false: free sampling, stop at ``### End``, bounded retries
top_p           0.92            nucleus sampling mass, (0, 1]
top_k           0               0 = off
temperature     1.0             > 0
max_new_tokens  300             cap per attempt when constrain=false (as their evaluation)
max_retries     3               constrain=false: attempts after the first when the grid is not complete
precision       auto            bf16 on CUDA, fp32 on CPU; fp32, fp16, bf16
==============  ==============  ==============================================================================

Departures from the release: seeded per-sample sampling (our loop, not ``generate``); the release retries
without limit until 256 image tokens come out, here the grammar makes every sample well formed (or, with
``constrain=false``, at most ``max_retries`` retries, after which the grid is padded with code 0 or
truncated and ``info["image_tokens"]`` says how many came out).
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
from cfbench.core.precision import resolve_dtype as precision_dtype

PROMPT = ("Below is an instruction that describes a task. Write a response that appropriately completes the "
          "request.\n\n### Instruction:\n{instruction}\n\nInput:\n{report}\n\n### Response:\n")
INSTRUCTION = ("Generate a chest X-ray image that corresponds to the entered free-text radiology reports for the "
               "chest X-ray image.")
END_TOKEN = "### End"
WEIGHTS_HELP = ("Download the LLM-CXR release (links in https://github.com/hyn2028/llm-cxr): put the fine-tuned "
                "causal-LM folder in lm/ and the VQ-GAN checkpoint (*.ckpt) with its yaml (*.yaml) in vqgan/.")


@dataclass(frozen=True)
class LLMCXROptions(ModelOptions):
    """See the module docstring."""

    prompt: str = "target_report"
    constrain: bool = True
    top_p: float = 0.92
    top_k: int = 0
    temperature: float = 1.0
    max_new_tokens: int = 300
    max_retries: int = 3
    precision: str = "auto"

    choices: ClassVar[dict[str, tuple[str, ...]]] = {
        "prompt": ("target_report", "instruction"), "precision": ("auto", "fp32", "fp16", "bf16")}

    def check(self) -> None:
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must lie in (0, 1], got {self.top_p}")
        if self.top_k < 0 or self.max_retries < 0 or self.max_new_tokens < 1 or self.temperature <= 0:
            raise ValueError("top_k and max_retries must be >= 0, max_new_tokens >= 1, temperature > 0")


def resolve_dtype(precision: str, device: str):
    """torch dtype of the LM: auto = bf16 on CUDA, fp32 elsewhere."""
    return precision_dtype(precision, device, cuda_auto="bf16")


def weights_sha256(folder: Path) -> dict[str, str]:
    """SHA-256 of every weights file under ``folder``, keyed by relative path (cached beside the files)."""
    return folder_sha256(folder)


def vqgan_files(folder: Path) -> tuple[Path | None, Path | None]:
    """(checkpoint, yaml) in ``folder/vqgan``: the single ``*.ckpt`` and the single ``*.yaml``."""
    checkpoints = sorted((folder / "vqgan").glob("*.ckpt"))
    configs = sorted((folder / "vqgan").glob("*.yaml"))
    return (checkpoints[0] if len(checkpoints) == 1 else None), (configs[0] if len(configs) == 1 else None)


@register
class LLMCXR(CounterfactualModel):
    name = "llm-cxr"
    capabilities = Capabilities(edits_image=False, guidance_map=False, explanation=False)
    native_resolution = 256
    weights_subdir = "llm-cxr"
    weights_help = WEIGHTS_HELP
    description = "LLM-CXR: report -> 256 VQ-GAN tokens from a GPT-NeoX LM -> image (text-to-image)"

    def __init__(self, lm, tokenizer, vq, settings: LLMCXROptions, folder: Path):
        from cfbench.autoregressive.taming_vq import taming_grid_side

        self.lm, self.tokenizer, self.vq, self.settings, self.folder = lm, tokenizer, vq, settings, folder
        self.image_offset = len(tokenizer)  # image token id = VQ index + len(tokenizer)
        self.codebook_size = int(vq.quantize.embedding.num_embeddings)
        self.grid = taming_grid_side(vq)
        if lm.config.vocab_size < self.image_offset + self.codebook_size:
            raise ValueError(f"{folder / 'lm'}: vocabulary {lm.config.vocab_size} < len(tokenizer) "
                             f"{self.image_offset} + {self.codebook_size} VQ codes")
        self.open_ids = tokenizer.encode("<", add_special_tokens=False)
        self.close_ids = tokenizer.encode(">", add_special_tokens=False)
        self.end_id = tokenizer.convert_tokens_to_ids(END_TOKEN)

    @classmethod
    def load(cls, context: LoadContext) -> LLMCXR:
        from transformers import AutoTokenizer, GPTNeoXForCausalLM

        from cfbench.autoregressive.taming_vq import load_taming_vqgan

        settings = LLMCXROptions.from_options(context.options)
        folder = resolve_model_path(cls, context.model_path)
        checkpoint, config = vqgan_files(folder)
        missing = []
        if not (folder / "lm" / "config.json").is_file():
            missing.append(MissingWeights("LLM-CXR causal-LM folder (config.json, weights, tokenizer)",
                                          folder / "lm", WEIGHTS_HELP))
        if checkpoint is None:
            missing.append(MissingWeights("LLM-CXR VQ-GAN checkpoint (exactly one *.ckpt)", folder / "vqgan",
                                          WEIGHTS_HELP))
        if config is None:
            missing.append(MissingWeights("LLM-CXR VQ-GAN yaml (exactly one *.yaml)", folder / "vqgan",
                                          WEIGHTS_HELP))
        if missing:
            raise WeightsNotFoundError(missing)
        tokenizer = AutoTokenizer.from_pretrained(folder / "lm")
        lm = GPTNeoXForCausalLM.from_pretrained(folder / "lm", dtype=resolve_dtype(settings.precision, context.device))
        lm = lm.to(context.device).eval()
        return cls(lm, tokenizer, load_taming_vqgan(checkpoint, config, context.device), settings, folder)

    def prompt_ids(self, request: EditRequest) -> list[int]:
        """The token ids of the release's prompt for this request."""
        if self.settings.prompt == "target_report":
            if not request.target_report:
                raise ValueError(f"sample {request.sample_id!r} has no target_report (LLM-CXR is prompted with "
                                 "the target impression); build the data with reports or use --option "
                                 "prompt=instruction")
            report = request.target_report
        else:
            report = request.instruction
        return self.tokenizer(PROMPT.format(instruction=INSTRUCTION, report=report))["input_ids"]

    def constraint(self):
        from cfbench import autoregressive as ar

        if not self.settings.constrain:
            return None
        image_ids = ar.id_set(range(self.image_offset, self.image_offset + self.codebook_size))
        return ar.GrammarConstraint(ar.forced(self.open_ids) + ar.image_grid(image_ids, self.grid, self.grid)
                                    + ar.forced(self.close_ids))

    def image_tokens(self, tokens: Sequence[int]) -> list[int]:
        return [t - self.image_offset for t in tokens
                if self.image_offset <= t < self.image_offset + self.codebook_size]

    def edit(self, requests: Sequence[EditRequest]) -> list[EditResult]:
        import torch

        from cfbench import autoregressive as ar
        from cfbench.autoregressive.taming_vq import taming_decode
        from cfbench.core.resize import resize_batch

        prompts = [self.prompt_ids(request) for request in requests]
        cells = self.grid * self.grid
        settings = ar.SamplingSettings(
            temperature=self.settings.temperature, top_k=self.settings.top_k, top_p=self.settings.top_p,
            max_new_tokens=self.constraint().max_length if self.settings.constrain else self.settings.max_new_tokens,
            stop_ids=(self.end_id, self.tokenizer.eos_token_id))

        def run(indices, seeds):
            return ar.sample_tokens(self.lm, [prompts[i] for i in indices], ar.cpu_generators(seeds), settings,
                                    pad_id=self.tokenizer.pad_token_id,
                                    constraints=[self.constraint() for _ in indices])

        retries = 0 if self.settings.constrain else self.settings.max_retries
        outputs, attempts = ar.sample_with_retries(run, [r.seed for r in requests],
                                                   lambda tokens: len(self.image_tokens(tokens)) == cells, retries)
        grids = []
        for tokens in outputs:
            codes = self.image_tokens(tokens)[:cells]
            grids.append(codes + [0] * (cells - len(codes)))
        indices = torch.tensor(grids, dtype=torch.long).view(-1, self.grid, self.grid)
        images = taming_decode(self.vq, indices).cpu()
        results = []
        for request, image, tokens, attempt in zip(requests, images, outputs, attempts):
            out = resize_batch(image[None], request.image.shape)[0].numpy().astype(np.float32)
            results.append(EditResult(image=out, sample_id=request.sample_id, info={
                "image_tokens": len(self.image_tokens(tokens)), "attempts": attempt + 1,
                "constrained": self.settings.constrain}))
        return results

    def identity(self) -> dict[str, Any]:
        return {"weights_sha256": weights_sha256(self.folder), "image_token_offset": self.image_offset,
                "constrain": self.settings.constrain}
