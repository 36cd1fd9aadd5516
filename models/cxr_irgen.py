"""CXR-IRGen (Shentu & Al Moubayed, WACV 2024): CheXpert labels (+ a reference X-ray with the same labels) ->
a 256 px chest X-ray and a radiology report. A labels-to-image baseline: it does not see the input X-ray.

**Weights**: one folder written once by ``cfbench convert-ckpt DIFFUSION.ckpt --format cxr-irgen ...`` from the
release's Lightning checkpoints (see :mod:`cfbench.training.cxr_irgen_convert`):

==================  ===========================================================================================
part                what
==================  ===========================================================================================
model_index.json,   a ``StableDiffusionPipeline`` folder: the fine-tuned UNet and the (frozen) SD-1.4 VAE and
unet/ vae/          CLIP text encoder from the diffusion checkpoint's ``unet.*``, ``vae.*``, ``text_encoder.*``;
text_encoder/       tokenizer and PNDM scheduler from the local CompVis/stable-diffusion-v1-4 folder
tokenizer/
scheduler/
clip_vision/        CLIPVisionModel of openai/clip-vit-base-patch32 (embeds the reference image)
report_encoder/     the report head's ViT (image 32, patch 2, 4 channels) from the prior checkpoint
report_decoder/     its BART decoder (facebook/bart-base fine-tuned) + the BART tokenizer
==================  ===========================================================================================

**Image** (as ``sample_diffusion_clipSD.py``): the target study's 14 CheXpert labels become the prompt
"A chest X ray image with a and b, without c, and with uncertain d" (lower-case CheXpert names, in CheXpert's
column order; cfbench's 1.0 / 0.0 / -1.0 are the release's 1 / -1 / -2 = with / without / uncertain; a blank
label is not mentioned). The prompt is tokenised without padding (L tokens) and encoded by CLIP; the pooled
output (``pooler_output``, 768-d) of CLIPVisionModel over the reference image (224 px, the gray image replicated
to 3 channels, normalised as (x - 0.5) / 0.5, as released) is appended as one more context token (L + 1). The
unconditional branch is the empty prompt padded to L + 1 tokens (what diffusers' pipeline does with the
release's ``prompt_embeds``). PNDM (the folder's scheduler), 50 steps, guidance 7.5, 32 x 32 latents (256 px),
noise from the request's seed. The shared loop is :func:`cfbench.diffusion.generate_from_text`; a batch is run
in groups of equal prompt length, so results do not depend on the batch.

**Reference image**: a sample of the same dataset's ``train`` split whose 14 labels equal the request's (blank
only matches blank), the one with the smallest ``sample_id`` other than the request's own; its target image
(``current/``). None found (or ``reference=none``) -> a zero vector, as released.

**Report** (as ``sample_prior_model.py``): the generated 256 px image is encoded again by the VAE (posterior
sample, seeded) x 0.18215; the ViT's pooled output is the one encoder state of the BART decoder, which samples
from ``</s>`` with temperature 1 and the request's seed; the text (special tokens skipped) is the result's
``explanation``.

Options (``--option key=value``):

==================  ============  ====================================================================
option              default       meaning
==================  ============  ====================================================================
steps               50            PNDM steps
guidance            7.5           classifier-free guidance scale (>= 0)
reference           train         ``train`` (the policy above) or ``none`` (always zeros)
report              true          generate the report (false: image only, no report parts needed)
report_max_tokens   512           cap on sampled report tokens (the release samples exactly 512)
report_stop         none          ``none``: draw all ``report_max_tokens`` tokens and decode them with the
                                  special tokens skipped, so text sampled after a ``</s>`` stays in the
                                  report (as released); ``eos``: stop a report at its first ``</s>``
                                  (cheaper, and no text past the model's own end of report)
report_input        reencode      the report head reads ``reencode``: the VAE posterior of the decoded
                                  image, as released; ``latents``: the denoised latents directly
native_resolution   256           side in pixels the networks run at (the report ViT fixes it)
precision           auto          auto (fp16 on CUDA, fp32 on CPU), fp32, fp16 or bf16
==================  ============  ====================================================================
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from cfbench.api.model import Capabilities, EditRequest, EditResult, LoadContext
from cfbench.api.registry import register, resolve_model_path
from cfbench.core.errors import MissingWeights, WeightsNotFoundError
from cfbench.core.findings import CHEXPERT_COLUMNS
from cfbench.core.seeds import derive_seed
from cfbench.models.diffusers_folder import DiffusersFolderModel, DiffusionOptions

CLIP_VISION_DIR = "clip_vision"
REPORT_ENCODER_DIR = "report_encoder"
REPORT_DECODER_DIR = "report_decoder"
CONVERSION_RECORD = "cxr_irgen.json"
PIPELINE_FILES: tuple[str, ...] = ("model_index.json", "unet/config.json", "vae/config.json",
                                   "text_encoder/config.json", "tokenizer/", "scheduler/scheduler_config.json")
REPORT_FILES: tuple[str, ...] = (f"{REPORT_ENCODER_DIR}/config.json", f"{REPORT_DECODER_DIR}/config.json")
FINDINGS: tuple[str, ...] = tuple(column.lower() for column in CHEXPERT_COLUMNS)  # the release's order and words
RELEASE_CODES: dict[float, int] = {1.0: 1, 0.0: -1, -1.0: -2}  # cfbench label -> release code; blank -> 0
REPORT_LATENT_SCALING = 0.18215  # the release multiplies the VAE posterior by this constant
REFERENCE_POLICY = ("train split of the same dataset, identical 14-label vector (1/0/-1/blank), smallest "
                    "sample_id (string order) other than the request's own, its current/ image; none -> zeros "
                    "(as released)")
CONVERT_HOW = ("Convert the release's Lightning checkpoints (github.com/junjie-shentu/CXR-IRGen; weights from the "
               "authors) once: `cfbench convert-ckpt DIFFUSION.ckpt --format cxr-irgen --config SD14_DIR "
               "--clip-vision CLIP_DIR --report-ckpt PRIOR.ckpt --lm-ckpt LM.ckpt --bart BART_DIR --out DIR`, with "
               "local copies of CompVis/stable-diffusion-v1-4, openai/clip-vit-base-patch32 and facebook/bart-base.")
WEIGHTS_HELP = "CXR-IRGen needs a folder written by cfbench convert-ckpt --format cxr-irgen. " + CONVERT_HOW
PART_HOW: dict[str, str] = {
    "pipeline": "the Stable Diffusion part, from the diffusion checkpoint (unet.*, vae.*, text_encoder.*) and "
                "the local CompVis/stable-diffusion-v1-4 folder (--config)",
    CLIP_VISION_DIR: "the reference-image encoder, from a local openai/clip-vit-base-patch32 folder (--clip-vision)",
    REPORT_ENCODER_DIR: "the report head's ViT, from the prior checkpoint's prior_model.* (--report-ckpt)",
    REPORT_DECODER_DIR: "the report head's BART, from the LM checkpoint (--lm-ckpt, or the prior checkpoint's "
                        "language_model.*) with the local facebook/bart-base folder (--bart); or --option report=false",
}


def release_codes(labels: dict[str, float | None]) -> tuple[int, ...]:
    """cfbench's CheXpert labels (column -> 1.0 / 0.0 / -1.0 / None) as the release's 14 codes, in CheXpert's
    column order: 1 with, -1 without, -2 uncertain, 0 blank (not mentioned)."""
    return tuple(0 if labels.get(column) is None else RELEASE_CODES[float(labels[column])]
                 for column in CHEXPERT_COLUMNS)


def label_prompt(codes: Sequence[int]) -> str:
    """The release's prompt for 14 label codes: "A chest X ray image" + " with a and b" + ", without c" +
    ", and with uncertain d" (each part only when it has findings)."""
    named = {code: [finding for finding, value in zip(FINDINGS, codes) if value == code] for code in (1, -1, -2)}
    text = "A chest X ray image"
    for code, lead in ((1, " with "), (-1, ", without "), (-2, ", and with uncertain ")):
        if named[code]:
            text += lead + " and ".join(named[code])
    return text


class ReferenceIndex:
    """Training samples by label codes, for the reference-image policy (see the module docstring).

    ``dataset``: the ``train`` split (an :class:`~cfbench.datasets.edit_dataset.EditDataset` read at the CLIP
    encoder's input side), or None when there is none (every lookup then gives None)."""

    def __init__(self, dataset):
        self.dataset = dataset
        self.by_codes: dict[tuple[int, ...], list[str]] = {}
        for sample in dataset or ():
            self.by_codes.setdefault(release_codes(sample.labels), []).append(sample.sample_id)
        for ids in self.by_codes.values():
            ids.sort()

    def choose(self, codes: tuple[int, ...], own_id: str) -> str | None:
        """The smallest training sample id with these codes that is not ``own_id``, or None."""
        return next((sample_id for sample_id in self.by_codes.get(codes, ()) if sample_id != own_id), None)

    def describe(self) -> dict[str, Any]:
        return {"policy": REFERENCE_POLICY, "train_samples": sum(len(ids) for ids in self.by_codes.values()),
                "label_vectors": len(self.by_codes)}


def missing_parts(folder: Path, report: bool) -> list[MissingWeights]:
    """One :class:`MissingWeights` per absent part of a converted folder (the report parts only if ``report``)."""
    missing = []
    pipeline_missing = [name for name in PIPELINE_FILES
                        if not (folder / name).exists() or (name.endswith("/") and not (folder / name).is_dir())]
    if pipeline_missing:
        missing.append(MissingWeights(f"CXR-IRGen {PART_HOW['pipeline']}", folder / pipeline_missing[0],
                                      f"missing: {', '.join(pipeline_missing)}. {CONVERT_HOW}"))
    parts = [CLIP_VISION_DIR] + ([REPORT_ENCODER_DIR, REPORT_DECODER_DIR] if report else [])
    for part in parts:
        if not (folder / part / "config.json").is_file():
            missing.append(MissingWeights(f"CXR-IRGen {PART_HOW[part]}", folder / part / "config.json", CONVERT_HOW))
    return missing


@dataclass(frozen=True)
class CxrIrgenSettings(DiffusionOptions):
    """Sampling parameters (see the module docstring for meanings and defaults)."""

    steps: int = 50
    native_resolution: int = 256
    guidance: float = 7.5
    reference: str = "train"
    report: bool = True
    report_max_tokens: int = 512
    report_stop: str = "none"
    report_input: str = "reencode"

    choices: ClassVar[dict[str, tuple[str, ...]]] = {
        **DiffusionOptions.choices, "reference": ("train", "none"), "report_stop": ("eos", "none"),
        "report_input": ("reencode", "latents")}

    def check(self) -> None:
        super().check()
        if self.guidance < 0:
            raise ValueError(f"guidance must be >= 0, got {self.guidance}")
        if self.report_max_tokens < 1:
            raise ValueError(f"report_max_tokens must be >= 1, got {self.report_max_tokens}")


@register
class CxrIrgenModel(DiffusersFolderModel):
    name = "cxr-irgen"
    capabilities = Capabilities(edits_image=False, explanation=True)
    description = "CXR-IRGen: CheXpert labels + a same-label reference image -> 256 px X-ray and a report"
    native_resolution = 256
    weights_subdir = "cxr-irgen"
    weights_help = WEIGHTS_HELP
    settings_class = CxrIrgenSettings
    adapter_version = 2  # 2: reports drawn to report_max_tokens by default, as released (1: stopped at eos)

    @classmethod
    def scheduler_choice(cls, settings: CxrIrgenSettings) -> str:
        return "folder"  # the release samples with SD-1.4's PNDM scheduler

    @classmethod
    def load(cls, context: LoadContext) -> CxrIrgenModel:
        settings = CxrIrgenSettings.from_options(context.options)
        folder = resolve_model_path(cls, context.model_path)
        missing = missing_parts(folder, settings.report)
        if missing:
            raise WeightsNotFoundError(missing, footer=WEIGHTS_HELP)
        if context.dataset is None:
            raise ValueError("model 'cxr-irgen' generates from the target study's CheXpert labels, read from the "
                             "dataset: run it on a dataset split")
        return super().load(context)

    def prepare(self, context: LoadContext) -> None:
        """Load the reference encoder, the report head and the training split's reference index."""
        from transformers import CLIPVisionModel

        from cfbench.autoregressive.report_head import load_report_head

        components, folder = self.components, self.weights_folder
        self.dataset = context.dataset
        self.clip_vision = CLIPVisionModel.from_pretrained(folder / CLIP_VISION_DIR, dtype=components.dtype,
                                                           local_files_only=True)
        self.clip_vision.to(components.device).eval().requires_grad_(False)
        width = self.clip_vision.config.hidden_size
        if width != components.unet.config.cross_attention_dim:
            raise ValueError(f"{folder / CLIP_VISION_DIR}: {width}-d reference embeddings, but the UNet attends to "
                             f"{components.unet.config.cross_attention_dim}-d context tokens")
        self.report_head = None
        if self.settings.report:
            self.report_head = load_report_head(folder / REPORT_ENCODER_DIR, folder / REPORT_DECODER_DIR,
                                                components.device, components.dtype)
            latent_side = self.settings.native_resolution // components.vae_scale_factor
            if latent_side != self.report_head.latent_size:
                raise ValueError(f"the report head reads {self.report_head.latent_size}-px latents: native_resolution "
                                 f"must be {self.report_head.latent_size * components.vae_scale_factor}, got "
                                 f"{self.settings.native_resolution}")
        self.references = ReferenceIndex(self.training_split() if self.settings.reference == "train" else None)
        self._embeddings: dict[str, Any] = {}

    def training_split(self):
        """The dataset's ``train`` split read at the CLIP encoder's side, or None when it has none."""
        from cfbench.datasets.edit_dataset import EditDataset
        from cfbench.datasets.layout import DatasetError

        try:
            return EditDataset(self.dataset.root, "train", resolution=int(self.clip_vision.config.image_size))
        except DatasetError:
            return None

    def identity_extra(self) -> dict[str, Any]:
        settings = self.settings
        return {"scheduler": type(self.components.scheduler).__name__,
                "reference": self.references.describe() if settings.reference == "train" else "none: zeros",
                "report": ({"max_tokens": settings.report_max_tokens, "stop": settings.report_stop,
                            "input": settings.report_input} if settings.report else None)}

    # ----------------------------------------------------------------------------------- conditioning

    def reference_embedding(self, reference_id: str | None):
        """The pooled CLIP vision output of a training sample's target image, float ``1 x 1 x d`` (zeros for
        None); computed one image at a time and cached, so it does not depend on the batch."""
        import torch

        width = self.clip_vision.config.hidden_size
        if reference_id is None:
            return torch.zeros((1, 1, width), dtype=self.components.dtype, device=self.components.device)
        if reference_id not in self._embeddings:
            train = self.references.dataset
            gray = torch.from_numpy(train.current_image(train[reference_id])).float()
            pixels = ((gray - 0.5) / 0.5)[None, None].expand(1, 3, -1, -1)
            pooled = self.clip_vision(pixel_values=pixels.to(self.components.device, self.components.dtype))
            self._embeddings[reference_id] = pooled.pooler_output[:, None, :]
        return self._embeddings[reference_id]

    def conditioning(self, request: EditRequest) -> tuple[str, list[int], str | None]:
        """(prompt, its token ids without padding, reference sample id or None) of a request."""
        codes = release_codes(self.dataset[request.sample_id].labels)
        prompt = label_prompt(codes)
        tokenizer = self.components.tokenizer
        # one position is left for the reference token, so the padded empty prompt fits the text encoder too
        ids = tokenizer(prompt, truncation=True, max_length=tokenizer.model_max_length - 1).input_ids
        reference = self.references.choose(codes, request.sample_id) if self.settings.reference == "train" else None
        return prompt, ids, reference

    # ----------------------------------------------------------------------------------- generation

    def edit(self, requests: Sequence[EditRequest]) -> list[EditResult]:
        """Generate each request's image (and report); requests with equal prompt lengths share one loop."""
        import torch

        from cfbench import diffusion

        if not requests:
            return []
        components, settings = self.components, self.settings
        conditions = [self.conditioning(request) for request in requests]
        side = settings.native_resolution // components.vae_scale_factor
        latents = [None] * len(requests)
        groups: dict[int, list[int]] = {}
        for index, (_, ids, _) in enumerate(conditions):
            groups.setdefault(len(ids), []).append(index)
        for length, members in groups.items():
            text = diffusion.encode_text(components, [conditions[i][0] for i in members], length=length)
            reference = torch.cat([self.reference_embedding(conditions[i][2]) for i in members])
            context = torch.cat([text, reference.to(text.dtype)], dim=1)
            null = diffusion.encode_text(components, [""] * len(members), length=length + 1)
            noise = diffusion.seeded_noise([requests[i].seed for i in members],
                                           (components.unet.config.in_channels, side, side), components.device)
            denoised = diffusion.generate_from_text(components, noise, context, null, settings.steps, settings.guidance)
            for row, index in enumerate(members):
                latents[index] = denoised[row:row + 1]
        latents = torch.cat(latents)
        images = diffusion.decode_latents(components, latents).cpu()
        reports = self.reports(requests, images, latents) if self.report_head is not None else [None] * len(requests)
        results = []
        for request, image, (prompt, ids, reference), report in zip(requests, images, conditions, reports):
            resized = diffusion.resize_images(image[None], request.image.shape)[0]
            info = {"prompt": prompt, "prompt_tokens": len(ids), "reference_id": reference}
            if report is not None:
                info.update(report_tokens=len(report.tokens), report_stopped=report.stopped)
            results.append(EditResult(image=resized.clamp(0, 1).numpy().astype(np.float32),
                                      explanation=None if report is None else report.text, info=info,
                                      sample_id=request.sample_id))
        return results

    def reports(self, requests: Sequence[EditRequest], images, latents) -> list:
        """The report head on each generated image: the VAE posterior of the decoded image (seeded per request)
        x 0.18215, or the denoised latents (``report_input=latents``); tokens seeded per request."""
        from cfbench import diffusion
        from cfbench.autoregressive.report_head import generate_reports

        components, settings = self.components, self.settings
        if settings.report_input == "latents":
            report_latents = latents
        else:
            posterior_noise = diffusion.seeded_noise([derive_seed(r.seed, "cxr-irgen-posterior") for r in requests],
                                                     tuple(latents.shape[1:]), components.device)
            report_latents = diffusion.encode_images(components, images, posterior_noise) * REPORT_LATENT_SCALING
        seeds = [derive_seed(request.seed, "cxr-irgen-report") for request in requests]
        return generate_reports(self.report_head, report_latents, seeds, settings.report_max_tokens,
                                stop_at_eos=settings.report_stop == "eos")
