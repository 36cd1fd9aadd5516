"""The run folder: everything one model produced on one split, written so that a crash loses nothing.

Layout::

    manifest.json      config (what identifies the run), runtime, package versions, weights identity
    images/            {sample_id}.png   counterfactual, 16-bit grayscale
    guidance/          {sample_id}.png   guidance map, 16-bit grayscale (models that give one)
    results.jsonl      one line per finished sample: sample_id, seed, explanation, info, seconds
    failures.jsonl     one line per failed attempt: sample_id, error
    metrics.json       written by `cfbench eval`

A sample is finished exactly when its line is in ``results.jsonl``; its images are written (atomically)
before that line, so a crash at any moment leaves either a finished sample or one that is redone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cfbench.images import load_image, save_png16
from cfbench.interface import EditResult
from cfbench.storage import JsonlLedger, atomic_write_json

MANIFEST = "manifest.json"
RESULTS = "results.jsonl"
FAILURES = "failures.jsonl"
METRICS = "metrics.json"


class RunConfigMismatch(RuntimeError):
    """The run folder was made with a different config; writing into it would mix two runs."""


@dataclass
class FinishedSample:
    sample_id: str
    seed: int
    explanation: str | None
    info: dict
    has_guidance: bool


class RunStore:
    """Open (or create) a run folder for a given config; refuse a folder made with another config."""

    def __init__(self, folder: str | Path, config: dict[str, Any], runtime: dict[str, Any] | None = None):
        self.folder = Path(folder)
        self.config = config
        manifest_path = self.folder / MANIFEST
        if manifest_path.is_file():
            existing = json.loads(manifest_path.read_text())
            if existing.get("config") != config:
                raise RunConfigMismatch(_describe_mismatch(self.folder, existing.get("config", {}), config))
            self.manifest = existing
        else:
            self.folder.mkdir(parents=True, exist_ok=True)
            self.manifest = {"config": config, "runtime": runtime or {}}
            atomic_write_json(manifest_path, self.manifest)
        self._results = JsonlLedger(self.folder / RESULTS)
        self._failures = JsonlLedger(self.folder / FAILURES)

    def update_runtime(self, runtime: dict[str, Any]) -> None:
        """Record how the latest session ran (device, batch size, versions), keeping earlier sessions."""
        sessions = self.manifest.setdefault("sessions", [])
        sessions.append(runtime)
        self.manifest["runtime"] = runtime
        atomic_write_json(self.folder / MANIFEST, self.manifest)

    def finished(self) -> dict[str, FinishedSample]:
        return {record["sample_id"]: _to_finished(record) for record in self._results.records()}

    def image_path(self, sample_id: str) -> Path:
        return self.folder / "images" / f"{sample_id}.png"

    def guidance_path(self, sample_id: str) -> Path:
        return self.folder / "guidance" / f"{sample_id}.png"

    def save(self, sample_id: str, seed: int, result: EditResult, seconds: float) -> None:
        save_png16(self.image_path(sample_id), result.image)
        if result.guidance_map is not None:
            save_png16(self.guidance_path(sample_id), result.guidance_map)
        self._results.append(
            {
                "sample_id": sample_id,
                "seed": seed,
                "explanation": result.explanation,
                "info": result.info,
                "has_guidance": result.guidance_map is not None,
                "seconds": round(seconds, 6),
            }
        )

    def fail(self, sample_id: str, error: str) -> None:
        self._failures.append({"sample_id": sample_id, "error": error})

    def failures(self) -> list[dict]:
        return self._failures.records()

    def close(self) -> None:
        self._results.close()
        self._failures.close()

    def __enter__(self) -> "RunStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _to_finished(record: dict) -> FinishedSample:
    return FinishedSample(
        sample_id=record["sample_id"],
        seed=record["seed"],
        explanation=record.get("explanation"),
        info=record.get("info", {}),
        has_guidance=record.get("has_guidance", False),
    )


def _describe_mismatch(folder: Path, old: dict, new: dict) -> str:
    keys = sorted(set(old) | set(new))
    differences = [f"{key}: {old.get(key)!r} -> {new.get(key)!r}" for key in keys if old.get(key) != new.get(key)]
    return (
        f"run folder {folder} was made with a different config ({'; '.join(differences)}). "
        "Choose another --out, or delete the folder to start over."
    )


def read_manifest(folder: str | Path) -> dict:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{folder} is not a run folder: {path} not found")
    return json.loads(path.read_text())


def load_generated(folder: str | Path, sample_id: str, resolution: int) -> np.ndarray:
    return load_image(Path(folder) / "images" / f"{sample_id}.png", resolution)
