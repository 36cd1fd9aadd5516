"""LLM-CXR (hyn2028/llm-cxr): a Dolly-v2-3b causal LM (``GPTNeoXForCausalLM``) fine-tuned to write 256
VQ-GAN image tokens for a radiology report; a taming VQ-GAN decodes them. Text-to-image: the input image
is not used.

Weights folder (``--model-path`` or ``{weights_dir}/llm-cxr``):

- ``lm/``: the released causal-LM folder (``config.json``, weights, tokenizer files with the added special
  tokens ``### End``, ``### Instruction:``, ``### Response:\\n``);
- ``vqgan/``: the VQ-GAN Lightning checkpoint (one ``*.ckpt``) and its OmegaConf yaml (one ``*.yaml``),
  loaded through torchxrayvision's bundled ``VQModel`` (:mod:`cfbench.autoregressive.taming_vq`).

Image token id = VQ index + ``len(tokenizer)`` (50281 for the release), computed from the tokenizer.

Options (``--option key=value``), defaults as released (``generate_eval.py`` and ``decode_cxr_all.py`` of
hyn2028/llm-cxr):

==============  ==============  ==============================================================================
option          default         meaning
==============  ==============  ==============================================================================
prompt          target_report   the report in the prompt: the target study's impression, or "instruction"
instruction     sampled         "sampled": one of the ten training phrasings per sample, drawn from the
                                sample's seed (the release draws one at random per sample); "first": always
                                the first phrasing
sampling        rejection       "rejection": free sampling (top-p over the whole vocabulary), stop at
                                ``### End``, retried until exactly grid x grid image tokens come out, at most
                                ``max_retries`` times (the release retries without limit); "constrained": the
                                answer is forced to ``<`` + grid x grid image tokens + ``>`` (top-p over the
                                renormalised image tokens, no retry)
max_retries     10              rejection: attempts after the first; after the last the grid is padded with
                                code 0 or truncated, and ``info["complete"]`` is false
top_p           0.92            nucleus sampling mass, (0, 1]
top_k           0               0 = off
temperature     1.0             > 0
max_new_tokens  300             cap per attempt with rejection sampling (as their evaluation)
output          released        "released": the image goes through the release's output file, an RGB 8-bit
                                JPEG at the VQ's 256 px written by ``matplotlib.pyplot.imsave`` (levels
                                truncated, Pillow's default quality 75), read back as the channels' mean;
                                "float": the decoder's output as floats (no quantisation or JPEG loss)
precision       auto            bf16 on CUDA, fp32 on CPU; fp32, fp16, bf16
==============  ==============  ==============================================================================

Departures from the release: seeded per-sample sampling (our loop, not ``generate``; each retry has its own
seed derived from the sample's), the instruction drawn from the sample's seed, and the retry cap. The
options ``sampling=constrained`` and ``output=float`` are cfbench's earlier defaults: constrained sampling
always yields a well-formed grid in one pass (cheaper, never a padded grid), but its distribution differs
from the release's wherever a trained model puts mass outside the image tokens; ``output=float`` keeps the
decoder's precision, which the release's JPEG throws away.
"""

from __future__ import annotations

import dataclasses
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
# The ten phrasings of the report -> image task the release was trained with (``CXR_VQ_OUTPUT_INSTRUCTION_LIST``
# of its training/mimiccxr_vq_dataset.py), in the release's order; its evaluation draws one per sample.
INSTRUCTIONS: tuple[str, ...] = (
    "Generate a chest X-ray image that corresponds to the entered free-text radiology reports for the chest X-ray image.",
    "Use the free-text radiology reports for the chest X-ray image to produce a corresponding chest X-ray image.",
    "Utilize the entered free-text radiology reports for the chest X-ray image to create a corresponding chest X-ray "
    "image.",
    "Create a chest X-ray image that matches the free-text radiology reports entered for the chest X-ray image.",
    "Produce a chest X-ray image that is consistent with the free-text radiology reports entered for the chest X-ray "
    "image.",
    "Based on the free-text radiology reports for the chest X-ray image, generate a corresponding chest X-ray image.",
    "Use the free-text radiology reports entered for the chest X-ray image to create a corresponding chest X-ray image.",
    "Generate a chest X-ray image that is in accordance with the free-text radiology reports for the chest X-ray image "
    "entered.",
    "Create a chest X-ray image that corresponds to the free-text radiology reports entered for the chest X-ray image.",
    "Utilize the entered free-text radiology reports for the chest X-ray image to produce a corresponding chest X-ray "
    "image.",
)
INSTRUCTION = INSTRUCTIONS[0]
# 2: the release's behaviour by default (sampled instruction, rejection sampling, the JPEG output);
# version-1 runs (first instruction, constrained, float output) never mix with these.
ADAPTER_VERSION = 2
END_TOKEN = "### End"
WEIGHTS_HELP = ("Download the LLM-CXR release (links in https://github.com/hyn2028/llm-cxr): put the fine-tuned "
                "causal-LM folder in lm/ and the VQ-GAN checkpoint (*.ckpt) with its yaml (*.yaml) in vqgan/.")


@dataclass(frozen=True)
class LLMCXROptions(ModelOptions):
    """See the module docstring."""

    prompt: str = "target_report"
    instruction: str = "sampled"
    sampling: str = "rejection"
    max_retries: int = 10
    top_p: float = 0.92
    top_k: int = 0
    temperature: float = 1.0
    max_new_tokens: int = 300
    output: str = "released"
    precision: str = "auto"

    choices: ClassVar[dict[str, tuple[str, ...]]] = {
        "prompt": ("target_report", "instruction"), "precision": ("auto", "fp32", "fp16", "bf16"),
        "instruction": ("sampled", "first"), "sampling": ("rejection", "constrained"), "output": ("released", "float")}

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


def instruction_index(seed: int, choice: str) -> int:
    """Which of :data:`INSTRUCTIONS` a sample is prompted with: drawn from its seed ("sampled"), or 0 ("first")."""
    from cfbench.core.seeds import derive_seed

    return derive_seed(int(seed), "llm-cxr-instruction") % len(INSTRUCTIONS) if choice == "sampled" else 0


def released_output(rgb) -> np.ndarray:
    """The release's output file, emulated: float ``3 x H x W`` in [0, 1] -> 8-bit levels truncated as
    ``matplotlib.pyplot.imsave`` does (``(x * 255).astype(uint8)``) -> an RGB JPEG at Pillow's default
    quality -> read back as float32 ``H x W`` in [0, 1], the mean of its three channels."""
    import io

    from PIL import Image

    rgb = np.asarray(rgb, dtype=np.float32)
    if rgb.ndim != 3 or rgb.shape[0] != 3:
        raise ValueError(f"output=released needs the VQ decoder's 3 x H x W RGB output, got shape {rgb.shape}")
    levels = np.ascontiguousarray((rgb.transpose(1, 2, 0) * 255).astype(np.uint8))
    buffer = io.BytesIO()
    Image.fromarray(levels).save(buffer, format="JPEG")
    decoded = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"), dtype=np.float32) / 255.0
    return decoded.mean(axis=2)


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
        instruction = INSTRUCTIONS[instruction_index(request.seed, self.settings.instruction)]
        return self.tokenizer(PROMPT.format(instruction=instruction, report=report))["input_ids"]

    def constraint(self):
        from cfbench import autoregressive as ar

        if self.settings.sampling == "rejection":
            return None
        image_ids = ar.id_set(range(self.image_offset, self.image_offset + self.codebook_size))
        return ar.GrammarConstraint(ar.forced(self.open_ids) + ar.image_grid(image_ids, self.grid, self.grid)
                                    + ar.forced(self.close_ids))

    def image_tokens(self, tokens: Sequence[int]) -> list[int]:
        return [t - self.image_offset for t in tokens
                if self.image_offset <= t < self.image_offset + self.codebook_size]

    def sample_grids(self, requests: Sequence[EditRequest]) -> tuple[list[list[int]], list[list[int]], list[int]]:
        """(grid x grid codes per request, padded with 0 / truncated; the generated ids; attempts used - 1)."""
        from cfbench import autoregressive as ar

        prompts = [self.prompt_ids(request) for request in requests]
        cells = self.grid * self.grid
        constrained = self.settings.sampling == "constrained"
        settings = ar.SamplingSettings(
            temperature=self.settings.temperature, top_k=self.settings.top_k, top_p=self.settings.top_p,
            max_new_tokens=self.constraint().max_length if constrained else self.settings.max_new_tokens,
            stop_ids=(self.end_id, self.tokenizer.eos_token_id))

        def run(indices, seeds):
            return ar.sample_tokens(self.lm, [prompts[i] for i in indices], ar.cpu_generators(seeds), settings,
                                    pad_id=self.tokenizer.pad_token_id,
                                    constraints=[self.constraint() for _ in indices])

        retries = 0 if constrained else self.settings.max_retries
        outputs, attempts = ar.sample_with_retries(run, [r.seed for r in requests],
                                                   lambda tokens: len(self.image_tokens(tokens)) == cells, retries)
        grids = []
        for tokens in outputs:
            codes = self.image_tokens(tokens)[:cells]
            grids.append(codes + [0] * (cells - len(codes)))
        return grids, outputs, attempts

    def decode_grids(self, grids: Sequence[Sequence[int]]):
        """Code grids -> float32 ``B x H x W`` images in [0, 1] at the VQ's size, as the ``output`` option says."""
        import torch

        from cfbench.autoregressive.taming_vq import taming_decode_rgb

        indices = torch.tensor(grids, dtype=torch.long).view(-1, self.grid, self.grid)
        rgb = taming_decode_rgb(self.vq, indices).cpu()
        if self.settings.output == "released":
            return torch.from_numpy(np.stack([released_output(picture.numpy()) for picture in rgb]))
        return rgb.mean(dim=1)

    def edit(self, requests: Sequence[EditRequest]) -> list[EditResult]:
        from cfbench.core.resize import resize_batch

        grids, outputs, attempts = self.sample_grids(requests)
        images = self.decode_grids(grids)
        cells = self.grid * self.grid
        results = []
        for request, image, tokens, attempt in zip(requests, images, outputs, attempts):
            out = resize_batch(image[None], request.image.shape)[0].numpy().astype(np.float32)
            results.append(EditResult(image=out, sample_id=request.sample_id, info={
                "image_tokens": len(self.image_tokens(tokens)), "attempts": attempt + 1,
                "complete": len(self.image_tokens(tokens)) == cells, "sampling": self.settings.sampling,
                "instruction_index": instruction_index(request.seed, self.settings.instruction)}))
        return results

    def identity(self) -> dict[str, Any]:
        return {"weights_sha256": weights_sha256(self.folder), "image_token_offset": self.image_offset,
                "adapter_version": ADAPTER_VERSION, "settings": dataclasses.asdict(self.settings)}
