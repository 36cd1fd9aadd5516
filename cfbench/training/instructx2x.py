"""Train an InstructX2X / InstructPix2Pix editor on an edit dataset, with accelerate.

``train_instructx2x(TrainConfig(...))`` fine-tunes the UNet of an InstructPix2Pix folder (or of a Stable
Diffusion folder whose first convolution is widened to 8 channels, see :mod:`cfbench.training.base_weights`)
on the (prior, instruction, target) pairs of one split of a dataset folder (:mod:`cfbench.datasets.edit_dataset`).
The VAE and the CLIP text encoder stay frozen.

One optimizer step sees ``target_batch_size`` samples: ``per_device_batch_size`` per process and
micro-batch, ``num_processes`` processes, and ``gradient_accumulation_steps`` micro-batches, computed as
``target_batch_size / (per_device_batch_size * num_processes)``; a target that does not divide exactly
is an error (no silent rounding).

Per sample and micro-batch the loss is the usual denoising loss: the target image's latents are noised at
a uniform random timestep; the UNet sees the noisy latents concatenated with the prior's latents (the
mode of the VAE posterior, unscaled, as StableDiffusionInstructPix2PixPipeline feeds them) and the
instruction's CLIP embedding, and predicts the noise (or v, following the scheduler's prediction_type).
Conditioning dropout (InstructPix2Pix): with probability ``text_dropout`` the text is replaced by the
empty prompt's embedding only, with ``image_dropout`` the prior's latents are zeroed only, and with
``both_dropout`` both; otherwise both conditions are kept.

Reproducibility and resume. Every random draw is a function of the seed and a position, never of a
running random state: the order of samples in epoch ``e`` is a permutation seeded by (seed, e); the
augmentation, VAE sampling noise, timestep, diffusion noise and dropout of the sample at stream
position ``i`` are seeded by (seed, i). Optimizer step ``s`` takes stream positions
``[s * target_batch_size, (s + 1) * target_batch_size)``, however they are split into processes and
micro-batches, so the per-device batch size and the number of processes change only the floating-point
summation order, not the samples or their noise. A checkpoint therefore needs only the step number, the
UNet, the optimizer, the EMA (and the fp16 loss scale), and resuming from step ``k`` continues exactly as
an uninterrupted run would (also with another number of processes, up to that rounding).

Output folder::

    model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/
                            a complete StableDiffusionInstructPix2PixPipeline folder, written at the end,
                            with the EMA weights in unet/ (the raw weights when use_ema is off)
    train_config.json       the TrainConfig of the run (plus the derived accumulation)
    train_log.jsonl         one record per logged step: step, loss (mean over the step's samples), lr,
                            epoch (samples seen / split size), samples_seen, seconds and steps_per_second
                            (both since this session started)
    checkpoints/step-000500/
        unet.safetensors    raw (trained) UNet weights, float32
        ema_unet.safetensors  the EMA weights (when use_ema)
        optimizer.pt        AdamW state (tensors and numbers only; loaded with weights_only=True)
        trainer_state.json  step, samples seen, processes, grad-scaler state; written last
    train_summary.json      what was done: steps, last loss, base kind, seconds

Checkpoints are written to a hidden folder and renamed into place, so a checkpoint folder is complete or
absent. Running the same command again resumes from the latest checkpoint (training settings must be
equal; the step count, checkpoint/log intervals, workers and the folder paths may change).

Multi-GPU: launch the CLI with ``accelerate launch -m cfbench.cli train instructx2x ...`` (DDP). Mixed
precision ("fp16"/"bf16") runs the UNet under autocast with float32 master weights; the frozen VAE and text
encoder are cast to the half type.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from cfbench.core.seeds import derive_seed
from cfbench.core.storage import atomic_write_json
from cfbench.datasets.edit_dataset import EditDataset
from cfbench.training.base_weights import BaseComponents, load_base_components
from cfbench.training.checkpoints import (
    ExponentialMovingAverage,
    TrainingError,
    append_log,
    checkpoint_folders,
    keep_log_until,
    restore_latest_checkpoint,
    write_checkpoint,
)
from cfbench.training.edit_augment import AugmentSettings, augment_pair

CONFIG_NAME = "train_config.json"
LOG_NAME = "train_log.jsonl"
SUMMARY_NAME = "train_summary.json"
PIPELINE_ENTRIES: tuple[str, ...] = ("model_index.json", "unet", "vae", "text_encoder", "tokenizer", "scheduler",
                                     "safety_checker", "feature_extractor")

# Independent random streams (first word of every seed sequence after the run seed).
ORDER_STREAM, AUGMENT_STREAM, NOISE_STREAM = 0, 1, 2

# Settings that may differ between a run and its resumption (they do not change what is computed).
RESUMABLE_CHANGES: frozenset[str] = frozenset(
    {"max_train_steps", "checkpoint_every", "keep_checkpoints", "log_every", "num_workers", "data_dir",
     "base_model", "output_dir"}
)
MIXED_PRECISION_CHOICES: tuple[str, ...] = ("no", "fp16", "bf16")
PROMPT_SOURCES: tuple[str, ...] = ("instruction", "progression")




@dataclass
class TrainConfig:
    """Everything that defines a training run (saved as ``train_config.json`` in the output folder).

    Paths: data_dir (dataset folder), base_model (InstructPix2Pix or Stable Diffusion diffusers folder),
    output_dir. split: the dataset split to train on. resolution: training image side in pixels.
    max_train_steps: optimizer steps. target_batch_size: samples per optimizer step over all processes
    and accumulated micro-batches. per_device_batch_size: samples per process and micro-batch.
    learning_rate: AdamW learning rate, constant after ``lr_warmup_steps`` linear warm-up steps.
    adam_*: AdamW hyper-parameters. max_grad_norm: gradient clipping (L2 norm; 0 disables).
    mixed_precision: "no", "fp16" or "bf16". use_ema / ema_decay: exponential moving average of the
    UNet weights, decay min(ema_decay, (1 + step) / (10 + step)) after optimizer step ``step``.
    text_dropout / image_dropout / both_dropout: conditioning dropout probabilities (text only, image
    only, both), each in [0, 1], sum <= 1. rotation_degrees / center_crop_fraction / hflip_probability:
    augmentation (see :mod:`cfbench.training.edit_augment`). checkpoint_every: optimizer steps between
    checkpoints (the last step is always checkpointed). keep_checkpoints: how many recent checkpoints to
    keep. log_every: optimizer steps between log records. seed: the run seed. num_workers: data-loading
    processes. gradient_checkpointing: trade compute for UNet activation memory.
    prompt_source: the text of a (prior, text, target) triple: "instruction", or "progression" (the
    sample's progression description, ICG-CXR / BiomedJourney style; its instruction where it has none).
    report_pair_steps: a two-stage curriculum (BiomedJourney): the first ``report_pair_steps`` optimizer steps
    train on single image-report pairs (the target study's ``target_report`` as text, a dummy all-black prior
    image), the rest on triples; 0 (InstructX2X) = triples only. The stage of a sample is a function of its
    stream position, so resumption stays exact across the switch.
    """

    data_dir: str
    base_model: str
    output_dir: str
    split: str = "train"
    resolution: int = 512
    max_train_steps: int = 6500
    target_batch_size: int = 576
    per_device_batch_size: int = 4
    learning_rate: float = 1e-4
    lr_warmup_steps: int = 0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_weight_decay: float = 1e-2
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 1.0
    mixed_precision: str = "no"
    use_ema: bool = True
    ema_decay: float = 0.9999
    text_dropout: float = 0.05
    image_dropout: float = 0.05
    both_dropout: float = 0.05
    rotation_degrees: float = 2.0
    center_crop_fraction: float = 1.0
    hflip_probability: float = 0.5
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    log_every: int = 10
    seed: int = 0
    num_workers: int = 0
    gradient_checkpointing: bool = False
    prompt_source: str = "instruction"
    report_pair_steps: int = 0

    def validate(self) -> None:
        positive = ("resolution", "max_train_steps", "target_batch_size", "per_device_batch_size",
                    "checkpoint_every", "keep_checkpoints", "log_every")
        for name in positive:
            if getattr(self, name) < 1:
                raise TrainingError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.learning_rate <= 0:
            raise TrainingError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.mixed_precision not in MIXED_PRECISION_CHOICES:
            raise TrainingError(f"mixed_precision must be one of {MIXED_PRECISION_CHOICES}, got {self.mixed_precision!r}")
        dropouts = (self.text_dropout, self.image_dropout, self.both_dropout)
        if any(p < 0 or p > 1 for p in dropouts) or sum(dropouts) > 1:
            raise TrainingError(f"conditioning dropout probabilities must lie in [0, 1] and sum to <= 1, got {dropouts}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise TrainingError(f"ema_decay must lie in [0, 1), got {self.ema_decay}")
        if self.prompt_source not in PROMPT_SOURCES:
            raise TrainingError(f"prompt_source must be one of {PROMPT_SOURCES}, got {self.prompt_source!r}")
        if self.report_pair_steps < 0:
            raise TrainingError(f"report_pair_steps must be >= 0, got {self.report_pair_steps}")
        self.augment_settings()  # raises on bad augmentation values

    def augment_settings(self) -> AugmentSettings:
        try:
            return AugmentSettings(self.rotation_degrees, self.center_crop_fraction, self.hflip_probability)
        except ValueError as error:
            raise TrainingError(str(error)) from error

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise TrainingError(f"unknown training setting(s) {unknown}")
        return cls(**data)


def gradient_accumulation_steps(target_batch_size: int, per_device_batch_size: int, num_processes: int) -> int:
    """Micro-batches per optimizer step so that per_device x processes x steps == target, exactly.

    Raises TrainingError when the target is not a multiple of per_device_batch_size x num_processes
    (rounding would silently change the effective batch size the run reports)."""
    per_micro_batch = per_device_batch_size * num_processes
    if target_batch_size % per_micro_batch != 0:
        lower = max(per_micro_batch, (target_batch_size // per_micro_batch) * per_micro_batch)
        raise TrainingError(
            f"target batch size {target_batch_size} is not divisible by per-device batch size "
            f"{per_device_batch_size} x {num_processes} process(es) = {per_micro_batch}; choose a target that "
            f"is a multiple of {per_micro_batch} (e.g. {lower} or {lower + per_micro_batch}) or another "
            "per-device batch size"
        )
    return target_batch_size // per_micro_batch


# ----------------------------------------------------------------------------------------------- data


class SampleStream:
    """The endless, deterministic stream of training samples: epoch after epoch, each a seeded
    permutation of the split. Position ``i`` of the stream is sample ``order(i // n)[i % n]``."""

    def __init__(self, n_samples: int, seed: int):
        self.n_samples = n_samples
        self.seed = seed
        self._orders: dict[int, np.ndarray] = {}

    def order(self, epoch: int) -> np.ndarray:
        if epoch not in self._orders:
            self._orders = {epoch: np.random.default_rng(derive_seed(self.seed, ORDER_STREAM, epoch)).permutation(self.n_samples)}
        return self._orders[epoch]

    def sample_index(self, position: int) -> int:
        epoch, offset = divmod(position, self.n_samples)
        return int(self.order(epoch)[offset])


class MicroBatches(torch.utils.data.Dataset):
    """Item ``k`` is the ``k``-th micro-batch of one process from global micro-batch ``first`` on.

    Global micro-batch ``g`` holds stream positions ``[g * B * P, (g + 1) * B * P)``; process ``p`` takes
    positions ``g * B * P + p * B + [0, B)`` (B per-device batch, P processes). An item is a dict:
    past / current: float32 (B, 3, H, W) in [-1, 1] (grey replicated to RGB); input_ids: int64 (B, L);
    positions: int64 (B,); flipped: bool (B,).
    """

    def __init__(self, dataset: EditDataset, tokenizer, config: TrainConfig, first: int, count: int,
                 process_index: int, num_processes: int):
        self.dataset = dataset
        self.tokenizer = tokenizer
        self.config = config
        self.first = first
        self.count = count
        self.process_index = process_index
        self.num_processes = num_processes
        self.stream = SampleStream(len(dataset), config.seed)
        self.augment = config.augment_settings()

    def __len__(self) -> int:
        return self.count

    def positions(self, item: int) -> list[int]:
        batch = self.config.per_device_batch_size
        start = (self.first + item) * batch * self.num_processes + self.process_index * batch
        return list(range(start, start + batch))

    def __getitem__(self, item: int) -> dict:
        pasts, currents, instructions, flips = [], [], [], []
        positions = self.positions(item)
        for position in positions:
            sample = self.dataset.samples[self.stream.sample_index(position)]
            rng = np.random.default_rng(derive_seed(self.config.seed, AUGMENT_STREAM, position))
            current = self.dataset.current_image(sample)
            if position // self.config.target_batch_size < self.config.report_pair_steps:
                past, text = np.zeros_like(current), report_text(sample)
            else:
                past, text = self.dataset.past_image(sample), triple_text(sample, self.config.prompt_source)
            pair = augment_pair(past, current, text, sample.operations, self.augment, rng)
            pasts.append(pair.past)
            currents.append(pair.current)
            instructions.append(pair.instruction)
            flips.append(pair.flipped)
        return {
            "past": images_to_model_input(np.stack(pasts)),
            "current": images_to_model_input(np.stack(currents)),
            "input_ids": tokenize(self.tokenizer, instructions),
            "positions": torch.tensor(positions, dtype=torch.int64),
            "flipped": torch.tensor(flips, dtype=torch.bool),
        }


def triple_text(sample, prompt_source: str) -> str:
    """The text of a training triple: the instruction, or the progression description where the sample has
    one (``prompt_source="progression"``)."""
    if prompt_source == "progression" and sample.progression:
        return sample.progression
    return sample.instruction


def report_text(sample) -> str:
    """The text of a curriculum stage-1 pair: the target study's report (TrainingError naming the sample when
    the dataset has none: build it with reports, or set report_pair_steps to 0)."""
    if not sample.target_report:
        raise TrainingError(f"sample {sample.sample_id!r} has no target_report for the image-report stage of the "
                            "curriculum; build the dataset with reports or use --report-pair-steps 0")
    return sample.target_report


def images_to_model_input(images: np.ndarray) -> torch.Tensor:
    """float32 (B, H, W) in [0, 1] -> float32 (B, 3, H, W) in [-1, 1], as the VAE expects."""
    tensor = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)) * 2.0 - 1.0
    return tensor[:, None].repeat(1, 3, 1, 1)


def tokenize(tokenizer, texts: list[str]) -> torch.Tensor:
    """Token ids (B, model_max_length), padded and truncated as the pipelines do."""
    return tokenizer(texts, max_length=tokenizer.model_max_length, padding="max_length", truncation=True,
                     return_tensors="pt").input_ids


# ----------------------------------------------------------------------------------------------- loss


@dataclass(frozen=True)
class ConditioningDropout:
    """Per-sample dropout of the conditions: probabilities of dropping the text only, the image only,
    or both (InstructPix2Pix: 0.05 each)."""

    text_only: float = 0.05
    image_only: float = 0.05
    both: float = 0.05

    def draw(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Boolean masks (drop_text, drop_image), shape (batch_size,), from one uniform draw per sample."""
        return self.masks(torch.rand(batch_size, generator=generator))

    def masks(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Boolean masks (drop_text, drop_image) from uniform numbers ``u`` in [0, 1), one per sample:
        [0, text_only) text only; [text_only, +image_only) image only; the next ``both``: both."""
        text_only = u < self.text_only
        image_only = (u >= self.text_only) & (u < self.text_only + self.image_only)
        both = (u >= self.text_only + self.image_only) & (u < self.text_only + self.image_only + self.both)
        return text_only | both, image_only | both


NO_DROPOUT = ConditioningDropout(0.0, 0.0, 0.0)


@dataclass
class FrozenParts:
    """The parts that are not trained: VAE, text encoder, tokenizer, the DDPM noise schedule and the
    empty prompt's embedding (1, L, D), all on the training device."""

    vae: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: object
    noise_scheduler: object
    null_text_embedding: torch.Tensor

    @classmethod
    def from_components(cls, components: BaseComponents, device: torch.device, dtype: torch.dtype) -> FrozenParts:
        from diffusers import DDPMScheduler

        vae = components.vae.to(device).eval().requires_grad_(False)
        text_encoder = components.text_encoder.to(device).eval().requires_grad_(False)
        if dtype != torch.float32:
            vae, text_encoder = vae.to(dtype), text_encoder.to(dtype)
        noise_scheduler = DDPMScheduler.from_config(components.scheduler.config)
        with torch.no_grad():
            null = text_encoder(tokenize(components.tokenizer, [""]).to(device))[0]
        return cls(vae, text_encoder, components.tokenizer, noise_scheduler, null)


def sample_generators(seed: int, positions: torch.Tensor) -> list[torch.Generator]:
    """One CPU generator per sample, seeded by (seed, stream position): the noise a sample gets does not
    depend on the batch size, the number of processes or the accumulation."""
    return [torch.Generator().manual_seed(derive_seed(seed, NOISE_STREAM, int(position))) for position in positions]


def denoising_loss(unet: torch.nn.Module, frozen: FrozenParts, batch: dict, generators: list[torch.Generator],
                   dropout: ConditioningDropout) -> torch.Tensor:
    """Mean squared error of the UNet's prediction on one micro-batch (a float32 scalar).

    Each sample's random draws come from its own generator (CPU), in this order: the target latents'
    posterior sample, the timestep, the diffusion noise, the dropout number."""
    vae, device = frozen.vae, frozen.null_text_embedding.device
    dtype = frozen.null_text_embedding.dtype
    current = batch["current"].to(device=device, dtype=dtype)
    past = batch["past"].to(device=device, dtype=dtype)
    if len(generators) != current.shape[0]:
        raise ValueError(f"{len(generators)} generators for a batch of {current.shape[0]}")
    with torch.no_grad():
        posterior = vae.encode(current).latent_dist
        latent_shape = tuple(posterior.mean.shape[1:])
        num_timesteps = frozen.noise_scheduler.config.num_train_timesteps
        sample_noise, timesteps, noise, uniforms = [], [], [], []
        for generator in generators:
            sample_noise.append(torch.randn(latent_shape, generator=generator))
            timesteps.append(torch.randint(0, num_timesteps, (1,), generator=generator))
            noise.append(torch.randn(latent_shape, generator=generator))
            uniforms.append(torch.rand(1, generator=generator))
        sample_noise = torch.stack(sample_noise).to(device=device, dtype=posterior.mean.dtype)
        timesteps = torch.cat(timesteps).to(device)
        noise = torch.stack(noise).to(device)
        drop_text, drop_image = dropout.masks(torch.cat(uniforms))
        latents = (posterior.mean + posterior.std * sample_noise).float() * vae.config.scaling_factor
        image_latents = vae.encode(past).latent_dist.mode().float()
        text_embedding = frozen.text_encoder(batch["input_ids"].to(device))[0]
        null = frozen.null_text_embedding.expand_as(text_embedding)
        text_embedding = torch.where(drop_text.to(device)[:, None, None], null, text_embedding)
        image_latents = image_latents * (~drop_image).to(device=device, dtype=image_latents.dtype)[:, None, None, None]
        noisy = frozen.noise_scheduler.add_noise(latents, noise, timesteps)
        if frozen.noise_scheduler.config.prediction_type == "epsilon":
            target = noise
        elif frozen.noise_scheduler.config.prediction_type == "v_prediction":
            target = frozen.noise_scheduler.get_velocity(latents, noise, timesteps)
        else:
            raise TrainingError(f"unsupported prediction_type {frozen.noise_scheduler.config.prediction_type!r}")
    unet_input = torch.cat([noisy, image_latents], dim=1)
    prediction = unet(unet_input, timesteps, encoder_hidden_states=text_embedding.float()).sample
    return F.mse_loss(prediction.float(), target.float())


# --------------------------------------------------------------------------------------------- output


def _prepare_output(config: TrainConfig, accumulation: int, is_main: bool) -> None:
    """Check the output folder: new, or a run of the same settings to resume."""
    out = Path(config.output_dir)
    saved_path = out / CONFIG_NAME
    if saved_path.is_file():
        saved = json.loads(saved_path.read_text())
        saved.pop("derived", None)
        differing = sorted(key for key in set(saved) | set(config.to_dict())
                           if key not in RESUMABLE_CHANGES and saved.get(key) != config.to_dict().get(key))
        if differing and checkpoint_folders(out):
            details = ", ".join(f"{key}: {saved.get(key)!r} -> {config.to_dict().get(key)!r}" for key in differing)
            raise TrainingError(
                f"{saved_path} was written by a run with other settings ({details}); resume with the same "
                "settings or choose another --out"
            )
    elif (out / "model_index.json").is_file():
        raise TrainingError(f"{out} already holds a pipeline not written by training (no {CONFIG_NAME}); "
                            "choose another --out")
    if is_main:
        record = config.to_dict()
        record["derived"] = {"gradient_accumulation_steps": accumulation}
        atomic_write_json(saved_path, record)


def export_pipeline(base_model: str | Path, unet: torch.nn.Module, output_dir: str | Path) -> Path:
    """Write a StableDiffusionInstructPix2PixPipeline folder with ``unet`` (float32) and the VAE, text
    encoder, tokenizer and scheduler of the base folder (read again, in float32) into ``output_dir``.

    Written to a hidden folder first; then the pipeline's entries are moved into place, model_index.json
    last, so a folder with model_index.json holds a complete pipeline."""
    from diffusers import StableDiffusionInstructPix2PixPipeline

    output_dir = Path(output_dir)
    staging = output_dir / ".export"
    shutil.rmtree(staging, ignore_errors=True)
    base = load_base_components(base_model)
    pipeline = StableDiffusionInstructPix2PixPipeline(
        vae=base.vae, text_encoder=base.text_encoder, tokenizer=base.tokenizer,
        unet=unet.float(), scheduler=base.scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipeline.save_pretrained(staging, safe_serialization=True)
    (output_dir / "model_index.json").unlink(missing_ok=True)
    for entry in sorted(staging.iterdir(), key=lambda path: path.name == "model_index.json"):
        target = output_dir / entry.name
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(entry, target)
    staging.rmdir()
    return output_dir


# ------------------------------------------------------------------------------------------- training


def _learning_rate(config: TrainConfig, step: int) -> float:
    """Learning rate of optimizer step ``step`` (0-based): linear warm-up, then constant."""
    if config.lr_warmup_steps > 0 and step < config.lr_warmup_steps:
        return config.learning_rate * (step + 1) / config.lr_warmup_steps
    return config.learning_rate


def train_instructx2x(config: TrainConfig, progress: bool = True) -> dict:
    """Run (or resume) training; return the summary written to ``train_summary.json``."""
    from accelerate import Accelerator

    config.validate()
    accelerator = Accelerator(mixed_precision=config.mixed_precision)
    accumulation = gradient_accumulation_steps(config.target_batch_size, config.per_device_batch_size,
                                               accelerator.num_processes)
    out = Path(config.output_dir)
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    _prepare_output(config, accumulation, accelerator.is_main_process)

    dataset = EditDataset(config.data_dir, config.split, resolution=config.resolution)
    components = load_base_components(config.base_model)
    half = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(config.mixed_precision, torch.float32)
    frozen = FrozenParts.from_components(components, accelerator.device, half)
    unet = components.unet.float().to(accelerator.device)
    unet.train()
    if config.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    optimizer = torch.optim.AdamW(unet.parameters(), lr=config.learning_rate,
                                  betas=(config.adam_beta1, config.adam_beta2),
                                  weight_decay=config.adam_weight_decay, eps=config.adam_epsilon)
    ema = ExponentialMovingAverage(unet, config.ema_decay) if config.use_ema else None

    saved_state = restore_latest_checkpoint(out, unet, optimizer, ema)
    start_step = int(saved_state.get("step", 0))
    if saved_state and accelerator.is_main_process:
        keep_log_until(out / LOG_NAME, start_step)
    if ema is not None:
        ema.shadow = {name: tensor.to(accelerator.device) for name, tensor in ema.shadow.items()}

    unet, optimizer = accelerator.prepare(unet, optimizer)
    if accelerator.scaler is not None and saved_state.get("grad_scaler"):
        accelerator.scaler.load_state_dict(saved_state["grad_scaler"])

    dropout = ConditioningDropout(config.text_dropout, config.image_dropout, config.both_dropout)
    remaining = max(0, config.max_train_steps - start_step)
    micro_batches = MicroBatches(dataset, frozen.tokenizer, config, first=start_step * accumulation,
                                 count=remaining * accumulation, process_index=accelerator.process_index,
                                 num_processes=accelerator.num_processes)
    loader = torch.utils.data.DataLoader(micro_batches, batch_size=None, shuffle=False,
                                         num_workers=config.num_workers)
    samples_per_step = config.target_batch_size
    bar = tqdm(total=config.max_train_steps, initial=start_step, desc="training", unit="step",
               disable=not (progress and accelerator.is_main_process))
    started = time.perf_counter()
    last_loss = math.nan
    batches = iter(loader)
    log_path = out / LOG_NAME
    for step in range(start_step, config.max_train_steps):
        for group in optimizer.param_groups:
            group["lr"] = _learning_rate(config, step)
        step_loss = 0.0
        for micro in range(accumulation):
            batch = next(batches)
            generators = sample_generators(config.seed, batch["positions"])
            sync = micro == accumulation - 1
            context = contextlib.nullcontext() if sync else accelerator.no_sync(unet)
            with context:
                loss = denoising_loss(unet, frozen, batch, generators, dropout)
                accelerator.backward(loss / accumulation)
            step_loss += loss.detach().float() / accumulation
        if config.max_grad_norm > 0:
            accelerator.clip_grad_norm_(unet.parameters(), config.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            ema.update(accelerator.unwrap_model(unet), step + 1)
        last_loss = float(accelerator.reduce(step_loss.to(accelerator.device), reduction="mean"))
        done = step + 1
        bar.update(1)
        bar.set_postfix(loss=f"{last_loss:.4f}")
        if accelerator.is_main_process and (done % config.log_every == 0 or done == config.max_train_steps):
            seconds = time.perf_counter() - started
            append_log(log_path, {
                "step": done, "loss": last_loss, "lr": _learning_rate(config, step),
                "samples_seen": done * samples_per_step, "epoch": done * samples_per_step / len(dataset),
                "seconds": round(seconds, 3), "steps_per_second": (done - start_step) / max(seconds, 1e-9)})
        if done % config.checkpoint_every == 0 or done == config.max_train_steps:
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:
                state = {"step": done, "samples_seen": done * samples_per_step,
                         "num_processes": accelerator.num_processes,
                         "grad_scaler": accelerator.scaler.state_dict() if accelerator.scaler is not None else None}
                write_checkpoint(out, done, accelerator.unwrap_model(unet), optimizer.optimizer, ema, state,
                                  config.keep_checkpoints)
            accelerator.wait_for_everyone()
    bar.close()

    summary = {}
    if accelerator.is_main_process:
        final_unet = accelerator.unwrap_model(unet)
        if ema is not None:
            raw = {name: tensor.detach().clone() for name, tensor in final_unet.state_dict().items()}
            ema.copy_to(final_unet)
        export_pipeline(config.base_model, final_unet, out)
        if ema is not None:
            final_unet.load_state_dict(raw)
        seconds = time.perf_counter() - started
        trained = config.max_train_steps - start_step
        summary = {
            "steps": config.max_train_steps, "resumed_from_step": start_step, "steps_this_session": trained,
            "last_loss": None if math.isnan(last_loss) else last_loss, "base_kind": components.kind,
            "exported_weights": "ema" if ema is not None else "raw", "seconds_this_session": round(seconds, 3),
            "steps_per_second": trained / seconds if trained and seconds > 0 else None,
            "gradient_accumulation_steps": accumulation, "num_processes": accelerator.num_processes,
        }
        atomic_write_json(out / SUMMARY_NAME, summary)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return summary
