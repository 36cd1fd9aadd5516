"""Memorisation: is an output closer to a training image than it should be?

A bounded index over the training split is built once per (training images, evaluator, resolution) and cached
in cfbench's cache folder (``<cache>/memorisation-index/<key>.npz``, the key a SHA-256 of what it was built
from, stored inside and compared on every load: a stale or foreign file is rebuilt, never trusted). It holds,
per training image, the evaluator's feature vector (float32, d) and a ``THUMBNAIL`` x ``THUMBNAIL`` pixel
thumbnail (float32 in [0, 1], antialiased), at most ``MAX_TRAINING_IMAGES`` images (a deterministic subset by
the images' names when the split has more).

The training images: the dataset's own ``train`` split (the past and current images of its rows, by file), else on
phantom data without one the phantom training stream the shipped generator learnt from (pairs
``derive_seed(0, index)``, both time points, ``PHANTOM_TRAINING_PAIRS`` pairs). Elsewhere the measures are skipped
with the reason. Key parts: instructions.csv's SHA-256 and each image's name, size and mtime (or the phantom
version and pair count), the evaluator's identity, the resolution, the thumbnail side and ``INDEX_FORMAT``.

Per output g with input x (the prior image), in feature space (Euclidean, evaluator features) and in pixel space
(RMS difference of thumbnails), with NN(.) the nearest training image:

- ``nn_ratio_features`` / ``nn_ratio_pixels``: d(g, NN(g)) / d(x, NN(x)), the output's distance to the training
  set over its input's: about 1 for an edit that stays as far from the training images as its input; near 0
  for an output that is (nearly) a training image.
- ``closer_to_train_features`` / ``closer_to_train_pixels``: 1 when d(g, NN(g)) < d(g, x), else 0; the mean is
  the fraction of outputs closer to a training image than to their own input.

Per-sample values join the table's pixel measures (bootstrap intervals of the mean); ``memorisation.json`` in
the run folder names each output's nearest training images, and ``memorisation/`` holds the nearest training
image of the ``WORST_CASES`` outputs with the smallest feature ratio, for the gallery.

Blind spots: a copy of a training image outside the index bound, of another patient's image under a small
deformation the features ignore, or of a training image's region (a patch) is not caught; on real data the
train split may hold other studies of the same patient only if the splits are not patient-disjoint (MIMIC's are).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from cfbench.api.evaluator import Evaluator, check_outputs
from cfbench.core.hashing import file_sha256
from cfbench.core.images import ImageReadError, resize, save_png16
from cfbench.core.storage import atomic_write_bytes, atomic_write_json
from cfbench.datasets.edit_dataset import DatasetError, EditDataset

MEMORISATION_METRICS = ("nn_ratio_features", "nn_ratio_pixels", "closer_to_train_features", "closer_to_train_pixels")
MAX_TRAINING_IMAGES = 20000
PHANTOM_TRAINING_PAIRS = 200
THUMBNAIL = 32
INDEX_FORMAT = 1
WORST_CASES = 8
MEMORISATION_FILE = "memorisation.json"
MEMORISATION_FOLDER = "memorisation"
logger = logging.getLogger(__name__)


@dataclass
class TrainingImages:
    """Images to index: ``names[i]`` is loaded by ``load(i)`` as float32 HxW in [0, 1] at the resolution;
    ``key``: what identifies the set (JSON-ready)."""

    names: list[str]
    load: Callable[[int], np.ndarray]
    key: dict
    source: str


def dataset_training_images(dataset: EditDataset, max_images: int = MAX_TRAINING_IMAGES) -> TrainingImages | None:
    """The past and current images of the dataset folder's ``train`` split (None: it has none)."""
    try:
        train = EditDataset(dataset.root, "train", dataset.resolution)
    except DatasetError:
        return None
    paths: dict[str, Path] = {}
    for sample in train:
        for folder, stem in (("past", sample.past_dicom_id), ("current", sample.current_dicom_id)):
            try:
                paths.setdefault(f"{folder}/{stem}", train.image_path(folder, stem, sample))
            except (ImageReadError, OSError, DatasetError) as error:
                logger.warning("training image %s/%s left out of the memorisation index: %s", folder, stem, error)
    names = sorted(paths, key=lambda name: hashlib.sha256(name.encode()).hexdigest())[:max_images]
    names.sort()
    files = [(name, paths[name].stat().st_size, paths[name].stat().st_mtime_ns) for name in names]
    from cfbench.core.images import load_image

    return TrainingImages(names, lambda i: load_image(paths[names[i]], dataset.resolution),
                          {"csv_sha256": file_sha256(train.csv_path), "files": files},
                          f"train split of {dataset.root} ({len(names)} of {len(paths)} images)")


def phantom_training_images(resolution: int, n_pairs: int | None = None) -> TrainingImages:
    """Both time points of the first ``n_pairs`` (default ``PHANTOM_TRAINING_PAIRS``) pairs of the phantom
    training stream."""
    n_pairs = PHANTOM_TRAINING_PAIRS if n_pairs is None else n_pairs
    from cfbench.core.seeds import derive_seed
    from cfbench.phantom.pseudo_masks import TRAIN_DATASET_SEED
    from cfbench.phantom.render import render_pair
    from cfbench.phantom.scenario import PHANTOM_VERSION, sample_pair

    names = [f"train-stream/{index}/{time}" for index in range(n_pairs) for time in ("past", "current")]

    def load(i: int) -> np.ndarray:
        rendered = render_pair(sample_pair(derive_seed(TRAIN_DATASET_SEED, i // 2)), resolution)
        return rendered.past if i % 2 == 0 else rendered.current

    return TrainingImages(names, load, {"phantom_version": PHANTOM_VERSION, "pairs": n_pairs},
                          f"phantom training stream, {n_pairs} pairs")


def default_training_images(dataset: EditDataset) -> TrainingImages | None:
    images = dataset_training_images(dataset)
    if images is None and dataset.info.get("kind") == "phantom":
        images = phantom_training_images(dataset.resolution)
    return images


def thumbnail(image: np.ndarray, side: int = THUMBNAIL) -> np.ndarray:
    """float32 (side * side,) of an HxW image in [0, 1]."""
    return resize(np.asarray(image, np.float32), side).reshape(-1)


@dataclass
class MemorisationIndex:
    names: list[str]
    features: np.ndarray  # (M, d) float32, or (M, 0) without an evaluator
    thumbnails: np.ndarray  # (M, THUMBNAIL^2) float32
    source: str


def index_key(images: TrainingImages, evaluator: Evaluator | None, resolution: int) -> str:
    description = {"images": images.key, "evaluator": evaluator.identity() if evaluator else None,
                   "resolution": resolution, "thumbnail": THUMBNAIL, "format": INDEX_FORMAT}
    return hashlib.sha256(json.dumps(description, sort_keys=True, default=str).encode()).hexdigest()


def build_index(images: TrainingImages, evaluator: Evaluator | None, batch_size: int = 16) -> MemorisationIndex:
    features, thumbnails = [], []
    for start in range(0, len(images.names), batch_size):
        batch = np.stack([images.load(i) for i in range(start, min(start + batch_size, len(images.names)))])
        thumbnails += [thumbnail(image) for image in batch]
        if evaluator is not None:
            features.append(check_outputs(evaluator.predict(batch), evaluator, len(batch))["features"])
    features = (np.concatenate(features).astype(np.float32) if features
                else np.zeros((len(images.names), 0), np.float32))
    return MemorisationIndex(list(images.names), features, np.stack(thumbnails).astype(np.float32), images.source)


def cached_index(cache_dir: Path, images: TrainingImages, evaluator: Evaluator | None,
                 resolution: int) -> MemorisationIndex:
    """The index from ``<cache_dir>/memorisation-index/<key>.npz`` when its stored key and shapes check out,
    else built and written there (atomically)."""
    key = index_key(images, evaluator, resolution)
    path = Path(cache_dir) / "memorisation-index" / f"{key[:24]}.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as archive:
                index = MemorisationIndex([str(n) for n in archive["names"]], archive["features"],
                                          archive["thumbnails"], str(archive["source"]))
                stored_key = str(archive["key"])
            if (stored_key == key and index.names == list(images.names)
                    and len(index.features) == len(index.thumbnails) == len(index.names)):
                return index
            logger.warning("memorisation index %s does not match its key; rebuilding", path)
        except (OSError, ValueError, KeyError) as error:
            logger.warning("memorisation index %s unreadable (%s); rebuilding", path, error)
    index = build_index(images, evaluator)
    buffer = io.BytesIO()
    np.savez(buffer, names=np.array(index.names), features=index.features, thumbnails=index.thumbnails,
             source=np.array(index.source), key=np.array(key))
    atomic_write_bytes(path, buffer.getvalue())
    return index


def nearest(queries: np.ndarray, rows: np.ndarray, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """(index, Euclidean distance) of each query row's nearest row, in float64, by chunks of queries."""
    rows64 = np.asarray(rows, np.float64)
    norms = (rows64 ** 2).sum(axis=1)
    found, distances = [], []
    for start in range(0, len(queries), chunk):
        block = np.asarray(queries[start:start + chunk], np.float64)
        squared = (block ** 2).sum(axis=1)[:, None] + norms[None] - 2.0 * block @ rows64.T
        best = squared.argmin(axis=1)
        found.append(best)
        distances.append(np.sqrt(np.clip(squared[np.arange(len(block)), best], 0.0, None)))
    return np.concatenate(found), np.concatenate(distances)


def memorisation_measures(index: MemorisationIndex, outputs: dict[str, np.ndarray],
                          inputs: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict]:
    """Per-sample measures (module docstring) from ``{"features": (N, d), "thumbnails": (N, t^2)}`` of the outputs
    and of their inputs; (values by metric name, per-sample nearest training images)."""
    values, nearest_names = {}, {}
    for space, column, scale in (("features", "features", 1.0), ("pixels", "thumbnails", 1.0 / THUMBNAIL)):
        rows = index.features if column == "features" else index.thumbnails
        if column not in outputs or rows.shape[1] == 0:
            continue
        found, to_train = nearest(outputs[column], rows)
        _, input_to_train = nearest(inputs[column], rows)
        to_input = np.linalg.norm(np.asarray(outputs[column], np.float64) - np.asarray(inputs[column], np.float64),
                                  axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(input_to_train > 0, to_train / input_to_train, math.nan)
        values[f"nn_ratio_{space}"] = ratio
        values[f"closer_to_train_{space}"] = (to_train < to_input).astype(np.float64)
        nearest_names[space] = {"names": [index.names[i] for i in found], "distance": (to_train * scale).tolist(),
                                "distance_to_input": (to_input * scale).tolist()}
    return values, nearest_names


def write_memorisation(run_folder: Path, sample_ids: list[str], values: dict[str, np.ndarray], nearest_names: dict,
                       index: MemorisationIndex, images: TrainingImages, worst: int = WORST_CASES) -> dict:
    """memorisation.json and the nearest training images of the worst cases (``memorisation/<sample>.png``)."""
    ratio = values.get("nn_ratio_features", values.get("nn_ratio_pixels"))
    space = "features" if "nn_ratio_features" in values else "pixels"
    order = [int(i) for i in np.argsort(np.where(np.isnan(ratio), np.inf, ratio))[:worst] if np.isfinite(ratio[i])]
    position = {name: i for i, name in enumerate(images.names)}
    worst_cases = []
    for i in order:
        name = nearest_names[space]["names"][i]
        save_png16(Path(run_folder) / MEMORISATION_FOLDER / f"{sample_ids[i]}.png", images.load(position[name]))
        worst_cases.append({"sample_id": sample_ids[i], "nearest_training_image": name,
                            f"nn_ratio_{space}": float(ratio[i]),
                            "image": f"{MEMORISATION_FOLDER}/{sample_ids[i]}.png"})
    record = {"source": index.source, "n_index": len(index.names), "ranked_by": f"nn_ratio_{space}",
              "worst_cases": worst_cases,
              "per_sample": {space_name: dict(zip(sample_ids, zip(*entry.values())))
                             for space_name, entry in nearest_names.items()},
              "per_sample_columns": ["nearest_training_image", "distance", "distance_to_input"]}
    atomic_write_json(Path(run_folder) / MEMORISATION_FILE, record)
    return {"source": index.source, "n_index": len(index.names), "worst_cases": worst_cases}


def run_memorisation(run_folder: Path, dataset: EditDataset, sample_ids: list[str], generated_features,
                     evaluators: list[Evaluator], cache_dir: Path, batch_size: int = 16
                     ) -> tuple[dict[str, np.ndarray], dict]:
    """The per-sample memorisation measures of a run's table and what was compared ({} and a reason when the
    dataset has no training images). ``generated_features``: the table's (N, d) evaluator features or None."""
    from cfbench.evaluation.output_cache import EvaluatorOutputCache
    from cfbench.runs.store import load_generated

    images = default_training_images(dataset)
    if images is None or not images.names:
        return {}, {"skipped": f"{dataset.root} has no train split (and is not phantom data): no training images "
                               "to compare the outputs with"}
    evaluator = next((e for e in evaluators if "features" in e.outputs), None) if generated_features is not None \
        else None
    index = cached_index(cache_dir, images, evaluator, dataset.resolution)
    by_id = {sample.sample_id: sample for sample in dataset}
    outputs = {"thumbnails": np.stack([thumbnail(load_generated(run_folder, sample_id, dataset.resolution))
                                       for sample_id in sample_ids])}
    past = [by_id[sample_id] for sample_id in sample_ids]
    inputs = {"thumbnails": np.empty((len(past), THUMBNAIL * THUMBNAIL), np.float32)}
    if evaluator is not None:
        outputs["features"] = generated_features
        inputs["features"] = np.empty((len(past), generated_features.shape[1]), np.float32)
        cache = EvaluatorOutputCache(cache_dir, evaluator, dataset.resolution)
    for start in range(0, len(past), batch_size):
        batch = past[start:start + batch_size]
        pictures = np.stack([dataset.past_image(sample) for sample in batch])
        inputs["thumbnails"][start:start + len(batch)] = [thumbnail(picture) for picture in pictures]
        if evaluator is not None:  # the inputs' features through the evaluator-output cache, keyed on content
            digests = [file_sha256(dataset.image_path("past", s.past_dicom_id, s)) for s in batch]
            rows = cache.fill(digests, pictures)
            inputs["features"][start:start + len(batch)] = np.stack([row["features"] for row in rows])
    values, nearest_names = memorisation_measures(index, outputs, inputs)
    info = write_memorisation(run_folder, sample_ids, values, nearest_names, index, images)
    info["spaces"] = sorted(nearest_names)
    return values, info
