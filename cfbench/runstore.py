"""The run folder: everything one model produced on one split, written so that a crash loses nothing.

Layout::

    manifest.json      config (what identifies the run), runtime, package versions, weights identity
    images/            {sample_id}.png   counterfactual, 16-bit grayscale
    guidance/          {sample_id}.png   guidance map, 16-bit grayscale (models that give one)
    results.jsonl      one line per finished sample: sample_id, seed, explanation, info, seconds
    failures.jsonl     one line per failed attempt: sample_id, error
    metrics.json       written by `cfbench eval`

A sample is finished exactly when its line is in a results ledger; its images are written (atomically)
before that line, so a crash at any moment leaves either a finished sample or one that is redone.

Sharded runs (one process per GPU, :class:`Shard`): every process writes into the same folder, but
each owns its ledgers (``results.shard-K-of-N.jsonl``, ``failures.shard-K-of-N.jsonl``) and its
runtime record (``runtime.shard-K-of-N.json``), so no file is written by two processes (safe on
network file systems too). Readers take the union of all ledgers (:func:`read_results`).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cfbench.images import load_image, save_png16
from cfbench.interface import EditResult
from cfbench.storage import JsonlLedger, atomic_write_json, read_jsonl

MANIFEST = "manifest.json"
RESULTS = "results.jsonl"
FAILURES = "failures.jsonl"
METRICS = "metrics.json"


@dataclass(frozen=True)
class Shard:
    """Part ``index`` (0-based) of ``count`` equal parts of a split; a sample belongs to the shard given by
    a hash of its id, so shards are disjoint, cover the split, and do not depend on order or --limit."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(f"shard {self.index}/{self.count}: need 0 <= index < count")

    @classmethod
    def parse(cls, text: str) -> "Shard":
        """``"K/N"`` (K in 0..N-1)."""
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
        if not match:
            raise ValueError(f"shard {text!r}: expected INDEX/COUNT, e.g. 0/4")
        return cls(int(match[1]), int(match[2]))

    def owns(self, sample_id: str) -> bool:
        digest = hashlib.sha256(sample_id.encode()).digest()
        return int.from_bytes(digest[:8], "little") % self.count == self.index

    @property
    def suffix(self) -> str:
        return f".shard-{self.index}-of-{self.count}"


def _ledger_paths(folder: Path, stem: str) -> list[Path]:
    """``{stem}.jsonl`` and every ``{stem}.shard-K-of-N.jsonl`` in the folder."""
    return sorted(path for path in folder.glob(f"{stem}*.jsonl")
                  if path.name == f"{stem}.jsonl" or re.fullmatch(rf"{stem}\.shard-\d+-of-\d+\.jsonl", path.name))


def read_results(folder: str | Path) -> list[dict]:
    """Every finished sample's record, from the unsharded and all shard ledgers (one record per sample)."""
    records: dict[str, dict] = {}
    for path in _ledger_paths(Path(folder), "results"):
        for record in read_jsonl(path):
            records.setdefault(record["sample_id"], record)
    return list(records.values())


def read_failures(folder: str | Path) -> list[dict]:
    """Every failed attempt, from the unsharded and all shard ledgers."""
    return [record for path in _ledger_paths(Path(folder), "failures") for record in read_jsonl(path)]


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
    """Open (or create) a run folder for a given config; refuse a folder made with another config.
    With a ``shard``, this process writes only its own ledgers and runtime record (see the module)."""

    def __init__(self, folder: str | Path, config: dict[str, Any], runtime: dict[str, Any] | None = None,
                 shard: Shard | None = None):
        self.folder = Path(folder)
        self.config = config
        self.shard = shard
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
        suffix = shard.suffix if shard else ""
        self._results = JsonlLedger(self.folder / f"results{suffix}.jsonl")
        self._failures = JsonlLedger(self.folder / f"failures{suffix}.jsonl")

    def update_runtime(self, runtime: dict[str, Any]) -> None:
        """Record how the latest session ran (device, batch size, versions), keeping earlier sessions
        (a shard keeps its sessions in ``runtime.shard-K-of-N.json``, not in the shared manifest)."""
        if self.shard is not None:
            path = self.folder / f"runtime{self.shard.suffix}.json"
            sessions = json.loads(path.read_text())["sessions"] if path.is_file() else []
            atomic_write_json(path, {"shard": [self.shard.index, self.shard.count], "sessions": sessions + [runtime]})
            return
        sessions = self.manifest.setdefault("sessions", [])
        sessions.append(runtime)
        self.manifest["runtime"] = runtime
        atomic_write_json(self.folder / MANIFEST, self.manifest)

    def finished(self) -> dict[str, FinishedSample]:
        """Samples finished by any process (all ledgers), so shards may be re-split between sessions."""
        return {record["sample_id"]: _to_finished(record) for record in read_results(self.folder)}

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
        return read_failures(self.folder)

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
