"""Evaluation: run store -> evaluators -> metrics -> metrics.json.

Reads a run folder written by :func:`cfbench.runner.generate`, pairs each finished sample with the real
images of its split, and streams the generated images through an evaluator in batches (memory constant
in N: only per-sample scalars and feature vectors are kept). Evaluator outputs on the real target images
come from :class:`~cfbench.output_cache.EvaluatorOutputCache`, so they are computed once per split and
evaluator. The numbers themselves are computed by :mod:`cfbench.scoring`.

Writes into the run folder:

- ``metrics.json``: every metric with its bootstrap interval and n, the protocol choices, the evaluator's
  identity (weights SHA-256, versions), components (CMIG terms, KL per finding, label counts) and
  per-operation breakdowns;
- ``predictions.csv``: one row per sample, every evaluator output and ground-truth value;
- ``evaluation.npz``: the same per-sample table as arrays (read by ``cfbench compare``).

Pixel measures (intensity units of the [0, 1] scale, per-sample means averaged over samples):

- ``mae_to_target``: mean |generated - real target|. The target is a later study (other pose, other
  acquisition): not 0 even for a perfect counterfactual on real data.
- phantoms only (exact counterfactual and lesion-change mask known): ``mae_to_true_counterfactual``,
  ``change_inside_lesion`` = mean |generated - input| inside the true lesion-change mask, and
  ``change_outside_lesion`` = the same outside it (0 = perfectly local edit).
- other data: ``change_inside_pseudo_mask`` / ``change_outside_pseudo_mask``, the same around the pseudo
  mask of the instruction's findings (:mod:`cfbench.pseudo_masks`; the dataset's own ``pseudo_masks.npz``
  when it has one, e.g. MS-CXR boxes, else NIH box unions).
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from cfbench import config
from cfbench.dataset import EditDataset, Sample
from cfbench.evaluator import Evaluator, check_outputs
from cfbench.findings import EVALUATED_FINDINGS
from cfbench.output_cache import EvaluatorOutputCache
from cfbench.prefetch import prefetched
from cfbench.pseudo_masks import PseudoMasks, default_pseudo_masks
from cfbench.runner import package_versions
from cfbench.runstore import METRICS, load_generated, read_failures, read_manifest, read_results
from cfbench.scoring import Protocol, SampleTable, score
from cfbench.storage import atomic_write_bytes, atomic_write_json, atomic_write_text, file_sha256

PREDICTIONS = "predictions.csv"
EVALUATION_ARRAYS = "evaluation.npz"
EVALUATORS = ("auto", "phantom-cnn", "xrv", "none")

METRIC_DESCRIPTIONS = {
    "pathology_mean_auroc": "mean AUROC over the 5 findings: evaluator probabilities on generated images vs target labels",
    "race_auroc": "one-vs-rest macro AUROC of the race/group evaluator on generated images vs the patient's group",
    "sex_auroc": "AUROC of P(male) on generated images vs the patient's sex",
    "age_pearson": "Pearson r of predicted age on generated images vs the patient's age",
    "cmig": "sqrt(a_bar * f_bar), geometric means of accuracy and retention terms, 0-100 scale",
    "kl_divergence": "sum over findings of Bernoulli KL(P_real || Q_generated) of mean probabilities, nats",
    "fid": "Frechet distance of evaluator features, real target vs generated images",
    "clip_i": "mean cosine similarity of BiomedCLIP image embeddings, generated vs real target (ProgEmu CLIP-I)",
    "f1_macro": "mean F1 over the 5 findings at the protocol's threshold",
    "bleu3": "corpus BLEU (1- to 3-grams) of generated explanations vs reference explanations",
    "meteor": "mean sentence METEOR of generated vs reference explanations",
    "rouge_l": "mean ROUGE-L F-measure of generated vs reference explanations",
    "mae_to_target": "mean |generated - real target image| (pose differs; not 0 for a perfect edit)",
    "mae_to_true_counterfactual": "mean |generated - exact counterfactual| (phantoms only; 0 is perfect)",
    "change_inside_lesion": "mean |generated - input| inside the true lesion-change mask (phantoms only)",
    "change_outside_lesion": "mean |generated - input| outside the true lesion-change mask (phantoms only; 0 = local)",
    "change_inside_pseudo_mask": "mean |generated - input| inside the pseudo mask of the instruction's findings",
    "change_outside_pseudo_mask": "mean |generated - input| outside the pseudo mask of the instruction's findings "
                                  "(samples whose findings have no mask are skipped)",
}


class EvaluationError(RuntimeError):
    pass


def open_run_dataset(run_folder: Path, data_dir: Path | None = None) -> tuple[dict, EditDataset]:
    """The manifest of a run and the split it was generated on (checked to be the same CSV)."""
    manifest = read_manifest(run_folder)
    run_config = manifest["config"]
    data_dir = Path(data_dir or manifest["runtime"]["data_dir"])
    dataset = EditDataset(data_dir, run_config["split"], run_config["resolution"])
    if file_sha256(dataset.csv_path) != run_config["dataset_csv_sha256"]:
        raise EvaluationError(
            f"{dataset.csv_path} changed since run {run_folder} was generated (SHA-256 differs); "
            "evaluate against the dataset the run was made from"
        )
    return manifest, dataset


def is_phantom(dataset: EditDataset) -> bool:
    return dataset.info.get("kind") == "phantom"


def has_true_lesions(dataset: EditDataset) -> bool:
    """Phantom datasets carry the exact counterfactual and the true lesion-change mask of every sample."""
    return dataset.has_folder("counterfactual") and dataset.has_folder("lesion_mask")


def make_evaluator(name: str, dataset: EditDataset, device: str = "cpu") -> Evaluator | None:
    """The evaluator for a dataset: the shipped phantom CNN on phantom data, torchxrayvision otherwise."""
    if name not in EVALUATORS:
        raise EvaluationError(f"unknown evaluator {name!r}; choose one of {', '.join(EVALUATORS)}")
    if name == "none":
        return None
    if name == "phantom-cnn" or (name == "auto" and is_phantom(dataset)):
        from cfbench.phantom_evaluators import PhantomEvaluator

        return PhantomEvaluator.from_file(device=device)
    from cfbench.xrv_evaluators import XRVEvaluatorSuite

    has_race = any(sample.race for sample in dataset)
    return XRVEvaluatorSuite.for_dataset(has_race=has_race, device=device)


def _ground_truth(samples: list[Sample], race_classes: tuple[str, ...]) -> dict[str, np.ndarray]:
    def label(value: float | None) -> float:
        return math.nan if value is None else value

    race_index = {name: index for index, name in enumerate(race_classes)}
    return {
        "labels": np.array([[label(s.labels.get(f)) for f in EVALUATED_FINDINGS] for s in samples], np.float64),
        "race": np.array([race_index.get(s.race, -1) for s in samples], np.int64),
        "sex_male": np.array([{"M": 1.0, "F": 0.0}.get((s.sex or "").upper()[:1], math.nan) for s in samples]),
        "age": np.array([math.nan if s.age is None else s.age for s in samples], np.float64),
    }


def _pixel_measures(generated: np.ndarray, target: np.ndarray, sample: Sample, dataset: EditDataset,
                    phantom: bool, masks: PseudoMasks | None) -> dict[str, float]:
    values = {"mae_to_target": float(np.abs(generated - target).mean())}
    if phantom:
        region = dataset.lesion_mask(sample)
        values["mae_to_true_counterfactual"] = float(np.abs(generated - dataset.counterfactual_image(sample)).mean())
        names = ("change_inside_lesion", "change_outside_lesion")
    else:
        region = masks.mask_for(sample.operations, dataset.resolution)
        names = ("change_inside_pseudo_mask", "change_outside_pseudo_mask")
    change = np.abs(generated - dataset.past_image(sample))
    total, inside = float(change.sum(dtype=np.float64)), float(change.sum(where=region, dtype=np.float64))
    n_inside = int(np.count_nonzero(region))
    n_outside = region.size - n_inside
    values[names[0]] = inside / n_inside if n_inside else math.nan
    values[names[1]] = (total - inside) / n_outside if n_outside else math.nan
    return values


def collect(
    run_folder: Path,
    dataset: EditDataset,
    samples: list[Sample],
    evaluators: list[Evaluator],
    cache_dir: Path,
    masks: PseudoMasks | None = None,
    batch_size: int = 16,
    progress: bool = True,
) -> SampleTable:
    """Stream generated images through the evaluators and pixel measures; real outputs from the cache.

    Locality is measured around the true lesion masks on phantom data, else around ``masks``."""
    resolution = dataset.resolution
    phantom = has_true_lesions(dataset)
    if not phantom and masks is None:
        raise EvaluationError("pseudo masks are needed to measure locality on data without true lesion masks")
    race_classes = next((tuple(e.race_classes) for e in evaluators if "race" in e.outputs), ())
    truth = _ground_truth(samples, race_classes)
    caches = [EvaluatorOutputCache(cache_dir, evaluator, resolution) for evaluator in evaluators]
    digests = [file_sha256(dataset.current_path(sample)) for sample in samples]
    real_rows = [cache.lookup(digests) for cache in caches]  # per evaluator: sample position -> outputs
    generated: dict[str, list[np.ndarray]] = {}
    pixel: dict[str, list[float]] = {}

    def load(positions: list[int]) -> tuple[np.ndarray, np.ndarray, list[dict[str, float]]]:
        batch = [samples[p] for p in positions]
        images = np.stack([load_generated(run_folder, sample.sample_id, resolution) for sample in batch])
        targets = np.stack([dataset.current_image(sample) for sample in batch])
        measures = [_pixel_measures(image, target, sample, dataset, phantom, masks)
                    for image, target, sample in zip(images, targets, batch)]
        return images, targets, measures

    batches = [list(range(start, min(start + batch_size, len(samples)))) for start in range(0, len(samples), batch_size)]
    loaded = prefetched(batches, load)
    for positions, (images, targets, measures) in tqdm(zip(batches, loaded), total=len(batches), desc="evaluating",
                                                       unit="batch", disable=not progress):
        for values in measures:
            for name, value in values.items():
                pixel.setdefault(name, []).append(value)
        for evaluator, cache, rows in zip(evaluators, caches, real_rows):
            outputs = check_outputs(evaluator.predict(images), evaluator, len(positions))
            for key, value in outputs.items():
                generated.setdefault(key, []).append(value)
            missing = [offset for offset, p in enumerate(positions) if p not in rows]
            if missing:  # the real target images are decoded already: score them in the same pass
                filled = cache.fill([digests[positions[o]] for o in missing], targets[missing])
                rows.update({positions[o]: row for o, row in zip(missing, filled)})
    real: dict[str, np.ndarray] = {}
    for rows in real_rows:
        for key in (rows[0].keys() if rows else ()):
            real[key] = np.stack([rows[p][key] for p in range(len(samples))])
    explanations = {r["sample_id"]: r.get("explanation") for r in read_results(run_folder)}
    return SampleTable(
        sample_ids=[s.sample_id for s in samples],
        operations=[tuple(sorted({op.op for op in s.operations})) for s in samples],
        labels=truth["labels"], race=truth["race"], sex_male=truth["sex_male"], age=truth["age"],
        race_classes=race_classes,
        generated={key: np.concatenate(parts) for key, parts in generated.items()},
        real=real,
        pixel={name: np.asarray(values, np.float64) for name, values in pixel.items()},
        explanations=[explanations.get(s.sample_id) for s in samples],
        reference_explanations=[s.reference_explanation for s in samples],
    )


def evaluate_run(
    run_folder: str | Path,
    data_dir: str | Path | None = None,
    evaluator: Evaluator | str = "auto",
    protocol: Protocol = Protocol(),
    extra_evaluators: tuple[Evaluator, ...] = (),
    pseudo_masks: PseudoMasks | None = None,
    cache_dir: str | Path | None = None,
    batch_size: int = 16,
    device: str = "cpu",
    progress: bool = True,
) -> dict:
    """Compute the metrics of one run folder; write metrics.json, predictions.csv, evaluation.npz."""
    run_folder = Path(run_folder)
    manifest, dataset = open_run_dataset(run_folder, Path(data_dir) if data_dir else None)
    finished = {record["sample_id"] for record in read_results(run_folder)}
    samples = [sample for sample in dataset if sample.sample_id in finished]
    if not samples:
        raise EvaluationError(f"run {run_folder} has no finished samples to evaluate")
    if isinstance(evaluator, str):
        evaluator = make_evaluator(evaluator, dataset, device)
    evaluators = ([evaluator] if evaluator is not None else []) + list(extra_evaluators)
    overlap = _overlapping_outputs(evaluators)
    if overlap:
        raise EvaluationError(f"several evaluators give the same outputs {overlap}; use one per output")
    cache_dir = Path(cache_dir) if cache_dir else config.resolve_path("cache_dir")
    masks = None if has_true_lesions(dataset) else (pseudo_masks or default_pseudo_masks(dataset.root,
                                                                                          dataset.resolution))
    table = collect(run_folder, dataset, samples, evaluators, cache_dir, masks, batch_size, progress)
    scores = score(table, protocol)
    failures = {record["sample_id"] for record in read_failures(run_folder)} - finished
    report = {
        "run": manifest["config"],
        "dataset": {"path": str(dataset.root), "split": dataset.split, "kind": dataset.info.get("kind", "unknown"),
                    "csv_sha256": manifest["config"]["dataset_csv_sha256"]},
        "n_samples": len(samples),
        "n_in_split": len(dataset),
        "n_failed": len(failures),
        "evaluator": evaluator.identity() if evaluator is not None else None,
        "extra_evaluators": [extra.identity() for extra in extra_evaluators],
        "protocol": protocol.as_dict(),
        "locality_region": "true lesion-change masks" if masks is None else f"pseudo masks: {masks.source}",
        "versions": package_versions(),
        "descriptions": {name: text for name, text in METRIC_DESCRIPTIONS.items() if name in scores["metrics"]},
        **scores,
    }
    save_table(run_folder, table)
    atomic_write_json(run_folder / METRICS, report)
    return report


def _overlapping_outputs(evaluators: list[Evaluator]) -> list[str]:
    seen: set[str] = set()
    overlap = []
    for evaluator in evaluators:
        overlap += [key for key in evaluator.outputs if key in seen]
        seen.update(evaluator.outputs)
    return overlap


def save_table(run_folder: Path, table: SampleTable) -> None:
    """predictions.csv (one row per sample) and evaluation.npz (the same as arrays, no pickle)."""
    columns: dict[str, object] = {"sample_id": table.sample_ids,
                                  "operations": [",".join(ops) for ops in table.operations]}
    for f, finding in enumerate(EVALUATED_FINDINGS):
        columns[f"label/{finding}"] = table.labels[:, f]
    columns.update({"race_true": [table.race_classes[r] if r >= 0 else "" for r in table.race],
                    "sex_male_true": table.sex_male, "age_true": table.age})
    for side, outputs in (("generated", table.generated), ("real", table.real)):
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
    atomic_write_text(run_folder / PREDICTIONS, pd.DataFrame(columns).to_csv(index=False))

    arrays = {"sample_ids": np.array(table.sample_ids), "operations": np.array([",".join(o) for o in table.operations]),
              "labels": table.labels, "race": table.race, "sex_male": table.sex_male, "age": table.age,
              "race_classes": np.array(table.race_classes, dtype=str),
              "explanations": np.array([t or "" for t in table.explanations], dtype=str),
              "reference_explanations": np.array([t or "" for t in table.reference_explanations], dtype=str)}
    arrays.update({f"generated/{k}": v for k, v in table.generated.items()})
    arrays.update({f"real/{k}": v for k, v in table.real.items()})
    arrays.update({f"pixel/{k}": v for k, v in table.pixel.items()})
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write_bytes(run_folder / EVALUATION_ARRAYS, buffer.getvalue())


def load_table(run_folder: str | Path) -> SampleTable:
    path = Path(run_folder) / EVALUATION_ARRAYS
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
    )


def read_metrics(run_folder: str | Path) -> dict:
    path = Path(run_folder) / METRICS
    if not path.is_file():
        raise EvaluationError(f"{path} not found: run `cfbench eval --run {run_folder}` first")
    return json.loads(path.read_text())
