"""What a run folder is made of: the file names (:class:`RunFiles`, defined here only) and the typed
manifest (:class:`RunManifest`: the config that identifies the run and the sessions that worked on it).

Layout of a run folder::

    manifest.json      RunManifest: config (what identifies the run), latest runtime, every session
    images/            {sample_id}.png   counterfactual, 16-bit grayscale
    guidance/          {sample_id}.png   guidance map, 16-bit grayscale (models that give one)
    results.jsonl      one line per finished sample: sample_id, seed, explanation, info, seconds
    failures.jsonl     one line per failed attempt: sample_id, error
    results.shard-K-of-N.jsonl, failures.shard-K-of-N.jsonl, runtime.shard-K-of-N.json   (sharded runs)
    metrics.json       written by `cfbench eval`: every metric with its interval, protocol, evaluator
    predictions.csv    written by `cfbench eval`: one row per sample
    evaluation.npz     written by `cfbench eval`: the per-sample table as arrays
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from cfbench.core.storage import atomic_write_json

MANIFEST = "manifest.json"
IMAGES_DIR = "images"
GUIDANCE_DIR = "guidance"
RESULTS_STEM = "results"
FAILURES_STEM = "failures"
RUNTIME_STEM = "runtime"
METRICS = "metrics.json"
PREDICTIONS = "predictions.csv"
EVALUATION_ARRAYS = "evaluation.npz"


class ManifestError(ValueError):
    """A manifest.json that cannot be read as a run's manifest (truncated, edited, foreign); names the file."""


@dataclass(frozen=True)
class RunFiles:
    """Every path inside one run folder. ``shard_suffix`` is "" for an unsharded process, else
    ``.shard-K-of-N`` (see :class:`cfbench.runs.store.Shard`)."""

    folder: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "folder", Path(self.folder))

    @property
    def manifest(self) -> Path:
        return self.folder / MANIFEST

    @property
    def metrics(self) -> Path:
        return self.folder / METRICS

    @property
    def predictions(self) -> Path:
        return self.folder / PREDICTIONS

    @property
    def evaluation_arrays(self) -> Path:
        return self.folder / EVALUATION_ARRAYS

    def image(self, sample_id: str) -> Path:
        return self.folder / IMAGES_DIR / f"{sample_id}.png"

    def guidance_map(self, sample_id: str) -> Path:
        return self.folder / GUIDANCE_DIR / f"{sample_id}.png"

    def results_ledger(self, shard_suffix: str = "") -> Path:
        return self.folder / f"{RESULTS_STEM}{shard_suffix}.jsonl"

    def failures_ledger(self, shard_suffix: str = "") -> Path:
        return self.folder / f"{FAILURES_STEM}{shard_suffix}.jsonl"

    def runtime_record(self, shard_suffix: str) -> Path:
        return self.folder / f"{RUNTIME_STEM}{shard_suffix}.json"

    def all_ledgers(self, stem: str) -> list[Path]:
        """``{stem}.jsonl`` and every ``{stem}.shard-K-of-N.jsonl`` present (stem: results or failures)."""
        return sorted(path for path in self.folder.glob(f"{stem}*.jsonl")
                      if path.name == f"{stem}.jsonl" or re.fullmatch(rf"{stem}\.shard-\d+-of-\d+\.jsonl", path.name))


@dataclass(frozen=True)
class RunConfig:
    """What identifies a run: an existing folder is resumed only by a process with an equal config.

    model: registry name or module:Class. model_path: the weights path given or found (None: no weights).
    weights: the model's own identity of its weights (e.g. SHA-256 per file). split: the split run.
    dataset_csv_sha256: SHA-256 of the dataset's instructions.csv. resolution: benchmark image side in
    pixels. seed: the run seed (each sample's seed derives from it). options: model options as given.
    region_masks: None, or "pseudo" when each request carried its instruction's pseudo mask.
    """

    model: str
    model_path: str | None
    weights: dict[str, Any]
    split: str
    dataset_csv_sha256: str
    resolution: int
    seed: int
    options: dict[str, str]
    region_masks: str | None = None  # "pseudo": requests carried pseudo masks (RunSettings.region_masks)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if data["region_masks"] is None:  # the default: configs (and run ids) as before the field existed
            del data["region_masks"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunConfig":
        return cls(**{f.name: data.get(f.name) for f in fields(cls)})

    def differences(self, other: "RunConfig") -> list[str]:
        """``key: old -> new`` for every field that differs."""
        mine, theirs = self.to_dict(), other.to_dict()
        return [f"{key}: {mine[key]!r} -> {theirs[key]!r}" for key in mine if mine[key] != theirs[key]]


@dataclass(frozen=True)
class RunSession:
    """How one session of ``cfbench generate`` ran: free to change between sessions of the same run.

    argv: the command line. data_dir: the dataset folder (absolute). batch_size: requests per model call;
    batch_policy: how it was chosen ("given", or "auto: ..." with the reason, see cfbench.runs.batching; None in
    manifests written before it was recorded). device, limit: as given.
    shard: [index, count] or None. versions: Python and package versions. started: local time, ISO 8601.
    model_class: the adapter's import path. png_compression: zlib level of the PNGs this session wrote
    (0-9). It is a session fact, not part of the config: it changes the files' bytes, never their pixels,
    so no metric depends on it, a run may be resumed with another level, and the config hash (the run's
    identity in leaderboards) stays the same. None in manifests written before it was recorded (level 1).
    """

    argv: list[str]
    data_dir: str
    batch_size: int
    device: str
    limit: int | None
    shard: list[int] | None
    versions: dict[str, str | None]
    started: str
    model_class: str
    png_compression: int | None = None
    batch_policy: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunSession":
        return cls(**{f.name: data.get(f.name) for f in fields(cls)})


@dataclass
class RunManifest:
    """``manifest.json``: the run's config, the latest session (``runtime``), all unsharded sessions, and
    the run's display ``label`` (``--label``; None: leaderboards name the run by its model and options). The
    label is not part of the config: renaming a run changes neither its identity nor whether it resumes."""

    config: RunConfig
    runtime: RunSession | None = None
    sessions: list[RunSession] = field(default_factory=list)
    label: str | None = None

    @property
    def data_dir(self) -> Path | None:
        """The dataset folder of the latest session (None when no session was recorded)."""
        return Path(self.runtime.data_dir) if self.runtime and self.runtime.data_dir else None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"config": self.config.to_dict(),
                                "runtime": self.runtime.to_dict() if self.runtime else {}}
        if self.sessions:
            data["sessions"] = [session.to_dict() for session in self.sessions]
        if self.label:
            data["label"] = self.label
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunManifest":
        return cls(config=RunConfig.from_dict(data.get("config", {})),
                   runtime=RunSession.from_dict(data["runtime"]) if data.get("runtime") else None,
                   sessions=[RunSession.from_dict(session) for session in data.get("sessions", [])],
                   label=data.get("label") or None)

    @classmethod
    def read(cls, folder: str | Path) -> "RunManifest":
        """The manifest of a run folder; FileNotFoundError naming the folder when it is not one."""
        path = RunFiles(Path(folder)).manifest
        if not path.is_file():
            raise FileNotFoundError(f"{folder} is not a run folder: {path} not found")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(data, dict) or not isinstance(data.get("config"), dict):
                raise ValueError("no 'config' record")
            return cls.from_dict(data)
        except (ValueError, TypeError, AttributeError, UnicodeDecodeError) as error:
            raise ManifestError(f"{path} is damaged or not a cfbench manifest ({error}); restore it, or delete the "
                                "run folder to start over") from None

    def write(self, folder: str | Path) -> None:
        atomic_write_json(RunFiles(Path(folder)).manifest, self.to_dict())


def set_run_label(folder: str | Path, label: str | None) -> None:
    """Store (or, with None, remove) the display label of a run folder in its manifest."""
    if label is not None and not label.strip():
        raise ValueError("a run label must not be empty")
    manifest = RunManifest.read(folder)
    manifest.label = label.strip() if label else None
    manifest.write(folder)
