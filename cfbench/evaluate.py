"""Evaluation: run store -> metrics -> metrics.json.

Reads a run folder written by :func:`cfbench.runner.generate`, pairs each finished sample with the
real images of its split, streams them through the metric objects and writes ``metrics.json``.

Metrics computed here (all in intensity units of the [0, 1] scale, averaged over samples):

- ``mae_to_target``: mean |generated - real target|. The target is a later study, so pose and
  acquisition differ: this is not zero even for a perfect counterfactual on real data.
- on phantom datasets (exact counterfactual and lesion mask known):
  ``mae_to_true_counterfactual``, ``change_inside_lesion`` = mean |generated - input| inside the
  true lesion-change mask, ``change_outside_lesion`` = the same outside it (0 = perfectly local).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from tqdm.auto import tqdm

from cfbench.dataset import EditDataset
from cfbench.metrics.pixel import MeanAbsoluteDifference
from cfbench.runner import file_sha256
from cfbench.runstore import FAILURES, METRICS, RESULTS, load_generated, read_manifest
from cfbench.storage import atomic_write_json, read_jsonl

METRIC_DESCRIPTIONS = {
    "mae_to_target": "mean |generated - real target image| (pose differs; not 0 for a perfect edit)",
    "mae_to_true_counterfactual": "mean |generated - exact counterfactual| (phantoms only; 0 is perfect)",
    "change_inside_lesion": "mean |generated - input| inside the true lesion-change mask (phantoms only)",
    "change_outside_lesion": "mean |generated - input| outside the true lesion-change mask (phantoms only; 0 is perfectly local)",
}


class EvaluationError(RuntimeError):
    pass


def open_run_dataset(run_folder: Path, data_dir: Path | None = None) -> tuple[dict, EditDataset]:
    """The manifest of a run and the split it was generated on (checked to be the same CSV)."""
    manifest = read_manifest(run_folder)
    config = manifest["config"]
    data_dir = Path(data_dir or manifest["runtime"]["data_dir"])
    dataset = EditDataset(data_dir, config["split"], config["resolution"])
    if file_sha256(dataset.csv_path) != config["dataset_csv_sha256"]:
        raise EvaluationError(
            f"{dataset.csv_path} changed since run {run_folder} was generated (SHA-256 differs); "
            "evaluate against the dataset the run was made from"
        )
    return manifest, dataset


def evaluate_run(run_folder: str | Path, data_dir: str | Path | None = None, progress: bool = True) -> dict:
    """Compute the metrics of one run folder and write ``metrics.json`` there; returns its content."""
    run_folder = Path(run_folder)
    manifest, dataset = open_run_dataset(run_folder, Path(data_dir) if data_dir else None)
    finished = {record["sample_id"] for record in read_jsonl(run_folder / RESULTS)}
    samples = [sample for sample in dataset if sample.sample_id in finished]
    if not samples:
        raise EvaluationError(f"run {run_folder} has no finished samples to evaluate")
    phantom = dataset.has_folder("counterfactual") and dataset.has_folder("lesion_mask")
    metrics = {"mae_to_target": MeanAbsoluteDifference()}
    if phantom:
        for name in ("mae_to_true_counterfactual", "change_inside_lesion", "change_outside_lesion"):
            metrics[name] = MeanAbsoluteDifference()
    resolution = manifest["config"]["resolution"]
    for sample in tqdm(samples, desc="evaluating", unit="sample", disable=not progress):
        generated = load_generated(run_folder, sample.sample_id, resolution)
        metrics["mae_to_target"].update(generated, dataset.current_image(sample))
        if phantom:
            past = dataset.past_image(sample)
            lesion = dataset.lesion_mask(sample)
            metrics["mae_to_true_counterfactual"].update(generated, dataset.counterfactual_image(sample))
            metrics["change_inside_lesion"].update(generated, past, lesion)
            metrics["change_outside_lesion"].update(generated, past, ~lesion)
    failures = {record["sample_id"] for record in read_jsonl(run_folder / FAILURES)} - finished
    report = {
        "run": manifest["config"],
        "n_samples": len(samples),
        "n_in_split": len(dataset),
        "n_failed": len(failures),
        "metrics": {
            name: {"value": _finite_or_none(metric.compute()), "n": metric.count,
                   "description": METRIC_DESCRIPTIONS[name]}
            for name, metric in metrics.items()
        },
    }
    atomic_write_json(run_folder / METRICS, report)
    return report


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def read_metrics(run_folder: str | Path) -> dict:
    path = Path(run_folder) / METRICS
    if not path.is_file():
        raise EvaluationError(f"{path} not found: run `cfbench eval --run {run_folder}` first")
    return json.loads(path.read_text())
