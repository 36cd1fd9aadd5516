"""Training of the phantom generator's VAE: a small ``diffusers.AutoencoderKL`` for 128 px phantoms.

The VAE has Stable Diffusion's interface, so :mod:`cfbench.diffusion` and the InstructX2X trainer use it
unchanged: 3-channel input in [-1, 1] (the grey image replicated, as :func:`cfbench.diffusion.encode_images`
feeds it), 4 latent channels, downsampling factor 2 ** (blocks - 1): the recipe's three encoder blocks give
factor 4, a 32 x 32 x 4 latent for a 128 px image (factor 8, Stable Diffusion's, blurred the fine detail the
phantom evaluator reads). Decoded images are read back as the mean of the 3 output channels.

``train_phantom_vae(VaeConfig(...))`` renders single phantoms with the evaluator trainer's samplers
(:func:`cfbench.phantom.evaluator_training.render_examples`: training stream at each of ``render_resolutions`` px, resized to
128 px; a held-out set from the held-out stream at 256 px) and trains with AdamW on

    L1 + mse_weight * MSE + gradient_weight * L1(finite differences) + kl_weight * KL
       + spectral_weight * L1(log amplitude spectra)  (:func:`spectral_distance`; no perceptual network),

pixel terms averaged over pixels and channels (intensities in [-1, 1]); KL summed over the latent elements of
a sample and averaged over the batch (as diffusers' and LDM's autoencoder training). Learning rate: linear
warm-up over ``lr_warmup_steps``, then cosine decay to ``final_lr_fraction`` of it at ``steps``.

Reproducibility and resume: the order is :class:`cfbench.training.instructx2x.SampleStream` (a permutation per
epoch seeded by (seed, epoch)); optimizer step ``s`` takes stream positions ``[s * B, (s + 1) * B)``; the
flip and the posterior-sampling noise of position ``i`` come from a generator seeded by (seed, i)
(:func:`cfbench.training.instructx2x.sample_generators`); the initial weights from ``seed``. A checkpoint (weights
and AdamW state in safetensors, the rest in JSON, no pickles) therefore holds all the state, and a resumed
run on the CPU reaches bit-identical weights to an uninterrupted one.

Output folder::

    vae/                    the trained AutoencoderKL (diffusers save_pretrained, safetensors, float32), with
                            ``scaling_factor`` = 1 / std of the held-out latents (SD's 0.18215 rule)
    vae_train_config.json   the VaeConfig
    train_log.jsonl         step, loss terms, lr, samples_seen, seconds, steps_per_second
    checkpoints/step-000500/  vae.safetensors, optimizer.safetensors, optimizer.json, trainer_state.json
    train_summary.json      steps done, completed or stopped by max_minutes, timing, device, and the
                            acceptance scores (:func:`reconstruction_acceptance`)

``max_minutes`` caps one session's training wall time: at the first step past it, training checkpoints,
stops, and the VAE is exported and scored as it is (the summary says ``completed: false``); running again
resumes.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cfbench.phantom.evaluator_training import (
    HELDOUT_STREAM,
    TRAIN_STREAM,
    PhantomExamples,
    render_examples,
    score_outputs,
)
from cfbench.core.storage import JsonlLedger, atomic_write_json, json_safe
from cfbench.training.checkpoints import STATE_NAME, TrainingError, checkpoint_folders, keep_log_until
from cfbench.training.instructx2x import SampleStream, sample_generators

CONFIG_NAME = "vae_train_config.json"
LOG_NAME = "train_log.jsonl"
SUMMARY_NAME = "train_summary.json"
VAE_FOLDER = "vae"
WEIGHTS_NAME = "vae.safetensors"
OPTIMIZER_TENSORS = "optimizer.safetensors"
OPTIMIZER_JSON = "optimizer.json"
HELDOUT_RENDER_SIZE = 256  # px, as the phantom evaluator's held-out set
ACCEPTANCE_TOLERANCE = 0.01  # max |AUROC or r (decoded) - AUROC or r (original)|
RESUMABLE_CHANGES = frozenset({"output_dir", "checkpoint_every", "keep_checkpoints", "log_every", "max_minutes",
                               "device", "workers", "n_heldout", "progress"})


@dataclass
class VaeConfig:
    """A VAE training run (saved as ``vae_train_config.json``).

    n_train: training phantoms per render size; render_resolutions: px the training phantoms are rendered at
    before the antialiased resize to 128 px; n_heldout: held-out phantoms for the acceptance scores.
    block_out_channels (one entry per encoder block; 3 blocks = factor 4, 4 = factor 8), layers_per_block, latent_channels,
    norm_num_groups: the AutoencoderKL. steps: optimizer steps; batch_size: images per step. learning_rate,
    lr_warmup_steps, final_lr_fraction: the schedule (see the module docstring). weight_decay,
    max_grad_norm (0 disables clipping): AdamW and clipping. mse_weight, gradient_weight, kl_weight,
    spectral_weight: loss weights. hflip_probability: horizontal flips of training images. checkpoint_every /
    log_every: steps between checkpoints / log records; keep_checkpoints: how many to keep. max_minutes:
    wall-clock cap on training in one session (0: none). device: "cpu", "cuda", "cuda:1", ...; workers:
    rendering processes.
    """

    output_dir: str
    n_train: int = 6000
    render_resolutions: tuple[int, ...] = (128, 256)
    n_heldout: int = 1000
    seed: int = 0
    block_out_channels: tuple[int, ...] = (32, 64, 128)
    layers_per_block: int = 1
    latent_channels: int = 4
    norm_num_groups: int = 32
    steps: int = 3000
    batch_size: int = 32
    learning_rate: float = 4e-4
    lr_warmup_steps: int = 100
    final_lr_fraction: float = 0.1
    weight_decay: float = 1e-4
    max_grad_norm: float = 1.0
    mse_weight: float = 1.0
    gradient_weight: float = 0.5
    kl_weight: float = 1e-6
    spectral_weight: float = 0.0
    hflip_probability: float = 0.5
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    log_every: int = 25
    max_minutes: float = 0.0
    device: str = "cpu"
    workers: int = 1
    progress: bool = True

    def validate(self) -> None:
        for name in ("n_train", "n_heldout", "steps", "batch_size", "checkpoint_every", "keep_checkpoints",
                     "log_every", "workers"):
            if getattr(self, name) < 1:
                raise TrainingError(f"{name} must be >= 1, got {getattr(self, name)}")
        if len(self.block_out_channels) not in (3, 4):
            raise TrainingError("block_out_channels needs 3 or 4 entries (downsampling factor 4 or 8)")
        if self.learning_rate <= 0 or not 0 <= self.final_lr_fraction <= 1:
            raise TrainingError("learning_rate must be > 0 and final_lr_fraction in [0, 1]")
        if not 0 <= self.hflip_probability <= 1 or self.max_minutes < 0:
            raise TrainingError("hflip_probability must lie in [0, 1] and max_minutes be >= 0")

    def to_dict(self) -> dict:
        record = asdict(self)
        record["render_resolutions"] = list(self.render_resolutions)
        record["block_out_channels"] = list(self.block_out_channels)
        return record

    @classmethod
    def from_dict(cls, data: dict) -> VaeConfig:
        known = {item.name for item in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise TrainingError(f"unknown VAE setting(s) {unknown}")
        data = dict(data)
        for key in ("render_resolutions", "block_out_channels"):
            if key in data:
                data[key] = tuple(int(v) for v in data[key])
        return cls(**data)


def build_vae(config: VaeConfig, image_size: int = 128):
    """A freshly initialised AutoencoderKL for ``config`` (weights from ``config.seed``, float32)."""
    from diffusers import AutoencoderKL

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return AutoencoderKL(
            in_channels=3, out_channels=3, latent_channels=config.latent_channels,
            down_block_types=("DownEncoderBlock2D",) * len(config.block_out_channels),
            up_block_types=("UpDecoderBlock2D",) * len(config.block_out_channels),
            block_out_channels=tuple(config.block_out_channels), layers_per_block=config.layers_per_block,
            norm_num_groups=config.norm_num_groups, sample_size=image_size,
        )


def learning_rate(config: VaeConfig, step: int) -> float:
    """Learning rate of optimizer step ``step`` (0-based): linear warm-up, then cosine to the final fraction."""
    if step < config.lr_warmup_steps:
        return config.learning_rate * (step + 1) / config.lr_warmup_steps
    span = max(1, config.steps - config.lr_warmup_steps)
    progress = min(1.0, (step - config.lr_warmup_steps) / span)
    floor = config.final_lr_fraction
    return config.learning_rate * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def vae_loss(vae, images: torch.Tensor, generators: list[torch.Generator], config: VaeConfig) -> dict[str, torch.Tensor]:
    """Loss terms of one batch. images: float32 (B, H, W) in [0, 1] on the VAE's device; each sample's
    generator gives first its flip draw, then its posterior-sampling noise. Returns the terms and ``loss``."""
    device = images.device
    flips = torch.tensor([float(torch.rand(1, generator=g)) < config.hflip_probability for g in generators])
    images = torch.where(flips.to(device)[:, None, None], images.flip(-1), images)
    target = (images[:, None] * 2.0 - 1.0).expand(-1, 3, -1, -1)
    posterior = vae.encode(target).latent_dist
    shape = tuple(posterior.mean.shape[1:])
    noise = torch.stack([torch.randn(shape, generator=g) for g in generators]).to(device)
    reconstruction = vae.decode(posterior.mean + posterior.std * noise).sample
    error = reconstruction - target
    gradient = ((error[..., :, 1:] - error[..., :, :-1]).abs().mean()
                + (error[..., 1:, :] - error[..., :-1, :]).abs().mean())
    terms = {"l1": error.abs().mean(), "mse": error.square().mean(), "gradient": gradient,
             "kl": posterior.kl().mean()}
    terms["loss"] = (terms["l1"] + config.mse_weight * terms["mse"] + config.gradient_weight * terms["gradient"]
                     + config.kl_weight * terms["kl"])
    if config.spectral_weight:
        terms["spectral"] = spectral_distance(reconstruction.mean(dim=1), target[:, 0])
        terms["loss"] = terms["loss"] + config.spectral_weight * terms["spectral"]
    return terms


def spectral_distance(images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean |log(1 + |FFT(images)|) - log(1 + |FFT(targets)|)| over (B, H, W//2+1) frequencies (orthonormal 2-D
    FFT of (B, H, W) intensities): compares the amplitude spectra, i.e. how much texture of each frequency and
    orientation there is, whatever its phase (blur lowers the high-frequency amplitudes)."""
    amplitude = lambda x: torch.log1p(torch.fft.rfft2(x.float(), norm="ortho").abs())  # noqa: E731
    return (amplitude(images) - amplitude(targets)).abs().mean()


# ------------------------------------------------------------------------------------------ checkpoints


def optimizer_to_safetensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """An optimizer's state as (tensors for safetensors, JSON-able rest): tensors under
    ``state.<param index>.<key>`` (0-d tensors stored with shape (1,)), numbers and param groups in JSON."""
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, values in state["state"].items():
        for key, value in values.items():
            if torch.is_tensor(value):
                tensors[f"state.{index}.{key}"] = value.detach().cpu().reshape(-1 if value.ndim else 1).contiguous()
                scalars[f"{index}.{key}"] = {"shape": list(value.shape)}
            else:
                scalars[f"{index}.{key}"] = {"value": value}
    return tensors, {"param_groups": state["param_groups"], "entries": scalars}


def optimizer_from_safetensors(tensors: dict[str, torch.Tensor], record: dict) -> dict:
    """The inverse of :func:`optimizer_to_safetensors`: a state dict for ``optimizer.load_state_dict``."""
    state: dict[int, dict] = {}
    for name, entry in record["entries"].items():
        index, key = name.split(".", 1)
        value = tensors[f"state.{name}"].reshape(entry["shape"]) if "shape" in entry else entry["value"]
        state.setdefault(int(index), {})[key] = value
    return {"state": state, "param_groups": record["param_groups"]}


def _write_checkpoint(out: Path, step: int, vae, optimizer, state: dict, keep: int) -> Path:
    from safetensors.torch import save_file

    root = out / "checkpoints"
    final, partial = root / f"step-{step:06d}", root / f".partial-step-{step:06d}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in vae.state_dict().items()}, partial / WEIGHTS_NAME)
    tensors, record = optimizer_to_safetensors(optimizer)
    save_file(tensors, partial / OPTIMIZER_TENSORS)
    atomic_write_json(partial / OPTIMIZER_JSON, record)
    atomic_write_json(partial / STATE_NAME, state)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(partial, final)
    for old in checkpoint_folders(out)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _restore(out: Path, vae, optimizer) -> dict:
    """Load the newest complete checkpoint into the VAE and optimizer; its trainer state ({} if none)."""
    from safetensors.torch import load_file

    folders = checkpoint_folders(out)
    if not folders:
        return {}
    folder = folders[-1]
    vae.load_state_dict(load_file(folder / WEIGHTS_NAME))
    record = json.loads((folder / OPTIMIZER_JSON).read_text())
    optimizer.load_state_dict(optimizer_from_safetensors(load_file(folder / OPTIMIZER_TENSORS), record))
    return json.loads((folder / STATE_NAME).read_text())


def _check_config(config: VaeConfig, out: Path) -> None:
    saved_path = out / CONFIG_NAME
    if saved_path.is_file() and checkpoint_folders(out):
        saved = json.loads(saved_path.read_text())
        current = config.to_dict()
        defaults = VaeConfig(output_dir="").to_dict()  # settings added later read as their defaults
        differing = sorted(k for k in set(saved) | set(current)
                           if k not in RESUMABLE_CHANGES and saved.get(k, defaults.get(k)) != current.get(k))
        if differing:
            raise TrainingError(f"{saved_path} was written by a run with other settings ({', '.join(differing)}); "
                                "resume with the same settings or choose another output folder")
    atomic_write_json(saved_path, config.to_dict())


def measure_steps_per_second(config: VaeConfig, warmup: int = 5, timed: int = 20) -> float:
    """Optimizer steps per second of ``config``'s VAE and batch size on ``config.device`` (random images, a
    throwaway model; ``warmup`` untimed steps first, e.g. for cuDNN's algorithm search)."""
    device = torch.device(config.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    vae = build_vae(config).to(device).train()
    optimizer = torch.optim.AdamW(vae.parameters(), lr=config.learning_rate)
    images = torch.rand((config.batch_size, 128, 128), generator=torch.Generator().manual_seed(0)).to(device)
    positions = torch.arange(config.batch_size)
    started = 0.0
    for step in range(warmup + timed):
        if step == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            started = time.perf_counter()
        terms = vae_loss(vae, images, sample_generators(config.seed, positions), config)
        optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return timed / max(time.perf_counter() - started, 1e-9)


def fit_steps_to_time(config: VaeConfig, fraction: float = 0.9) -> VaeConfig:
    """``config`` with ``steps`` = min(``steps``, what ``fraction`` of ``max_minutes`` holds at the measured
    speed), so the learning-rate schedule ends inside the time cap. A folder that already holds a run keeps
    that run's steps (resuming must not change the schedule); without a cap the config is returned as is."""
    saved = Path(config.output_dir) / CONFIG_NAME
    if saved.is_file() and checkpoint_folders(config.output_dir):
        return dataclasses.replace(config, steps=int(json.loads(saved.read_text())["steps"]))
    if not config.max_minutes:
        return config
    rate = measure_steps_per_second(config)
    return dataclasses.replace(config, steps=max(1, min(config.steps, int(fraction * rate * 60 * config.max_minutes))))


def vae_from_checkpoint(output_dir: str | Path):
    """(VAE with the newest checkpoint's weights, its step) of a training folder, e.g. to score a run that
    is still going (:func:`reconstruction_acceptance`); the latent scaling factor is not set yet."""
    from safetensors.torch import load_file

    out = Path(output_dir)
    folders = checkpoint_folders(out)
    if not folders:
        raise TrainingError(f"{out} has no checkpoint yet")
    vae = build_vae(VaeConfig.from_dict(json.loads((out / CONFIG_NAME).read_text())))
    vae.load_state_dict(load_file(folders[-1] / WEIGHTS_NAME))
    return vae.eval(), int(json.loads((folders[-1] / STATE_NAME).read_text())["step"])


# ------------------------------------------------------------------------------------------ acceptance


def _components(vae, device: torch.device):
    """A :class:`cfbench.diffusion.DiffusionComponents` holding only the VAE (for encode/decode)."""
    from cfbench.diffusion import DiffusionComponents

    return DiffusionComponents(unet=None, vae=vae, text_encoder=None, tokenizer=None, scheduler=None,
                               device=device, dtype=next(vae.parameters()).dtype)


@torch.no_grad()
def reconstruct(vae, images: np.ndarray, device: str | torch.device = "cpu", batch_size: int = 64) -> np.ndarray:
    """Encode (posterior mode) and decode float (N, H, W) images in [0, 1] through the same path the diffusion
    adapters use (:func:`cfbench.diffusion.encode_images` / :func:`~cfbench.diffusion.decode_latents`);
    returns float32 (N, H, W) in [0, 1]."""
    from cfbench.diffusion import decode_latents, encode_images

    components = _components(vae.eval(), torch.device(device))
    parts = []
    for start in range(0, len(images), batch_size):
        batch = torch.from_numpy(np.asarray(images[start:start + batch_size], dtype=np.float32))
        latents = encode_images(components, batch) * components.latent_scaling
        parts.append(decode_latents(components, latents).cpu().numpy())
    return np.concatenate(parts) if parts else np.zeros((0, *images.shape[1:]), np.float32)


@torch.no_grad()
def latent_scaling_factor(vae, images: np.ndarray, device: str | torch.device = "cpu", batch_size: int = 64) -> float:
    """1 / standard deviation of the posterior-mode latents of ``images`` (so scaled latents have unit variance)."""
    from cfbench.diffusion import encode_images

    components = _components(vae.eval(), torch.device(device))
    latents = [encode_images(components, torch.from_numpy(np.asarray(images[s:s + batch_size], np.float32)))
               for s in range(0, len(images), batch_size)]
    return float(1.0 / torch.cat(latents).std().clamp_min(1e-6))


def reconstruction_acceptance(vae, examples: PhantomExamples, evaluator=None, device: str | torch.device = "cpu",
                              tolerance: float = ACCEPTANCE_TOLERANCE) -> dict[str, Any]:
    """The phantom evaluator's scores on the original held-out images and on their VAE reconstructions.

    Returns ``original`` and ``decoded`` (per-finding AUROC, group macro AUROC, sex AUROC, age Pearson r),
    ``delta`` (decoded - original, same keys), ``max_abs_delta``, ``passed`` (every |delta| <= tolerance),
    ``tolerance``, ``pixel_mae`` (mean |decoded - original|, intensity units in [0, 1]), ``psnr_db`` and ``n``.
    evaluator: a :class:`cfbench.phantom.evaluator.PhantomEvaluator` (default: the shipped one, on ``device``).
    """
    from cfbench.phantom.evaluator import PhantomEvaluator

    evaluator = evaluator or PhantomEvaluator.from_file(device=str(device))
    original = np.asarray(examples.images, dtype=np.float32)
    decoded = reconstruct(vae, original, device)

    def scores(images: np.ndarray) -> dict[str, Any]:
        full = score_outputs(evaluator.predict(images), examples)
        return {"auroc": full["auroc"], "group_auroc": full["group_auroc"], "sex_auroc": full["sex_auroc"],
                "age_pearson": full["age_pearson"]}

    before, after = scores(original), scores(decoded)
    delta = {"auroc": {name: after["auroc"][name] - before["auroc"][name] for name in before["auroc"]},
             **{key: after[key] - before[key] for key in ("group_auroc", "sex_auroc", "age_pearson")}}
    values = [*delta["auroc"].values(), delta["group_auroc"], delta["sex_auroc"], delta["age_pearson"]]
    finite = [abs(v) for v in values if math.isfinite(v)]
    mse = float(np.mean((decoded - original) ** 2))
    return {
        "n": len(original), "original": before, "decoded": after, "delta": delta,
        "max_abs_delta": max(finite) if finite else math.nan,
        "passed": bool(finite) and len(finite) == len(values) and max(finite) <= tolerance,
        "tolerance": tolerance, "pixel_mae": float(np.mean(np.abs(decoded - original))),
        "psnr_db": float(10 * np.log10(1.0 / max(mse, 1e-12))),
    }


# ------------------------------------------------------------------------------------------ training


def _render_training_images(config: VaeConfig) -> torch.Tensor:
    parts = [render_examples(config.n_train, config.seed, TRAIN_STREAM, size, 0.0, config.workers,
                             config.progress, desc=f"rendering VAE training phantoms ({size} px)").images
             for size in config.render_resolutions]
    return torch.from_numpy(np.concatenate(parts))  # float16 (N, 128, 128)


def device_description(device: torch.device) -> str:
    """The accelerator's name (CUDA) or the CPU with its thread count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"


def train_phantom_vae(config: VaeConfig, heldout: PhantomExamples | None = None) -> dict[str, Any]:
    """Train (or resume) the VAE, export ``vae/`` and score it; returns the summary (``train_summary.json``).

    heldout: held-out examples to score on (default: ``n_heldout`` rendered from the held-out stream)."""
    from tqdm.auto import tqdm

    config.validate()
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    _check_config(config, out)
    device = torch.device(config.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    vae = build_vae(config).to(device).train()
    decay = [p for p in vae.parameters() if p.ndim > 1]
    no_decay = [p for p in vae.parameters() if p.ndim <= 1]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=config.learning_rate)
    state = _restore(out, vae, optimizer)
    start = int(state.get("step", 0))
    log_path = out / LOG_NAME
    keep_log_until(log_path, start)

    started = time.perf_counter()
    render_seconds = 0.0
    done, last, stopped_early = start, {}, False
    if start < config.steps:
        images = _render_training_images(config)
        render_seconds = time.perf_counter() - started
        stream = SampleStream(len(images), config.seed)
        train_started = time.perf_counter()
        bar = tqdm(total=config.steps, initial=start, desc="VAE", unit="step", disable=not config.progress)
        with JsonlLedger(log_path) as log:
            for step in range(start, config.steps):
                for group in optimizer.param_groups:
                    group["lr"] = learning_rate(config, step)
                positions = torch.arange(step * config.batch_size, (step + 1) * config.batch_size)
                index = torch.tensor([stream.sample_index(int(p)) for p in positions])
                batch = images[index].to(device=device, dtype=torch.float32)
                terms = vae_loss(vae, batch, sample_generators(config.seed, positions), config)
                optimizer.zero_grad(set_to_none=True)
                terms["loss"].backward()
                if config.max_grad_norm > 0:
                    torch.nn.utils.clip_grad_norm_(vae.parameters(), config.max_grad_norm)
                optimizer.step()
                done = step + 1
                bar.update(1)
                seconds = time.perf_counter() - train_started
                out_of_time = config.max_minutes > 0 and seconds > 60 * config.max_minutes
                if done % config.log_every == 0 or done == config.steps or out_of_time:
                    last = {key: float(value.detach()) for key, value in terms.items()}  # syncs a GPU: log steps only
                    bar.set_postfix(loss=f"{last['loss']:.4f}")
                    log.append({"step": done, **last, "lr": learning_rate(config, step),
                                "samples_seen": done * config.batch_size, "seconds": round(seconds, 3),
                                "steps_per_second": (done - start) / max(seconds, 1e-9)})
                if done % config.checkpoint_every == 0 or done == config.steps or out_of_time:
                    _write_checkpoint(out, done, vae, optimizer,
                                      {"step": done, "samples_seen": done * config.batch_size},
                                      config.keep_checkpoints)
                if out_of_time:
                    stopped_early = done < config.steps
                    break
        bar.close()
        del images
    train_seconds = time.perf_counter() - started - render_seconds

    if heldout is None:
        heldout = render_examples(config.n_heldout, config.seed, HELDOUT_STREAM, HELDOUT_RENDER_SIZE, 0.0,
                                  config.workers, config.progress, desc="rendering held-out phantoms")
    vae.eval()
    scaling = latent_scaling_factor(vae, heldout.images, device)
    vae.register_to_config(scaling_factor=scaling)
    vae.save_pretrained(out / VAE_FOLDER, safe_serialization=True)
    acceptance = reconstruction_acceptance(vae, heldout, device=device)
    records = JsonlLedger(log_path).records() if log_path.is_file() else []
    summary = json_safe({
        "steps": config.steps, "steps_done": done, "resumed_from_step": start, "completed": done >= config.steps,
        "stopped_by_max_minutes": stopped_early, "max_minutes": config.max_minutes,
        "last_losses": last or (records[-1] if records else {}),
        "parameters": sum(p.numel() for p in vae.parameters()), "scaling_factor": scaling,
        "render_seconds_this_session": round(render_seconds, 3), "train_seconds_this_session": round(train_seconds, 3),
        "steps_per_second": (done - start) / train_seconds if done > start and train_seconds > 0 else None,
        "device": str(device), "hardware": device_description(device), "torch_version": torch.__version__,
        "acceptance": acceptance,
    })
    atomic_write_json(out / SUMMARY_NAME, summary)
    return summary
