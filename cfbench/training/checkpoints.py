"""Training state on disk, shared by the trainers: the EMA of the UNet weights and crash-safe checkpoint folders
(``checkpoints/step-NNNNNN/``: ``unet.safetensors``, ``ema_unet.safetensors``, ``optimizer.pt``,
``trainer_state.json`` written last; a checkpoint folder is complete or absent).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from cfbench.core.storage import atomic_write_json, atomic_write_text, read_jsonl

CHECKPOINTS_DIR = "checkpoints"
STATE_NAME = "trainer_state.json"
UNET_WEIGHTS = "unet.safetensors"
EMA_WEIGHTS = "ema_unet.safetensors"
OPTIMIZER_STATE = "optimizer.pt"


class TrainingError(ValueError):
    """A training setting or folder the user can fix; the message names it."""


# ------------------------------------------------------------------------------------------------ EMA


class ExponentialMovingAverage:
    """float32 shadow copies of a module's parameters, updated after every optimizer step with
    decay min(max_decay, (1 + step) / (10 + step)) (the warm-up InstructPix2Pix and LDM use)."""

    def __init__(self, module: torch.nn.Module, max_decay: float):
        self.max_decay = max_decay
        self.shadow = {name: p.detach().float().clone() for name, p in module.named_parameters()}

    def decay_at(self, step: int) -> float:
        return min(self.max_decay, (1.0 + step) / (10.0 + step))

    @torch.no_grad()
    def update(self, module: torch.nn.Module, step: int) -> None:
        decay = self.decay_at(step)
        for name, parameter in module.named_parameters():
            self.shadow[name].mul_(decay).add_(parameter.detach().float(), alpha=1.0 - decay)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {name: tensor.detach().cpu().contiguous() for name, tensor in self.shadow.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = sorted(set(self.shadow) - set(state))
        if missing:
            raise TrainingError(f"EMA state lacks {len(missing)} parameter(s), e.g. {missing[:3]}")
        for name in self.shadow:
            self.shadow[name].copy_(state[name])

    @torch.no_grad()
    def copy_to(self, module: torch.nn.Module) -> None:
        for name, parameter in module.named_parameters():
            parameter.copy_(self.shadow[name].to(parameter.dtype))


# ---------------------------------------------------------------------------------------- checkpoints


def checkpoint_folders(output_dir: str | Path) -> list[Path]:
    """Complete checkpoint folders of a run, oldest first."""
    root = Path(output_dir) / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    folders = [path for path in root.iterdir()
               if path.is_dir() and path.name.startswith("step-") and (path / STATE_NAME).is_file()]
    return sorted(folders, key=lambda path: int(path.name.split("-")[1]))


def read_checkpoint(folder: str | Path) -> dict:
    """The contents of a checkpoint folder: step state, UNet weights, EMA weights (or None), optimizer."""
    from safetensors.torch import load_file

    folder = Path(folder)
    state = json.loads((folder / STATE_NAME).read_text())
    for name in (UNET_WEIGHTS, OPTIMIZER_STATE):
        if not (folder / name).is_file():
            raise TrainingError(f"checkpoint {folder} is incomplete: {name} is missing")
    ema_path = folder / EMA_WEIGHTS
    return {
        "state": state,
        "unet": load_file(folder / UNET_WEIGHTS),
        "ema": load_file(ema_path) if ema_path.is_file() else None,
        "optimizer": torch.load(folder / OPTIMIZER_STATE, map_location="cpu", weights_only=True),
    }


def write_checkpoint(output_dir: Path, step: int, unet: torch.nn.Module, optimizer, ema, state: dict,
                      keep: int) -> Path:
    from safetensors.torch import save_file

    root = output_dir / CHECKPOINTS_DIR
    final = root / f"step-{step:06d}"
    partial = root / f".partial-step-{step:06d}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    weights = {name: tensor.detach().cpu().contiguous() for name, tensor in unet.state_dict().items()}
    save_file(weights, partial / UNET_WEIGHTS)
    if ema is not None:
        save_file(ema.state_dict(), partial / EMA_WEIGHTS)
    torch.save(optimizer.state_dict(), partial / OPTIMIZER_STATE)
    atomic_write_json(partial / STATE_NAME, state)
    if final.exists():
        shutil.rmtree(final)
    os.replace(partial, final)
    for old in checkpoint_folders(output_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final



def restore_latest_checkpoint(output_dir: Path, unet: torch.nn.Module, optimizer: torch.optim.Optimizer,
                               ema: ExponentialMovingAverage | None) -> dict:
    """Load the newest complete checkpoint into unet, optimizer and EMA; return its trainer state
    ({} when there is none, i.e. a fresh start)."""
    checkpoints = checkpoint_folders(output_dir)
    if not checkpoints:
        return {}
    saved = read_checkpoint(checkpoints[-1])
    unet.load_state_dict(saved["unet"])
    optimizer.load_state_dict(saved["optimizer"])
    if ema is not None:
        if saved["ema"] is None:
            raise TrainingError(f"checkpoint {checkpoints[-1]} has no {EMA_WEIGHTS} but use_ema is on")
        ema.load_state_dict(saved["ema"])
    return saved["state"]


def keep_log_until(path: Path, step: int) -> None:
    """Drop log records past ``step`` (steps redone after resuming from an earlier checkpoint)."""
    records = [record for record in read_jsonl(path) if record.get("step", 0) <= step]
    atomic_write_text(path, "".join(json.dumps(record, sort_keys=True) + "\n" for record in records))


def append_log(path: Path, record: dict) -> None:
    """Append one record to a training log (JSON lines)."""
    with path.open("a") as stream:
        stream.write(json.dumps(record, sort_keys=True) + "\n")
