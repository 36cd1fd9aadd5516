"""Phantom datasets: rendered longitudinal pairs written in the MIMIC-EDIT-INSTRUCTION layout.

``build_phantom_dataset`` writes n pairs (one patient each, so splits are patient-wise) with the exact
counterfactual and lesion-change mask of every sample. ``demo_dataset`` builds the small ``demo`` split
once and caches it, keyed on the phantom version, resolution and count.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from cfbench.core.seeds import derive_seed
from cfbench.core.storage import process_alive
from cfbench.datasets.edit_dataset import CSV_NAME, DatasetWriter, Sample
from cfbench.datasets.layout import BENCHMARK_SETTINGS_KEY
from cfbench.phantom.render import RenderedPair, render_pair
from cfbench.phantom.pseudo_masks import write_dataset_pseudo_masks
from cfbench.phantom.scenario import DEMO_RESOLUTION, DEMO_STEPS, PHANTOM_VERSION, PhantomPair, sample_pair

SPLIT_FRACTIONS: dict[str, float] = {"train": 0.70, "holdout": 0.20, "test": 0.05, "val": 0.05}
DEMO_BENCHMARK_SETTINGS = {"resolution": DEMO_RESOLUTION, "steps": DEMO_STEPS}
"""What the demo split's dataset.json fixes (``benchmark_settings``): `cfbench run --split demo` uses them."""
DEMO_SIZE = 48


def pair_seed(dataset_seed: int, index: int) -> int:
    """The seed of pair ``index`` of a dataset: independent streams per (dataset seed, index)."""
    return derive_seed(dataset_seed, index)


def assign_splits(n: int, fractions: dict[str, float], seed: int) -> list[str]:
    """A split name per index: shuffled with ``seed``, then cut by the fractions (rounded, remainder to
    the first split), so small datasets still get every split with a non-zero fraction when n allows."""
    counts = {name: int(round(n * fraction)) for name, fraction in fractions.items()}
    first = next(iter(fractions))
    counts[first] += n - sum(counts.values())
    labels = [name for name, count in counts.items() for _ in range(count)]
    order = np.random.default_rng(seed).permutation(n)
    assigned = [""] * n
    for position, index in enumerate(order):
        assigned[index] = labels[position]
    return assigned


# bump when what a dataset holds changes (the cached demo split is rebuilt): 2 = target_report,
# 3 = pseudo_masks.npz (the shipped phantom pseudo masks)
DATASET_FORMAT = 3


def phantom_sample(pair: PhantomPair, index: int, dataset_seed: int, split: str) -> Sample:
    subject = f"ph{dataset_seed}-{index:06d}"
    return Sample(
        sample_id=subject,
        split=split,
        instruction=pair.instruction,
        operations=list(pair.operations),
        past_dicom_id=f"{subject}-past",
        current_dicom_id=f"{subject}-current",
        row=index + 1,
        subject_id=subject,
        labels=pair.current.labels(),
        past_labels=pair.past.labels(),
        age=round(pair.patient.age, 2),
        sex=pair.patient.sex,
        race=pair.patient.group,
        target_report=pair.current.impression(),
    )


def _render_task(task: tuple[int, int]) -> tuple[PhantomPair, RenderedPair]:
    """(pair seed, resolution) -> the sampled pair and its rendering (a worker's job)."""
    pair = sample_pair(task[0])
    return pair, render_pair(pair, task[1])


def build_phantom_dataset(
    out: str | Path,
    n: int,
    seed: int = 0,
    resolution: int = 512,
    fractions: dict[str, float] | None = None,
    progress: bool = True,
    workers: int = 1,
    benchmark_settings: dict | None = None,
) -> Path:
    """Render n phantom pairs into ``out`` (dataset layout with counterfactual/ and lesion_mask/).

    workers: rendering processes (1: in this process); the output does not depend on it."""
    if n < 1:
        raise ValueError("a phantom dataset needs n >= 1")
    fractions = fractions or SPLIT_FRACTIONS
    splits = assign_splits(n, fractions, seed)
    writer = DatasetWriter(out)
    tasks = [(pair_seed(seed, index), resolution) for index in range(n)]
    with contextlib.ExitStack() as stack:
        if workers > 1 and n > 1:
            pool = stack.enter_context(multiprocessing.get_context("spawn").Pool(workers))
            results = pool.imap(_render_task, tasks, chunksize=8)
        else:
            results = map(_render_task, tasks)
        for index, (pair, rendered) in enumerate(tqdm(results, total=n, desc="rendering phantoms", unit="pair",
                                                      disable=not progress)):
            writer.add(
                phantom_sample(pair, index, seed, splits[index]),
                past=rendered.past,
                current=rendered.current,
                counterfactual=rendered.counterfactual,
                lesion_mask=rendered.lesion_change_mask,
            )
    counts = {name: splits.count(name) for name in fractions}
    write_dataset_pseudo_masks(out)  # what pseudo_masks=auto reads, as MS-CXR masks in a MIMIC build
    writer.close(
        info={"kind": "phantom", "phantom_version": PHANTOM_VERSION, "n": n, "seed": seed, "resolution": resolution,
              "split_counts": counts, "pseudo_masks": "pseudo_masks.npz: union of true lesion masks of the "
                                                      "phantom training stream (cfbench phantom pseudo-masks)",
              **({BENCHMARK_SETTINGS_KEY: benchmark_settings} if benchmark_settings else {})}
    )
    return Path(out)


def _remove_dead_builds(cache_dir: Path) -> None:
    """Remove ``.building-demo-{pid}-*`` folders whose process is gone (a build killed mid-way)."""
    for folder in cache_dir.glob(".building-demo-*"):
        pid = folder.name.removeprefix(".building-demo-").split("-")[0]
        if folder.is_dir() and (not pid.isdigit() or not process_alive(int(pid))):
            shutil.rmtree(folder, ignore_errors=True)


def demo_dataset(cache_dir: str | Path, resolution: int = 512, progress: bool = True) -> Path:
    """The cached demo dataset (split ``demo``), built on first use (see :func:`cached_phantom_dataset`)."""
    return cached_phantom_dataset(cache_dir, "demo", DEMO_SIZE, 20261123, resolution, progress)


def cached_phantom_dataset(cache_dir: str | Path, split: str, n: int, seed: int, resolution: int,
                           progress: bool = True) -> Path:
    """A cached phantom dataset of n pairs, all in ``split``, keyed on the phantom version, split, count, seed
    and resolution; built on first use in a temporary folder and renamed into place, so concurrent first uses
    are safe."""
    cache_dir = Path(cache_dir)
    name = f"{split}-phantom-v{PHANTOM_VERSION}.{DATASET_FORMAT}-n{n}-r{resolution}"
    folder = cache_dir / (name if (split, seed) == ("demo", 20261123) else f"{name}-seed{seed}")
    if (folder / CSV_NAME).is_file():
        return folder
    cache_dir.mkdir(parents=True, exist_ok=True)
    _remove_dead_builds(cache_dir)
    building = Path(tempfile.mkdtemp(dir=cache_dir, prefix=f".building-demo-{os.getpid()}-"))
    try:
        settings = {**DEMO_BENCHMARK_SETTINGS, "resolution": resolution} if split == "demo" else None
        build_phantom_dataset(building, n, seed=seed, resolution=resolution, fractions={split: 1.0},
                              progress=progress, benchmark_settings=settings)
        try:
            os.rename(building, folder)
        except OSError:
            if not (folder / CSV_NAME).is_file():  # not another process winning the race
                raise
    finally:
        if building.exists():
            shutil.rmtree(building, ignore_errors=True)
    return folder
