"""The files an evaluation writes into a run folder, and their readers (the leaderboard, ``cfbench
compare`` and the gallery read evaluations only through here).

- ``metrics.json``: every metric with its interval and n, protocol, evaluator identity (:func:`read_metrics`);
- ``predictions.csv``: one row per sample, every evaluator output and ground-truth value;
- ``evaluation.npz``: the same per-sample table as arrays, no pickle (:func:`load_table`).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd

from cfbench.core.findings import EVALUATED_FINDINGS
from cfbench.core.hashing import file_sha256
from cfbench.core.storage import atomic_write_bytes, atomic_write_strict_json, atomic_write_text
from cfbench.datasets.edit_dataset import EditDataset
from cfbench.evaluation.protocol import EvaluationError
from cfbench.evaluation.scoring import SampleTable
from cfbench.runs.manifest import RunFiles, RunManifest


def open_run_dataset(run_folder: Path, data_dir: Path | None = None) -> tuple[RunManifest, EditDataset]:
    """The manifest of a run and the split it was generated on (checked to be the same CSV)."""
    manifest = RunManifest.read(run_folder)
    if data_dir is None and manifest.data_dir is None:
        raise EvaluationError(f"run {run_folder} records no dataset folder; pass --data DIR")
    data_dir = Path(data_dir or manifest.data_dir)
    dataset = EditDataset(data_dir, manifest.config.split, manifest.config.resolution)
    if file_sha256(dataset.csv_path) != manifest.config.dataset_csv_sha256:
        raise EvaluationError(
            f"{dataset.csv_path} changed since run {run_folder} was generated (SHA-256 differs); "
            "evaluate against the dataset the run was made from"
        )
    return manifest, dataset


def save_table(run_folder: Path, table: SampleTable) -> None:
    """predictions.csv (one row per sample) and evaluation.npz (the same as arrays, no pickle)."""
    columns: dict[str, object] = {"sample_id": table.sample_ids,
                                  "operations": [",".join(ops) for ops in table.operations]}
    for f, finding in enumerate(EVALUATED_FINDINGS):
        columns[f"label/{finding}"] = table.labels[:, f]
    columns.update({"race_true": [table.race_classes[r] if r >= 0 else "" for r in table.race],
                    "sex_male_true": table.sex_male, "age_true": table.age})
    if table.anchor_age is not None:
        columns["anchor_age_true"] = table.anchor_age
    for side, outputs in (("generated", table.generated), ("real", table.real), ("input", table.inputs)):
        if "pathology" in outputs:
            for f, finding in enumerate(EVALUATED_FINDINGS):
                columns[f"{side}/p({finding})"] = outputs["pathology"][:, f]
        if "race" in outputs:
            for k, name in enumerate(table.race_classes):
                columns[f"{side}/p({name})"] = outputs["race"][:, k]
        if "sex" in outputs:
            columns[f"{side}/p(male)"] = outputs["sex"]
        if "age" in outputs:
            columns[f"{side}/age"] = outputs["age"]
    columns.update(table.pixel)
    if any(table.explanations) or any(table.reference_explanations):
        columns["explanation"] = table.explanations
        columns["reference_explanation"] = table.reference_explanations
    atomic_write_text(RunFiles(run_folder).predictions, pd.DataFrame(columns).to_csv(index=False))

    arrays = {"sample_ids": np.array(table.sample_ids), "operations": np.array([",".join(o) for o in table.operations]),
              "labels": table.labels, "race": table.race, "sex_male": table.sex_male, "age": table.age,
              "race_classes": np.array(table.race_classes, dtype=str),
              "explanations": np.array([t or "" for t in table.explanations], dtype=str),
              "reference_explanations": np.array([t or "" for t in table.reference_explanations], dtype=str)}
    if table.anchor_age is not None:
        arrays["anchor_age"] = table.anchor_age
    arrays.update({f"generated/{k}": v for k, v in table.generated.items()})
    arrays.update({f"real/{k}": v for k, v in table.real.items()})
    arrays.update({f"pixel/{k}": v for k, v in table.pixel.items()})
    arrays.update({f"input/{k}": v for k, v in table.inputs.items()})
    if table.edits is not None:
        arrays["edits"] = table.edits
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write_bytes(RunFiles(run_folder).evaluation_arrays, buffer.getvalue())


def load_table(run_folder: str | Path) -> SampleTable:
    path = RunFiles(Path(run_folder)).evaluation_arrays
    if not path.is_file():
        raise EvaluationError(f"{path} not found: run `cfbench eval --run {run_folder}` first")
    with np.load(path, allow_pickle=False) as archive:
        data = {key: archive[key] for key in archive.files}

    def group(prefix: str) -> dict[str, np.ndarray]:
        return {key[len(prefix):]: value for key, value in data.items() if key.startswith(prefix)}

    return SampleTable(
        sample_ids=data["sample_ids"].tolist(),
        operations=[tuple(o.split(",")) if o else () for o in data["operations"].tolist()],
        labels=data["labels"], race=data["race"], sex_male=data["sex_male"], age=data["age"],
        race_classes=tuple(data["race_classes"].tolist()),
        generated=group("generated/"), real=group("real/"), pixel=group("pixel/"),
        explanations=[t or None for t in data["explanations"].tolist()],
        reference_explanations=[t or None for t in data["reference_explanations"].tolist()],
        anchor_age=data.get("anchor_age"),
        inputs=group("input/"), edits=data.get("edits"),
    )


def read_metrics(run_folder: str | Path) -> dict:
    """A run's metrics.json; EvaluationError naming the file when it is missing, not JSON (truncated) or not a
    cfbench evaluation (a foreign file: no metrics table, run or dataset record)."""
    from cfbench.evaluation.comparability import MetricsFileError, comparability_key

    path = RunFiles(Path(run_folder)).metrics
    if not path.is_file():
        raise EvaluationError(f"{path} not found: run `cfbench eval --run {run_folder}` first")
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
        comparability_key(metrics)  # checks the fields every reader needs
    except (ValueError, UnicodeDecodeError) as error:
        reason = error if isinstance(error, MetricsFileError) else f"not valid JSON: {error}"
        raise EvaluationError(f"{path}: {reason}; run `cfbench eval --run {run_folder}` again") from None
    return metrics


def write_metrics(run_folder: str | Path, report: dict) -> None:
    """metrics.json as strict JSON: a number that is not finite is null, with the reason beside it."""
    atomic_write_strict_json(RunFiles(Path(run_folder)).metrics, report)
