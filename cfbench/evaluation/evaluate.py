"""Evaluation: run store -> evaluators -> metrics -> metrics.json.

Reads a run folder written by :func:`cfbench.runs.generate.generate`, pairs each finished sample with the real
images of its split, and streams the generated images through an evaluator in batches (memory constant
in N: only per-sample scalars and feature vectors are kept). Evaluator outputs on the real target images
come from :class:`~cfbench.evaluation.output_cache.EvaluatorOutputCache`, so they are computed once per split and
evaluator. The numbers themselves are computed by :mod:`cfbench.evaluation.scoring`.

Writes into the run folder (files and readers in :mod:`cfbench.evaluation.results`):

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
  ``change_outside_lesion`` = the same outside it (0 = perfectly local edit), and for models that return
  guidance maps ``guidance_auroc``: the AUROC of the guidance map as a pixel-wise detector of the true
  lesion-change mask (1 = the map ranks every changed pixel above every unchanged one, 0.5 = chance).
- other data: ``change_inside_pseudo_mask`` / ``change_outside_pseudo_mask``, the same around the pseudo
  mask of the instruction's findings (:mod:`cfbench.datasets.pseudo_masks`; the dataset's own ``pseudo_masks.npz``
  when it has one, e.g. MS-CXR boxes, else NIH box unions).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from cfbench.api.evaluator import Evaluator, check_outputs
from cfbench.core import config
from cfbench.core.findings import EVALUATED_FINDINGS
from cfbench.core.hashing import file_sha256
from cfbench.core.images import ImageReadError, load_image
from cfbench.core.prefetch import default_loader_threads, prefetched_each
from cfbench.core.process_state import evaluation_torch_defaults
from cfbench.core.provenance import package_versions
from cfbench.datasets.edit_dataset import EditDataset, Sample
from cfbench.datasets.pseudo_masks import DATASET_MASKS, PseudoMasks, default_pseudo_masks
from cfbench.evaluation.comparability import METRIC_SCHEMA_VERSION, comparability_key
from cfbench.evaluation.diversity import seed_pair_measures
from cfbench.evaluation.image_cache import DecodedImageCache, image_cache_bytes
from cfbench.evaluation.memorisation import run_memorisation
from cfbench.evaluation.metric_names import descriptions
from cfbench.evaluation.output_cache import EvaluatorOutputCache
from cfbench.evaluation.protocol import EVALUATORS, EvaluationError, Protocol, small_n_warnings
from cfbench.evaluation.results import open_run_dataset, save_table, write_metrics
from cfbench.evaluation.scoring import SampleTable, score
from cfbench.metrics.classification import binary_auroc
from cfbench.metrics.minimality import relative_change_outside, w1_outside
from cfbench.runs.manifest import RunFiles, RunManifest
from cfbench.runs.store import evaluation_lock, load_generated, read_failures, read_results
from cfbench.core.storage import remove_stale_temporaries

logger = logging.getLogger(__name__)


def is_phantom(dataset: EditDataset) -> bool:
    return dataset.info.get("kind") == "phantom"


def has_true_lesions(dataset: EditDataset) -> bool:
    """Phantom datasets carry the exact counterfactual and the true lesion-change mask of every sample."""
    return dataset.has_folder("counterfactual") and dataset.has_folder("lesion_mask")


def locality_masks(dataset: EditDataset) -> PseudoMasks | None:
    """The pseudo masks locality and ``cfbench_score`` are measured around: the dataset's own (MS-CXR boxes,
    the phantoms' shipped masks), else the NIH box unions; None on a phantom dataset without its own (old
    builds), whose locality is then measured around the true lesions only."""
    if has_true_lesions(dataset) and not (Path(dataset.root) / DATASET_MASKS).is_file():
        return None
    return default_pseudo_masks(dataset.root, dataset.resolution)


def make_evaluator(name: str, dataset: EditDataset, device: str = "cpu") -> Evaluator | None:
    """The evaluator for a dataset: the shipped phantom CNN on phantom data, torchxrayvision otherwise."""
    if name not in EVALUATORS:
        raise EvaluationError(f"unknown evaluator {name!r}; choose one of {', '.join(EVALUATORS)}")
    if name == "none":
        return None
    if name == "phantom-cnn" or (name == "auto" and is_phantom(dataset)):
        from cfbench.phantom.evaluator import PhantomEvaluator

        return PhantomEvaluator.from_file(device=device)
    from cfbench.evaluation.xrv import XRVEvaluatorSuite

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
        "anchor_age": (np.array([math.nan if s.anchor_age is None else s.anchor_age for s in samples], np.float64)
                       if any(s.anchor_age is not None for s in samples) else None),
    }


def _pixel_measures(generated: np.ndarray, target: np.ndarray, prior: np.ndarray, sample: Sample,
                    dataset: EditDataset, counterfactual: np.ndarray | None, masks: PseudoMasks | None,
                    guidance: np.ndarray | None = None) -> dict[str, float]:
    """Pixel measures of one sample; ``counterfactual`` is the exact one on phantom data (then locality is
    measured around the true lesion), None elsewhere. Around the pseudo mask of ``masks`` whenever given (on
    phantoms too: what ``cfbench_score`` reads, the same on every dataset)."""
    values = {"mae_to_target": float(np.abs(generated - target).mean())}
    regions = []
    if counterfactual is not None:
        region = dataset.lesion_mask(sample)
        values["mae_to_true_counterfactual"] = float(np.abs(generated - counterfactual).mean())
        regions.append(("lesion", region))
        if guidance is not None:  # the guidance map as a pixel-wise detector of the true change (NaN: one class)
            values["guidance_auroc"] = binary_auroc(region.ravel().astype(np.int8), guidance.ravel())
    if masks is not None:
        regions.append(("pseudo_mask", masks.mask_for(sample.operations, dataset.resolution,
                                                      instruction=sample.instruction)))
    change = np.abs(generated - prior)
    total = float(change.sum(dtype=np.float64))
    for suffix, region in regions:
        inside = float(change.sum(where=region, dtype=np.float64))
        n_inside = int(np.count_nonzero(region))
        n_outside = region.size - n_inside
        values[f"change_inside_{suffix}"] = inside / n_inside if n_inside else math.nan
        values[f"change_outside_{suffix}"] = (total - inside) / n_outside if n_outside else math.nan
        values[f"relative_change_outside_{suffix}"] = relative_change_outside(generated, prior, region)
        values[f"w1_outside_{suffix}"] = w1_outside(generated, prior, region)
    return values


def edit_directions(samples: list[Sample]) -> np.ndarray:
    """(N, 5) per sample and evaluated finding: +1 added, -1 removed, 0 level changed, NaN not edited."""
    index = {finding: k for k, finding in enumerate(EVALUATED_FINDINGS)}
    edits = np.full((len(samples), len(EVALUATED_FINDINGS)), np.nan)
    for row, sample in enumerate(samples):
        for operation in sample.operations:
            k = index.get(operation.chexpert_column)
            if k is not None:
                edits[row, k] = {"add": 1.0, "remove": -1.0}.get(operation.op, 0.0)
    return edits


@dataclass(frozen=True)
class ExcludedSample:
    """A sample left out of every metric because one of its images could not be used."""

    sample_id: str
    reason: str


def collect(
    run_folder: Path,
    dataset: EditDataset,
    samples: list[Sample],
    records: dict[str, dict],
    evaluators: list[Evaluator],
    cache_dir: Path,
    masks: PseudoMasks | None = None,
    batch_size: int = 16,
    progress: bool = True,
    loader_threads: int | None = None,
) -> tuple[SampleTable, list[ExcludedSample]]:
    """Stream generated images through the evaluators and pixel measures; real outputs from the cache.

    Locality is measured around the true lesion masks on phantom data, else around ``masks``. A sample
    whose generated image, target, prior, counterfactual or mask cannot be read is left out, named with
    the reason; the table holds the others, in order. ``records``: the run's finished-sample records
    (:func:`cfbench.runs.store.read_results`) by sample id. ``loader_threads``: threads that read and
    measure the next batch's samples while the evaluators run (default: one per core, at most 8)."""
    resolution = dataset.resolution
    phantom = has_true_lesions(dataset)
    if not phantom and masks is None:
        raise EvaluationError("pseudo masks are needed to measure locality on data without true lesion masks")
    race_classes = next((tuple(e.race_classes) for e in evaluators if "race" in e.outputs), ())
    caches = [EvaluatorOutputCache(cache_dir, evaluator, resolution) for evaluator in evaluators]
    decoded = DecodedImageCache(cache_dir, resolution, image_cache_bytes())
    excluded: list[ExcludedSample] = []
    digests: dict[str, str] = {}
    prior_digests: dict[str, str] = {}
    for sample in samples:
        try:
            digests[sample.sample_id] = file_sha256(dataset.current_path(sample))
            prior_digests[sample.sample_id] = file_sha256(dataset.image_path("past", sample.past_dicom_id, sample))
        except (ImageReadError, OSError) as error:
            digests.pop(sample.sample_id, None)
            excluded.append(ExcludedSample(sample.sample_id, str(error)))
    usable = [sample for sample in samples if sample.sample_id in digests]
    real_rows = [cache.lookup([digests[s.sample_id] for s in usable]) for cache in caches]  # position -> outputs
    input_rows = [cache.lookup([prior_digests[s.sample_id] for s in usable]) for cache in caches]
    kept: list[int] = []  # positions in `usable` that made it through
    generated: dict[str, list[np.ndarray]] = {}
    pixel: dict[str, list[float]] = {}

    with_guidance = {sample_id for sample_id, record in records.items() if record.get("has_guidance")}

    def cached(folder: str, stem: str, sample: Sample, decode) -> np.ndarray:
        """A dataset image through the decoded-image cache (keyed on the file's content)."""
        try:
            digest = file_sha256(dataset.image_path(folder, stem, sample))
        except OSError:
            return decode()  # raises the dataset's error, which names the sample and row
        return decoded.load(digest, decode)

    def load_one(sample: Sample):
        image = load_generated(run_folder, sample.sample_id, resolution)
        target = decoded.load(digests[sample.sample_id], lambda: dataset.current_image(sample))
        prior = decoded.load(prior_digests[sample.sample_id], lambda: dataset.past_image(sample))
        counterfactual = (cached("counterfactual", sample.sample_id, sample,
                                 lambda: dataset.counterfactual_image(sample)) if phantom else None)
        guidance = (load_image(RunFiles(run_folder).guidance_map(sample.sample_id), resolution)
                    if phantom and sample.sample_id in with_guidance else None)
        return image, target, prior, _pixel_measures(image, target, prior, sample, dataset, counterfactual, masks,
                                                     guidance)

    def load(position: int):
        try:
            return (position, *load_one(usable[position]))
        except (ImageReadError, OSError, ValueError) as error:
            return (position, error)

    batches = [list(range(start, min(start + batch_size, len(usable)))) for start in range(0, len(usable), batch_size)]
    threads = loader_threads or default_loader_threads()
    for batch in tqdm(prefetched_each(batches, load, threads), total=len(batches), desc="evaluating",
                      unit="batch", disable=not progress):
        good = [item for item in batch if len(item) == 5]
        for position, error in (item for item in batch if len(item) == 2):
            excluded.append(ExcludedSample(usable[position].sample_id, str(error)))
        if not good:
            continue
        positions = [item[0] for item in good]
        images = np.stack([item[1] for item in good])
        targets = np.stack([item[2] for item in good])
        priors = np.stack([item[3] for item in good])
        kept += positions
        for _, _, _, _, values in good:
            for name, value in values.items():
                pixel.setdefault(name, []).append(value)
        for cache, rows in zip(caches, input_rows):  # the evaluators on the inputs: effect size, identity change
            missing = [offset for offset, p in enumerate(positions) if p not in rows]
            if missing:
                filled = cache.fill([prior_digests[usable[positions[o]].sample_id] for o in missing], priors[missing])
                rows.update({positions[o]: row for o, row in zip(missing, filled)})
        for evaluator, cache, rows in zip(evaluators, caches, real_rows):
            outputs = check_outputs(evaluator.predict(images), evaluator, len(positions))
            for key, value in outputs.items():
                generated.setdefault(key, []).append(value)
            missing = [offset for offset, p in enumerate(positions) if p not in rows]
            if missing:  # the real target images are decoded already: score them in the same pass
                filled = cache.fill([digests[usable[positions[o]].sample_id] for o in missing], targets[missing])
                rows.update({positions[o]: row for o, row in zip(missing, filled)})
    for item in excluded:
        logger.warning("sample %s excluded from every metric: %s", item.sample_id, item.reason)
    if not kept:
        raise EvaluationError(f"run {run_folder}: no sample could be evaluated ({len(excluded)} excluded; first: "
                              f"{excluded[0].sample_id}: {excluded[0].reason})" if excluded else
                              f"run {run_folder}: no sample to evaluate")
    table_samples = [usable[p] for p in kept]
    truth = _ground_truth(table_samples, race_classes)
    real: dict[str, np.ndarray] = {}
    for rows in real_rows:
        for key in (rows[kept[0]].keys() if kept else ()):
            real[key] = np.stack([rows[p][key] for p in kept])
    inputs: dict[str, np.ndarray] = {}
    for rows in input_rows:
        for key in rows[kept[0]].keys():
            if key != "features":  # only the probabilities and the age are compared with the input's
                inputs[key] = np.stack([rows[p][key] for p in kept])
    table = SampleTable(
        sample_ids=[s.sample_id for s in table_samples],
        operations=[tuple(sorted({op.op for op in s.operations})) for s in table_samples],
        labels=truth["labels"], race=truth["race"], sex_male=truth["sex_male"], age=truth["age"],
        race_classes=race_classes,
        generated={key: np.concatenate(parts) for key, parts in generated.items()},
        real=real,
        pixel={name: np.asarray(values, np.float64) for name, values in pixel.items()},
        explanations=[records[s.sample_id].get("explanation") for s in table_samples],
        reference_explanations=[s.reference_explanation for s in table_samples],
        anchor_age=truth["anchor_age"],
        inputs=inputs,
        edits=edit_directions(table_samples),
    )
    return table, excluded


def clip_prompt(sample: Sample) -> str:
    """The text CLIP-I "image-text" compares the generated image with: the progression description (ProgEmu's
    prompt), else the edit instruction."""
    return sample.progression or sample.instruction


def _text_embeddings(evaluators: list[Evaluator], samples: list[Sample]) -> np.ndarray:
    """BiomedCLIP text embeddings of each sample's prompt, for CLIP-I "image-text"."""
    embedder = next((e for e in evaluators if hasattr(e, "embed_texts")), None)
    if embedder is None:
        raise EvaluationError("CLIP-I image-text needs a BiomedCLIP model with its text tower: pass --clip-model DIR "
                              "(open_clip_config.json, open_clip_pytorch_model.bin and the text model folder)")
    return embedder.embed_texts([clip_prompt(sample) for sample in samples])


@evaluation_torch_defaults()  # float32 and no grad, whatever a model run in this process left set
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
    loader_threads: int | None = None,
    partial: bool = False,
    memorisation: bool = False,
) -> dict:
    """Compute the metrics of one run folder; write metrics.json, predictions.csv, evaluation.npz.
    ``loader_threads``: threads reading images while the evaluators run (default: one per core, at most 8).
    ``memorisation``: also compare each output with its nearest training-split images
    (:mod:`cfbench.evaluation.memorisation`; the index is built once per training split and evaluator, cached).
    The run folder is locked meanwhile (:func:`cfbench.runs.store.evaluation_lock`): a second evaluation, or one
    while ``generate`` still writes the run, is refused unless ``partial``."""
    run_folder = Path(run_folder).absolute()
    RunManifest.read(run_folder)  # not a run folder, or a damaged manifest: a named error before any lock file
    with evaluation_lock(run_folder, partial):
        return _evaluate_locked(run_folder, data_dir, evaluator, protocol, extra_evaluators, pseudo_masks, cache_dir,
                                batch_size, device, progress, loader_threads, memorisation)


def _evaluate_locked(run_folder: Path, data_dir, evaluator, protocol: Protocol, extra_evaluators, pseudo_masks,
                     cache_dir, batch_size: int, device: str, progress: bool, loader_threads: int | None,
                     memorisation: bool) -> dict:
    remove_stale_temporaries(run_folder)  # of processes that were killed (a live generator's are kept)
    manifest, dataset = open_run_dataset(run_folder, Path(data_dir) if data_dir else None)
    finished = {record["sample_id"]: record for record in read_results(run_folder)}
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
    masks = pseudo_masks or locality_masks(dataset)
    table, excluded = collect(run_folder, dataset, samples, finished, evaluators, cache_dir, masks, batch_size,
                              progress, loader_threads)
    seed_pair_values, seed_pair = seed_pair_measures(run_folder, table.sample_ids, dataset.resolution)
    table.pixel.update(seed_pair_values)  # diversity across two seeds (--seeds 2), as per-sample measures
    memorisation_info = None
    if memorisation:
        memorisation_values, memorisation_info = run_memorisation(
            run_folder, dataset, table.sample_ids, table.generated.get("features"), evaluators, cache_dir, batch_size)
        table.pixel.update(memorisation_values)  # nearest training images: per-sample measures
    if protocol.clip_i_variant == "image-text" and "embedding" in table.generated:
        by_id = {sample.sample_id: sample for sample in samples}
        table.real["text_embedding"] = _text_embeddings(evaluators, [by_id[i] for i in table.sample_ids])
    scores = score(table, protocol)
    failures = {record["sample_id"] for record in read_failures(run_folder)} - finished.keys()
    report = {
        "run": manifest.config.to_dict(),
        "dataset": {"path": str(dataset.root), "split": dataset.split, "kind": dataset.info.get("kind", "unknown"),
                    "csv_sha256": manifest.config.dataset_csv_sha256},
        "n_samples": len(table),
        "n_finished": len(samples),
        "n_excluded": len(excluded),
        "excluded_samples": [{"sample_id": item.sample_id, "reason": item.reason} for item in excluded],
        "dataset_rows_skipped": [{"row": row.row, "sample_id": row.sample_id, "reason": row.reason}
                                 for row in dataset.skipped_rows],
        "n_in_split": len(dataset),
        "n_failed": len(failures),
        "evaluator": evaluator.identity() if evaluator is not None else None,
        "extra_evaluators": [extra.identity() for extra in extra_evaluators],
        "protocol": protocol.as_dict(),
        "protocol_choices": protocol.choices_text(scores["metrics"]),
        "warnings": small_n_warnings(scores["metrics"]),
        "undefined": undefined_reasons(table, scores["metrics"], protocol),
        "seed_pair": seed_pair,
        "memorisation": memorisation_info,
        "locality_region": "; ".join((["true lesion-change masks"] if has_true_lesions(dataset) else [])
                                     + ([f"pseudo masks: {masks.source}"] if masks is not None else [])),
        "versions": package_versions(),
        "descriptions": descriptions(scores["metrics"]),
        **scores,
        "metric_schema_version": METRIC_SCHEMA_VERSION,
    }
    report["comparability"] = comparability_key(report)  # what a leaderboard may put in one table
    save_table(run_folder, table)
    write_metrics(run_folder, report)
    return report


def undefined_reasons(table: SampleTable, metrics: dict, protocol: Protocol = Protocol()) -> dict[str, str]:
    """Why each metric that was attempted has no value (an AUROC needs both classes among the samples, a
    correlation two distinct values, CMIG every term), for the console and metrics.json."""
    reasons: dict[str, str] = {}
    n = len(table)
    for name, entry in metrics.items():
        if entry.get("value") is not None:
            continue
        if name == "race_auroc":
            present = sorted({table.race_classes[r] for r in table.race if r >= 0})
            reason = (f"one-vs-rest AUROC needs samples of every group {list(table.race_classes)}; the {n} samples "
                      f"have only {present}")
        elif name == "sex_auroc":
            present = sorted({"M" if v == 1.0 else "F" for v in table.sex_male if v == v})
            reason = f"AUROC needs both sexes; the {n} samples have only {present}"
        elif name == "age_pearson":
            reason = f"Pearson r needs at least two distinct ages and predictions among the {n} samples"
        elif name.startswith(("pathology_auroc/", "f1/")):
            reason = (f"the {n} samples' target labels of {name.split('/', 1)[1]} (after the label policy) "
                      "are all one class, or all excluded")
        elif name in ("pathology_mean_auroc", "f1_macro"):
            prefix = "pathology_auroc/" if name == "pathology_mean_auroc" else "f1/"
            bad = [k.split("/", 1)[1] for k, e in metrics.items() if k.startswith(prefix) and e.get("value") is None]
            reason = f"the mean over findings is undefined because these are: {bad}"
        elif name == "cmig":
            terms = [*protocol.accuracy_terms, *protocol.retention_terms]
            if "race_auroc" in terms and "race_auroc" not in metrics:  # sex AUROC stands in (data without race)
                terms = ["sex_auroc" if term == "race_auroc" else term for term in terms]
            bad = [k for k in terms if k in metrics and metrics[k].get("value") is None]
            reason = f"a CMIG term is undefined: {bad}"
        else:
            reason = f"undefined on these {n} samples"
        reasons[name] = reason
    return reasons


def _overlapping_outputs(evaluators: list[Evaluator]) -> list[str]:
    seen: set[str] = set()
    overlap = []
    for evaluator in evaluators:
        overlap += [key for key in evaluator.outputs if key in seen]
        seen.update(evaluator.outputs)
    return overlap
