"""The phantom InstructX2X generator: recipe, base folder, staged training and the shipped folder.

``train_phantom_generator(out, ...)`` runs, from a recipe (default ``cfbench/data/phantom_generator_recipe.json``),
the stages below; each is skipped when its output is complete and resumes from its checkpoints otherwise,
so re-running the same command after a crash continues where it stopped:

1. ``data/``: a phantom edit dataset (:func:`cfbench.phantom.dataset.build_phantom_dataset`, rendered by
   worker processes, written to a hidden folder and renamed when complete).
2. ``vae_training/``: the VAE (:func:`cfbench.training.phantom_vae.train_phantom_vae`), with its acceptance scores.
3. ``base/``: an InstructPix2Pix folder: a seeded, untrained UNet (8 input channels, cross-attention width =
   the text encoder's), the trained VAE, the phantom tokenizer and frozen random text encoder
   (:mod:`cfbench.training.phantom_text`) and the recipe's DDIM scheduler; no safety checker or feature extractor.
   With ``instructx2x.init_from`` (a trained phantom pipeline folder, e.g. the shipped one) the VAE stage is
   skipped and ``base/`` is a copy of that folder: training continues from its UNet (a warm start with a
   fresh optimizer), and the model card counts the earlier steps (``continued_from``).
4. ``instructx2x/``: :func:`cfbench.training.instructx2x.train_instructx2x` on ``data/`` (split ``train``) from
   ``base/``, unchanged. A wall-clock cap (``max_minutes``) is kept by calling it in chunks of steps
   (``max_train_steps`` may grow between resumptions): a short first chunk measures the speed, the next one
   fills the time left; every chunk ends with a checkpoint and an exported pipeline, so a capped run still
   leaves a usable model.
5. ``shipped/``: the trained pipeline with its weights stored as float16 safetensors (loaders cast them back
   to the dtype they are asked for), checked to load through the training and the inference loaders, plus
   ``MODEL_CARD.md`` and ``model_card.json`` (data, steps, loss-curve summary, timing, hardware, VAE acceptance).

Step counts come from the recipe's device profile ("cuda" or "cpu"); ``steps_scale`` multiplies them (0.01
for smoke tests) and ``overrides`` ({"dataset.n": 24, "dataset.resolution": 64, ...}) replaces single values.
"""

from __future__ import annotations

import copy
import json
import math
import os
import platform
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from cfbench.core.config import PACKAGE_DATA_DIR
from cfbench.core.storage import atomic_write_json, atomic_write_text, json_safe, read_jsonl

RECIPE_PATH = PACKAGE_DATA_DIR / "phantom_generator_recipe.json"
RECIPE_FORMAT = "cfbench-phantom-generator-recipe"
PIPELINE_CLASS = "StableDiffusionInstructPix2PixPipeline"
WEIGHT_COMPONENTS = ("unet", "vae", "text_encoder")
FOLDER_ENTRIES = ("model_index.json", "unet", "vae", "text_encoder", "tokenizer", "scheduler")  # a phantom pipeline
CARD_NAME, CARD_JSON = "MODEL_CARD.md", "model_card.json"
PROBE_STEPS = 100  # default first chunk of a time-capped InstructX2X stage ("probe_steps"): measures the speed


def load_recipe(path: str | Path | None = None) -> dict:
    """The recipe JSON (default: the shipped one); ValueError when it is not a generator recipe."""
    path = Path(path) if path else RECIPE_PATH
    recipe = json.loads(path.read_text())
    if recipe.get("format") != RECIPE_FORMAT:
        raise ValueError(f"{path} is not a phantom generator recipe (format {recipe.get('format')!r})")
    return recipe


def profile_name(device: str) -> str:
    """"cuda" for CUDA devices ("cuda", "cuda:1"), else "cpu"."""
    return "cuda" if str(device).startswith("cuda") else "cpu"


def resolve_recipe(recipe: dict, device: str = "cpu", steps_scale: float = 1.0,
                   overrides: dict[str, Any] | None = None) -> dict:
    """The recipe with the device's profile merged into its sections, step counts scaled by ``steps_scale``
    (rounded up, at least 1) and ``overrides`` ({"section.key": value}) applied last."""
    if steps_scale <= 0:
        raise ValueError(f"steps_scale must be > 0, got {steps_scale}")
    resolved = copy.deepcopy({key: value for key, value in recipe.items() if key != "profiles"})
    profile = recipe["profiles"][profile_name(device)]
    resolved["dataset"]["workers"] = profile.get("dataset_workers", 1)
    for section in ("vae", "instructx2x"):
        resolved[section].update(profile[section])
        resolved[section]["steps"] = max(1, math.ceil(resolved[section]["steps"] * steps_scale))
    for dotted, value in (overrides or {}).items():
        section, key = dotted.split(".", 1)
        resolved[section][key] = value
    resolved.update(device=str(device), profile=profile_name(device), steps_scale=steps_scale)
    return resolved


def vae_config(resolved: dict, output_dir: str | Path, progress: bool = True, fit: bool = True):
    """The :class:`cfbench.training.phantom_vae.VaeConfig` of a resolved recipe. With ``fit`` and the recipe's
    ``vae.fit_steps_to_time``, a new run's steps are cut to what its ``max_minutes`` holds at the speed measured
    on this device (:func:`cfbench.training.phantom_vae.fit_steps_to_time`; a folder holding a run keeps its steps)."""
    from cfbench.training.phantom_vae import VaeConfig, fit_steps_to_time

    settings = {key: value for key, value in resolved["vae"].items() if key != "fit_steps_to_time"}
    config = VaeConfig.from_dict({**settings, "output_dir": str(output_dir), "device": resolved["device"],
                                  "progress": progress})
    return fit_steps_to_time(config) if fit and resolved["vae"].get("fit_steps_to_time") else config


# ---------------------------------------------------------------------------------------------- base folder


def build_unet(settings: dict, cross_attention_dim: int, sample_size: int):
    """A seeded, untrained InstructPix2Pix UNet (8 input channels, 4 output) from the recipe's ``unet`` section."""
    from diffusers import UNet2DConditionModel

    from cfbench.training.base_weights import INSTRUCT_PIX2PIX_IN_CHANNELS, LATENT_CHANNELS

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(settings["seed"]))
        return UNet2DConditionModel(
            sample_size=sample_size, in_channels=INSTRUCT_PIX2PIX_IN_CHANNELS, out_channels=LATENT_CHANNELS,
            block_out_channels=tuple(settings["block_out_channels"]), layers_per_block=settings["layers_per_block"],
            down_block_types=tuple(settings["down_block_types"]), up_block_types=tuple(settings["up_block_types"]),
            cross_attention_dim=cross_attention_dim, attention_head_dim=settings["attention_head_dim"],
            norm_num_groups=settings["norm_num_groups"],
        )


def _save_pipeline(folder: Path, **components) -> Path:
    """save_pretrained a StableDiffusionInstructPix2PixPipeline into a hidden sibling, then rename it to ``folder``."""
    import diffusers

    staging = folder.parent / f".{folder.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    pipeline = getattr(diffusers, PIPELINE_CLASS)(**components, safety_checker=None, feature_extractor=None,
                                                   requires_safety_checker=False)
    pipeline.save_pretrained(staging, safe_serialization=True)
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(staging, folder)
    return folder


def build_base_folder(out: str | Path, vae_folder: str | Path, resolved: dict) -> Path:
    """Write the untrained phantom InstructPix2Pix folder ``out`` (see the module docstring) and return it."""
    from diffusers import AutoencoderKL, DDIMScheduler
    from transformers import AutoTokenizer, CLIPTextModel

    from cfbench.training.phantom_text import save_phantom_text_side

    out = Path(out)
    text_dir = out.parent / f".{out.name}.text"
    shutil.rmtree(text_dir, ignore_errors=True)
    tokenizer_dir, encoder_dir = save_phantom_text_side(text_dir, resolved["text"])
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    text_encoder = CLIPTextModel.from_pretrained(encoder_dir)
    vae = AutoencoderKL.from_pretrained(vae_folder)
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    unet = build_unet(resolved["unet"], text_encoder.config.hidden_size, resolved["dataset"]["resolution"] // factor)
    scheduler = DDIMScheduler(**resolved["scheduler"])
    _save_pipeline(out, unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler)
    for name in ("vocab.json", "merges.txt"):  # keep CLIP's own files beside what save_pretrained wrote
        if not (out / "tokenizer" / name).is_file():
            shutil.copy2(tokenizer_dir / name, out / "tokenizer" / name)
    shutil.rmtree(text_dir, ignore_errors=True)
    return out


def build_base_from_folder(out: str | Path, init_from: str | Path) -> dict:
    """Copy the pipeline folder ``init_from`` (a trained phantom generator: model_index.json, unet, vae,
    text_encoder, tokenizer, scheduler) to the base folder ``out`` for a warm start. Returns what the model
    card records of it: {"folder", "unet_sha256", "steps_before", "loss_curve_before", "vae"} (steps and
    curves from its ``model_card.json``; steps_before 0 when it has none)."""
    from cfbench.core.hashing import file_sha256

    source, out = Path(init_from), Path(out)
    missing = [name for name in FOLDER_ENTRIES if not (source / name).exists()]
    if missing:
        raise FileNotFoundError(f"instructx2x.init_from {source} is not a pipeline folder: "
                                f"missing {', '.join(missing)}")
    card = json.loads((source / CARD_JSON).read_text()) if (source / CARD_JSON).is_file() else {}
    earlier = card.get("instructx2x") or {}
    if not (out / "model_index.json").is_file():
        staging = out.parent / f".{out.name}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        for name in FOLDER_ENTRIES:
            copy = shutil.copytree if (source / name).is_dir() else shutil.copy2
            copy(source / name, staging / name)
        shutil.rmtree(out, ignore_errors=True)
        os.replace(staging, out)
    unet_files = sorted((source / "unet").glob("*.safetensors"))
    return {"folder": str(source), "unet_sha256": {path.name: file_sha256(path) for path in unet_files},
            "steps_before": int(earlier.get("total_steps", earlier.get("steps_done", 0))),
            "loss_curve_before": earlier.get("loss_curve"), "vae": card.get("vae")}


# ---------------------------------------------------------------------------------------------- InstructX2X


def instructx2x_config(resolved: dict, data_dir: Path, base_dir: Path, output_dir: Path, max_train_steps: int):
    """The :class:`cfbench.training.instructx2x.TrainConfig` of a resolved recipe (``max_train_steps`` given)."""
    from cfbench.training.instructx2x import TrainConfig

    x2x = resolved["instructx2x"]
    return TrainConfig(
        data_dir=str(data_dir), base_model=str(base_dir), output_dir=str(output_dir), split="train",
        resolution=resolved["dataset"]["resolution"], max_train_steps=max_train_steps,
        target_batch_size=x2x["target_batch_size"], per_device_batch_size=x2x["per_device_batch_size"],
        learning_rate=x2x["learning_rate"], lr_warmup_steps=x2x["lr_warmup_steps"],
        max_grad_norm=x2x["max_grad_norm"], mixed_precision=x2x["mixed_precision"], use_ema=x2x["use_ema"],
        ema_decay=x2x["ema_decay"], text_dropout=x2x["text_dropout"], image_dropout=x2x["image_dropout"],
        both_dropout=x2x["both_dropout"], rotation_degrees=x2x["rotation_degrees"],
        hflip_probability=x2x["hflip_probability"], checkpoint_every=x2x["checkpoint_every"],
        log_every=x2x["log_every"], seed=x2x["seed"], num_workers=x2x["num_workers"],
    )


def train_instructx2x_capped(resolved: dict, data_dir: Path, base_dir: Path, output_dir: Path,
                             progress: bool = True) -> dict:
    """Run the real InstructX2X trainer up to the recipe's steps, within its ``max_minutes`` (0: no cap).

    Returns {"steps_done", "steps", "stopped_by_max_minutes", "chunks": [the trainer's summaries], "seconds"}."""
    from cfbench.training.checkpoints import checkpoint_folders
    from cfbench.training.instructx2x import train_instructx2x

    total = int(resolved["instructx2x"]["steps"])
    cap = 60.0 * float(resolved["instructx2x"].get("max_minutes", 0) or 0)
    started = time.perf_counter()
    folders = checkpoint_folders(output_dir)
    done = int(folders[-1].name.split("-")[1]) if folders else 0
    probe = int(resolved["instructx2x"].get("probe_steps", PROBE_STEPS))
    target = min(total, done + probe) if cap else total
    chunks = []
    while done < total and target > done:
        chunk_started = time.perf_counter()
        summary = train_instructx2x(instructx2x_config(resolved, data_dir, base_dir, output_dir, target), progress)
        chunk_seconds = time.perf_counter() - chunk_started
        chunks.append({**summary, "wall_seconds": round(chunk_seconds, 3)})
        done = target
        if not cap or done >= total:
            target = total
            continue
        logged = [r for r in read_jsonl(output_dir / "train_log.jsonl") if r.get("steps_per_second")]
        # the training loop's own speed (the log's, before the export), else the summary's (export included)
        rate = (logged[-1]["steps_per_second"] if logged else summary.get("steps_per_second")) or 0.0
        overhead = max(0.0, chunk_seconds - summary["steps_this_session"] / rate) if rate else chunk_seconds
        left = cap - (time.perf_counter() - started) - overhead
        target = min(total, done + int(0.95 * left * rate)) if left > 0 else done
    if not chunks and not (output_dir / "model_index.json").is_file():
        raise RuntimeError(f"InstructX2X stage made no progress in {output_dir}")
    return {"steps_done": done, "steps": total, "stopped_by_max_minutes": done < total, "chunks": chunks,
            "seconds": round(time.perf_counter() - started, 3)}


# ---------------------------------------------------------------------------------------------- shipping


def pack_shipped_folder(trained: str | Path, shipped: str | Path, dtype: str = "float16",
                        tokenizer_source: str | Path | None = None) -> dict:
    """Copy a trained pipeline folder to ``shipped`` with the weights of unet/vae/text_encoder re-saved as
    ``dtype`` safetensors (non-float tensors kept). CLIP's ``vocab.json`` / ``merges.txt`` missing from the
    trained tokenizer folder are copied from ``tokenizer_source`` (the base folder's tokenizer). Returns
    {relative path: bytes} of the files written."""
    from safetensors.torch import load_file, save_file

    trained, shipped = Path(trained), Path(shipped)
    staging = shipped.parent / f".{shipped.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    cast = getattr(torch, dtype)
    for name in FOLDER_ENTRIES:
        source = trained / name
        if source.is_dir():
            shutil.copytree(source, staging / name, ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))
        else:
            staging.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, staging / name)
    for name in ("vocab.json", "merges.txt"):
        if tokenizer_source and not (staging / "tokenizer" / name).is_file():
            shutil.copy2(Path(tokenizer_source) / name, staging / "tokenizer" / name)
    for component in WEIGHT_COMPONENTS:
        for path in sorted((trained / component).glob("*.safetensors")):
            tensors = load_file(path)
            save_file({key: value.to(cast) if value.is_floating_point() else value for key, value in tensors.items()},
                      staging / component / path.name, metadata={"format": "pt"})
    shutil.rmtree(shipped, ignore_errors=True)
    os.replace(staging, shipped)
    return {str(path.relative_to(shipped)): path.stat().st_size for path in sorted(shipped.rglob("*")) if path.is_file()}


def check_loadable(folder: str | Path) -> dict:
    """Load a pipeline folder through the training loader (:func:`cfbench.training.base_weights.load_base_components`)
    and the inference loader (:func:`cfbench.diffusion.load_diffusion_components`); returns what they found."""
    from cfbench.diffusion import load_diffusion_components
    from cfbench.training.base_weights import INSTRUCT_PIX2PIX_IN_CHANNELS, load_base_components

    base = load_base_components(folder)
    components = load_diffusion_components(folder, PIPELINE_CLASS, expected_unet_in_channels=INSTRUCT_PIX2PIX_IN_CHANNELS)
    return {"base_kind": base.kind, "unet_dtype": str(components.unet.dtype),
            "image_size_multiple": components.image_size_multiple, "vae_scale_factor": components.vae_scale_factor,
            "parameters": {name: sum(p.numel() for p in getattr(components, name).parameters())
                           for name in WEIGHT_COMPONENTS}}


def loss_curve_summary(log_path: str | Path, points: int = 10) -> dict:
    """First, last, minimum and ``points`` evenly spaced (step, loss) records of a ``train_log.jsonl``."""
    records = [r for r in read_jsonl(log_path) if r.get("loss") is not None]
    if not records:
        return {"records": 0}
    picks = sorted({round(i * (len(records) - 1) / max(1, points - 1)) for i in range(points)})
    best = min(records, key=lambda r: r["loss"])
    return {"records": len(records), "first": {"step": records[0]["step"], "loss": records[0]["loss"]},
            "last": {"step": records[-1]["step"], "loss": records[-1]["loss"]},
            "min": {"step": best["step"], "loss": best["loss"]},
            "curve": [[records[i]["step"], round(records[i]["loss"], 6)] for i in picks]}


def hardware() -> dict:
    """The machine: accelerator name, CPU count, torch/transformers/diffusers versions, Python, platform."""
    import diffusers
    import transformers

    return {"cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "transformers": transformers.__version__, "diffusers": diffusers.__version__,
            "python": platform.python_version(), "platform": platform.platform()}


# ---------------------------------------------------------------------------------------------- the stages


def _dataset_stage(out: Path, resolved: dict, progress: bool) -> dict:
    from cfbench.datasets.layout import CSV_NAME
    from cfbench.phantom.dataset import build_phantom_dataset

    folder = out / "data"
    settings = resolved["dataset"]
    if not (folder / CSV_NAME).is_file():
        building = out / ".data.partial"
        shutil.rmtree(building, ignore_errors=True)
        build_phantom_dataset(building, settings["n"], seed=settings["seed"], resolution=settings["resolution"],
                              progress=progress, workers=settings.get("workers", 1))
        os.replace(building, folder)
    return json.loads((folder / "dataset.json").read_text())


def train_vae_stage(out: Path, resolved: dict, progress: bool = True, force: bool = False) -> dict:
    """The VAE stage: train (or resume) into ``out/vae_training`` unless its summary is complete, or exists
    and the base folder was already built from it (then the VAE is final). Returns the VAE summary."""
    from cfbench.training.phantom_vae import SUMMARY_NAME, train_phantom_vae

    folder = out / "vae_training"
    summary_path = folder / SUMMARY_NAME
    if summary_path.is_file() and not force:
        summary = json.loads(summary_path.read_text())
        if summary.get("completed") or (out / "base" / "model_index.json").is_file():
            return summary
    return train_phantom_vae(vae_config(resolved, folder, progress))


def _timed(timings: dict, name: str, function, *args, **kwargs):
    started = time.perf_counter()
    result = function(*args, **kwargs)
    timings[name] = round(time.perf_counter() - started, 3)
    return result


def train_phantom_generator(out: str | Path, recipe: str | Path | None = None, device: str = "cpu",
                            steps_scale: float = 1.0, overrides: dict[str, Any] | None = None,
                            progress: bool = True) -> dict:
    """Run all stages (module docstring) into ``out``; returns the model card record (``model_card.json``)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    resolved = resolve_recipe(load_recipe(recipe), device, steps_scale, overrides)
    atomic_write_json(out / "recipe_resolved.json", resolved)
    timings: dict[str, float] = {}
    dataset = _timed(timings, "dataset", _dataset_stage, out, resolved, progress)
    base = out / "base"
    init_from = resolved["instructx2x"].get("init_from")
    continued_from = None
    if init_from:  # warm start: the VAE, text side and UNet of a trained folder
        continued_from = _timed(timings, "base", build_base_from_folder, base, init_from)
        vae_summary = {**(continued_from.pop("vae") or {}), "from_folder": str(init_from)}
    else:
        vae_summary = _timed(timings, "vae", train_vae_stage, out, resolved, progress)
        if not (base / "model_index.json").is_file():
            _timed(timings, "base", build_base_folder, base, out / "vae_training" / "vae", resolved)
    x2x = _timed(timings, "instructx2x", train_instructx2x_capped, resolved, out / "data", base,
                 out / "instructx2x", progress)
    shipped = out / "shipped"
    files = _timed(timings, "pack", pack_shipped_folder, out / "instructx2x", shipped,
                   resolved["shipping"]["dtype"], base / "tokenizer")
    loaded = check_loadable(shipped)
    weights_bytes = sum(size for name, size in files.items() if name.endswith(".safetensors"))
    x2x_summary = json.loads((out / "instructx2x" / "train_summary.json").read_text())
    record = {
        "model": "cfbench phantom InstructX2X", "pipeline_class": PIPELINE_CLASS, "recipe": resolved,
        "data": dataset, "vae": vae_summary,
        "instructx2x": {**x2x, "last_summary": x2x_summary,
                        "loss_curve": loss_curve_summary(out / "instructx2x" / "train_log.jsonl"),
                        "continued_from": continued_from,
                        "total_steps": x2x["steps_done"] + (continued_from or {}).get("steps_before", 0)},
        "vae_loss_curve": loss_curve_summary(out / "vae_training" / "train_log.jsonl"),
        "shipped": {"folder": "shipped", "files": files, "weights_bytes": weights_bytes,
                    "weights_megabytes": round(weights_bytes / 1e6, 3),
                    "within_size_limit": weights_bytes <= resolved["shipping"]["max_megabytes"] * 1e6,
                    "weights_dtype": resolved["shipping"]["dtype"], "loaded": loaded},
        "timing_seconds_this_session": timings, "hardware": hardware(),
    }

    record = json_safe(record)
    atomic_write_json(out / CARD_JSON, record)
    card = model_card_markdown(record)
    atomic_write_text(out / CARD_NAME, card)
    atomic_write_json(shipped / CARD_JSON, record)
    atomic_write_text(shipped / CARD_NAME, card)
    return record


def model_card_markdown(record: dict) -> str:
    """MODEL_CARD.md text from a model card record."""
    recipe, data, vae, x2x = record["recipe"], record["data"], record["vae"], record["instructx2x"]
    acceptance = vae.get("acceptance") or {}
    delta = acceptance.get("delta") or {}
    original, decoded = acceptance.get("original") or {}, acceptance.get("decoded") or {}

    def number(value) -> str:
        return "n/a" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)

    rows = [f"| {name} | {number(original['auroc'][name])} | {number(decoded['auroc'][name])} | {number(value)} |"
            for name, value in (delta.get("auroc") or {}).items()]
    rows += [f"| {key} | {number(original[key])} | {number(decoded[key])} | {number(delta[key])} |"
             for key in ("group_auroc", "sex_auroc", "age_pearson") if key in delta]
    curve, shipped = x2x["loss_curve"], record["shipped"]
    lines = [
        f"# {record['model']}", "",
        f"A small `{record['pipeline_class']}` editor for cfbench's procedural phantoms, trained "
        f"{'from scratch' if not x2x.get('continued_from') else 'in parts (from scratch, then warm-started)'} by "
        f"`cfbench phantom train-generator` (recipe profile `{recipe['profile']}`, steps scale {recipe['steps_scale']}).",
        "Use: shipped in cfbench as `cfbench/data/phantom_instructx2x`, the default weights of instructx2x, its "
        "ablations and instructpix2pix on phantom splits (`cfbench demo`, `cfbench run --model instructx2x --split "
        "demo`); elsewhere `--model-path DIR/shipped`. The networks run at 128 px (the folder's native side).", "",
        "## Data",
        f"- InstructX2X: phantom edit dataset of {data.get('n')} pairs (seed {data.get('seed')}, {data.get('resolution')} px), "
        f"splits {data.get('split_counts')}; trained on `train`.",
        f"- VAE: {recipe['vae']['n_train']} single phantoms per render side {recipe['vae']['render_resolutions']} px "
        f"(training stream), scored on {recipe['vae']['n_heldout']} held-out phantoms (held-out stream).", "",
        "## Networks",
        f"- Parameters: {shipped['loaded']['parameters']}.",
        f"- Weights: {shipped['weights_dtype']} safetensors, {shipped['weights_megabytes']} MB in all "
        f"(limit {recipe['shipping']['max_megabytes']} MB: {'met' if shipped['within_size_limit'] else 'EXCEEDED'}).",
        f"- Text encoder: frozen, randomly initialised CLIP {recipe['text']}; the tokenizer holds every instruction word "
        "as one token.", "",
        "## Training",
        f"- VAE: {vae.get('steps_done')} / {vae.get('steps')} steps, batch {recipe['vae']['batch_size']}, "
        f"lr {recipe['vae']['learning_rate']}, completed {vae.get('completed')}, "
        f"{vae.get('train_seconds_this_session')} s in the last session on {vae.get('hardware')}; "
        f"latent scaling factor {number(vae.get('scaling_factor'))}.",
        f"- InstructX2X (`cfbench.training.instructx2x`): {x2x['steps_done']} / {x2x['steps']} steps, batch "
        f"{recipe['instructx2x']['target_batch_size']}, lr {recipe['instructx2x']['learning_rate']}, EMA decay "
        f"{recipe['instructx2x']['ema_decay']}, mixed precision {recipe['instructx2x']['mixed_precision']}, "
        f"stopped by the time cap: {x2x['stopped_by_max_minutes']}, {x2x['seconds']} s this session.",
        *([] if not x2x.get("continued_from") else [
            f"- Warm start: continued from `{x2x['continued_from']['folder']}` ({x2x['continued_from']['steps_before']} "
            f"earlier steps; UNet SHA-256 {x2x['continued_from']['unet_sha256']}) with a fresh optimizer: "
            f"{x2x['total_steps']} steps in all. Earlier loss curve (step, loss): "
            f"{(x2x['continued_from'].get('loss_curve_before') or {}).get('curve')}"
            + (f"; its records: {x2x['continued_from']['records']}." if x2x["continued_from"].get("records") else ".")]),
        f"- InstructX2X loss: first {curve.get('first')}, last {curve.get('last')}, min {curve.get('min')}.",
        f"- Loss curve (step, loss): {curve.get('curve')}.",
        f"- Stage times this session (s): {record['timing_seconds_this_session']}.",
        f"- Hardware: {record['hardware']}.", "",
        f"## VAE acceptance ({acceptance.get('n')} held-out phantoms, phantom evaluator on originals vs reconstructions)",
        f"Passed (every |delta| <= {acceptance.get('tolerance')}): **{acceptance.get('passed')}**; max |delta| "
        f"{number(acceptance.get('max_abs_delta'))}; pixel MAE {number(acceptance.get('pixel_mae'))}; "
        f"PSNR {number(acceptance.get('psnr_db'))} dB.", "",
        "| score | original | decoded | delta |", "|---|---|---|---|", *rows, "",
    ]
    return "\n".join(lines)


__all__ = ["load_recipe", "resolve_recipe", "build_base_folder", "train_instructx2x_capped", "pack_shipped_folder",
           "check_loadable", "train_phantom_generator", "train_vae_stage"]


HELDOUT_METRICS = ("pathology_mean_auroc", "race_auroc", "age_pearson", "cmig", "kl_divergence", "fid",
                   "mae_to_true_counterfactual", "change_inside_lesion", "change_outside_lesion", "guidance_auroc")


def record_heldout_evaluation(folder: str | Path, run_folders: list[str | Path], split_note: str) -> dict:
    """Add the held-out evaluation of evaluated run folders (e.g. ``cfbench demo``'s, on phantoms the generator
    never saw) to a shipped folder's model card: ``heldout_demo`` in ``model_card.json`` (model -> metric ->
    value, metrics.json scale) and a table in ``MODEL_CARD.md``."""
    from cfbench.evaluation.results import read_metrics
    from cfbench.runs.manifest import RunManifest

    folder = Path(folder)
    record = json.loads((folder / CARD_JSON).read_text())
    heldout, intervals = {}, {}
    for run in run_folders:
        model = RunManifest.read(run).config.model
        metrics = read_metrics(run)["metrics"]
        heldout[model] = {name: metrics[name]["value"] for name in HELDOUT_METRICS if name in metrics}
        intervals[model] = {name: [metrics[name]["ci_low"], metrics[name]["ci_high"]]
                            for name in HELDOUT_METRICS if name in metrics}
    record["heldout_demo"] = heldout
    record["heldout_demo_intervals"] = intervals
    record["heldout_demo_note"] = split_note
    atomic_write_json(folder / CARD_JSON, record)
    text = (folder / CARD_NAME).read_text().split("\n## Held-out evaluation")[0].rstrip() + "\n"
    header = "| model | " + " | ".join(HELDOUT_METRICS) + " |"
    def cell(value: float | None) -> str:  # pixel changes and MAEs are ~0.01: four decimals tell them apart
        if value is None:
            return "-"
        return f"{value:.4f}" if abs(value) < 0.1 else f"{value:.3f}" if abs(value) < 10 else f"{value:.2f}"

    rows = [f"| {model} | " + " | ".join(cell(values.get(name)) for name in HELDOUT_METRICS) + " |"
            for model, values in heldout.items()]
    text += ("\n## Held-out evaluation\n\n" + split_note + "\n\n" + header + "\n|---|" + "---:|" * len(HELDOUT_METRICS)
             + "\n" + "\n".join(rows) + "\n")
    atomic_write_text(folder / CARD_NAME, text)
    return record
