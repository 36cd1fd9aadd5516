"""The preflight: everything a run needs, checked in seconds before any long work.

``cfbench check`` prints :func:`preflight`'s items, one line each; ``run``, ``generate``, ``eval`` and ``demo``
run the same checks first and stop on a blocker, so a missing evaluator weights file is found before hours
of generation, not after. Items (:class:`CheckItem`, status ``ok`` / ``warn`` / ``blocker``):

- ``dataset``: the folder, its kind and the split: rows in the split, rows skipped with the first reasons;
- ``model``: the registry entry (a broken plugin is a blocker here, and only here);
- ``model weights``: present where the model looks for them (the model's weights help otherwise);
- ``evaluator KEY``: every weights file the evaluation of this dataset loads: present, and its trust state
  (pinned digest, recorded on an earlier load, or to be trusted on first use; a file changed since it was
  trusted is a blocker, as it would be at load time);
- ``extra NAME``: optional extras the chosen options need (BiomedCLIP for CLIP-I);
- ``disk``: free space under the run folder against an upper bound of what the run writes;
- ``device``: the torch device exists.

Light to import (no torch, no pandas at import time): the dataset is read, and torch asked about a GPU,
only when those items are checked.
"""

from __future__ import annotations

import importlib.util
import shutil
from dataclasses import dataclass
from pathlib import Path

from cfbench.api.registry import PluginError, UnknownModelError, get_model_class, resolve_model_path
from cfbench.core.config import PACKAGE_DATA_DIR
from cfbench.core.errors import WeightsNotFoundError
from cfbench.core.hashing import file_sha256
from cfbench.datasets.layout import NO_DATA_FOLDER, DatasetError, dataset_kind
from cfbench.evaluation import weights as weights_manager

STATUSES = ("ok", "warn", "blocker")


@dataclass(frozen=True)
class CheckItem:
    """One line of the preflight: what was checked, the verdict, and the detail a user acts on."""

    name: str
    status: str  # "ok", "warn" or "blocker"
    detail: str

    def line(self) -> str:
        return f"{self.status.upper():<8} {self.name:<30} {self.detail}"


class PreflightError(RuntimeError):
    """A blocker found by the preflight; the message lists every blocker, one line each."""

    def __init__(self, items: list[CheckItem]):
        self.items = items
        super().__init__("preflight found blocker(s) before any work was done (`cfbench check` lists every "
                         "item):\n" + "\n".join(item.line() for item in items))


@dataclass
class PreflightRequest:
    """What a command is about to do. ``evaluator``: "auto", "phantom-cnn", "xrv" or "none"; ``evaluate``:
    whether the command evaluates (``generate`` does not); ``generate``: whether it generates (``eval`` does
    not); ``data_built_later``: the command builds its dataset (``demo``); ``resolution``: pixels per image side; ``limit``: samples of the split (None: all)."""

    model: str | None
    split: str
    data_dir: Path | None
    model_path: str | None = None
    out: Path | None = None
    resolution: int = 512
    limit: int | None = None
    evaluator: str = "auto"
    device: str = "cpu"
    generate: bool = True
    evaluate: bool = True
    clip_model: str | None = None
    strict: bool = False
    data_built_later: bool = False  # the command builds its data itself (the demo): no dataset to check yet


# An upper bound of what a run writes per sample: a 16-bit PNG of the generated image (about 2 bytes a pixel
# before zlib), a float guidance map of the same size, and the JSON record.
BYTES_PER_PIXEL_BOUND = 6
RECORD_BYTES = 4096


def _dataset_items(request: PreflightRequest) -> tuple[list[CheckItem], object | None]:
    if request.data_dir is None:
        return [CheckItem("dataset", "blocker", NO_DATA_FOLDER)], None
    from cfbench.datasets.edit_dataset import EditDataset

    try:
        dataset = EditDataset(request.data_dir, request.split, request.resolution, strict=request.strict)
    except DatasetError as error:
        return [CheckItem("dataset", "blocker", str(error))], None
    kind = dataset_kind(request.data_dir) or "unknown kind"
    n = len(dataset) if request.limit is None else min(request.limit, len(dataset))
    items = [CheckItem("dataset", "ok", f"{request.data_dir} ({kind})"),
             CheckItem(f"split {request.split}", "ok", f"{len(dataset)} rows"
                       + (f", the first {n} used (--limit)" if n < len(dataset) else ""))]
    if dataset.skipped_rows:
        first = "; ".join(str(row) for row in dataset.skipped_rows[:3])
        items.append(CheckItem("skipped rows", "warn", f"{len(dataset.skipped_rows)} row(s) of the CSV left out "
                                                       f"(first: {first}); --strict refuses them"))
    return items, dataset


def _model_items(request: PreflightRequest, kind: str | None) -> list[CheckItem]:
    try:
        model_class = get_model_class(request.model)
    except (UnknownModelError, PluginError) as error:
        return [CheckItem("model", "blocker", str(error))]
    items = [CheckItem("model", "ok", f"{request.model} ({model_class.native_resolution} px native)")]
    try:
        path = resolve_model_path(model_class, request.model_path, kind)
    except WeightsNotFoundError as error:
        return items + [CheckItem("model weights", "blocker", " ".join(str(error).split()))]
    items.append(CheckItem("model weights", "ok", "none needed" if path is None else f"present at {path}"))
    return items


def evaluator_weights_keys(evaluator: str, kind: str | None, has_race: bool) -> list[str]:
    """The catalogue keys of the weights an evaluation of this dataset loads (empty for the shipped phantom
    CNN, which is part of the package, and for ``none``)."""
    if evaluator == "none" or evaluator == "phantom-cnn" or (evaluator == "auto" and kind == "phantom"):
        return []
    return [weights_manager.SUITE_MEMBER_KEYS[member] for member in weights_manager.suite_members(has_race)]


def trust_state(key: str) -> CheckItem:
    """Whether the weights file ``key`` is present and would pass the load-time trust check
    (:func:`cfbench.evaluation.weights_trust.verify`), without recording anything."""
    from cfbench.evaluation.weights_trust import trusted_record

    entry = weights_manager.get(key)
    path = weights_manager.path_for(key)
    name = f"evaluator {key}"
    if not path.is_file():
        return CheckItem(name, "blocker", f"MISSING {path}: `cfbench weights fetch {key}` or download {entry.url}")
    record = trusted_record(path)
    stat = path.stat()
    unchanged = record is not None and record.get("size") == stat.st_size and record.get("mtime_ns") == stat.st_mtime_ns
    expected = entry.sha256 or (record or {}).get("sha256")
    if expected is not None and not unchanged:
        digest = file_sha256(path)
        if digest != expected:
            return CheckItem(name, "blocker", f"{path} has SHA-256 {digest[:16]}..., not the trusted "
                                              f"{expected[:16]}...: `cfbench weights trust {key}` if you trust it")
    if entry.sha256:
        return CheckItem(name, "ok", f"{path} (digest pinned in the catalogue)")
    if record is not None:
        return CheckItem(name, "ok", f"{path} (trusted, SHA-256 {record['sha256'][:16]}...)")
    return CheckItem(name, "warn", f"{path} (no digest recorded: trusted on first use; `cfbench weights trust "
                                   f"{key}` records it now)")


def _phantom_evaluator_item() -> CheckItem:
    path = PACKAGE_DATA_DIR / "phantom_evaluator.safetensors"
    if not path.is_file():
        return CheckItem("evaluator phantom-cnn", "blocker", f"the shipped file {path} is missing: reinstall cfbench")
    return CheckItem("evaluator phantom-cnn", "ok", f"shipped with cfbench ({path.name})")


def _disk_item(request: PreflightRequest, n_samples: int) -> CheckItem:
    out = Path(request.out) if request.out else None
    probe = out
    while probe is not None and not probe.exists():
        probe = probe.parent if probe.parent != probe else None
    if probe is None:
        return CheckItem("disk", "warn", "run folder not known: free space not checked")
    free = shutil.disk_usage(probe).free
    needed = n_samples * (request.resolution ** 2 * BYTES_PER_PIXEL_BOUND + RECORD_BYTES)
    detail = f"{free / 1e9:.1f} GB free under {probe}; the run writes at most {needed / 1e9:.2f} GB"
    if free < needed:
        return CheckItem("disk", "blocker", detail)
    return CheckItem("disk", "warn" if free < 2 * needed else "ok", detail)


def _device_item(device: str) -> CheckItem:
    if device == "cpu":
        return CheckItem("device", "ok", "cpu")
    import torch

    try:
        torch.empty(1, device=device)
    except Exception as error:  # unknown device string, no CUDA build, index out of range
        return CheckItem("device", "blocker", f"{device} is not usable here: {type(error).__name__}: "
                                              f"{str(error).splitlines()[0] if str(error) else ''}")
    return CheckItem("device", "ok", f"{device} ({torch.cuda.get_device_name(device) if device.startswith('cuda') else device})")


def _extras_items(request: PreflightRequest) -> list[CheckItem]:
    if not request.clip_model:
        return []
    if importlib.util.find_spec("open_clip") is None:
        return [CheckItem("extra clip", "blocker", "--clip-model needs open_clip: pip install 'cfbench[clip]'")]
    folder = Path(request.clip_model)
    if not (folder / "open_clip_config.json").is_file():
        return [CheckItem("extra clip", "blocker", f"{folder / 'open_clip_config.json'} not found (BiomedCLIP folder)")]
    return [CheckItem("extra clip", "ok", f"open_clip installed, BiomedCLIP at {folder}")]


def preflight(request: PreflightRequest) -> list[CheckItem]:
    """Every item a run of ``request`` needs, in the order the run meets them (nothing is written)."""
    if request.data_dir is None and request.data_built_later:
        items, dataset = [CheckItem("dataset", "ok", "built by the command itself (cached after the first run)")], None
    else:
        items, dataset = _dataset_items(request)
    kind = dataset_kind(request.data_dir) if request.data_dir is not None else None
    if request.model is not None and request.generate:
        items += _model_items(request, kind)
    if request.evaluate and (dataset is not None or request.data_built_later):
        if request.evaluator == "phantom-cnn" or (request.evaluator == "auto" and kind == "phantom"):
            items.append(_phantom_evaluator_item())
        elif request.evaluator == "none":
            items.append(CheckItem("evaluator", "ok", "none: pixel measures only"))
        if dataset is not None:
            has_race = any(sample.race for sample in dataset)
            items += [trust_state(key) for key in evaluator_weights_keys(request.evaluator, kind, has_race)]
        items += _extras_items(request)
    if request.generate and (dataset is not None or request.limit is not None):
        n = request.limit if dataset is None else len(dataset) if request.limit is None else min(request.limit, len(dataset))
        items.append(_disk_item(request, n))
    items.append(_device_item(request.device))
    return items


def blockers(items: list[CheckItem]) -> list[CheckItem]:
    return [item for item in items if item.status == "blocker"]


def require_preflight(request: PreflightRequest) -> list[CheckItem]:
    """:func:`preflight`, raising :class:`PreflightError` listing the blockers when there are any."""
    items = preflight(request)
    if blockers(items):
        raise PreflightError(blockers(items))
    return items
