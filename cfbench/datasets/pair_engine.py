"""Turning longitudinal image pairs into dataset images: read, resize, register, write. Parallel and resumable.

Shared by the dataset builders (MIMIC-EDIT-INSTRUCTION, NIH). A builder plans :class:`PairJob` objects
(where the two source images are and which file stems they get in ``past/`` and ``current/``);
:func:`process_pairs` runs them over worker processes and records one :class:`PairOutcome` per pair in
``build/pairs.jsonl`` inside the output folder (fsynced line by line). Running it again skips pairs
already written, so an interrupted build resumes where it stopped; pairs that failed (a missing or
unreadable image) are logged with the path and tried again on the next run.

Each worker writes its own images (16-bit PNG, atomically) and sends back only the outcome. The prior
image is only resized; the follow-up is registered onto it (:mod:`cfbench.datasets.registration`) and a pair whose
Mattes mutual information is above the threshold is discarded (its MI is still recorded, so a later run
with a looser threshold redoes exactly those pairs).
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Iterator

from tqdm.auto import tqdm

from cfbench.core.images import ImageReadError, load_image, save_png16
from cfbench.core.storage import atomic_write_json, JsonlLedger, read_jsonl, remove_stale_temporaries
from cfbench.datasets.card import write_dataset_card
from cfbench.datasets.edit_dataset import DatasetWriter, is_plain_name, Sample
from cfbench.datasets.registration import MI_THRESHOLD, register_pair

log = logging.getLogger(__name__)

LEDGER = Path("build") / "pairs.jsonl"
SETTINGS = Path("build") / "settings.json"
WRITTEN, DISCARDED, FAILED = "written", "discarded", "failed"


@dataclass(frozen=True)
class PairJob:
    """One pair to turn into dataset images. ``past_stem`` / ``current_stem`` name the output files
    ``past/{past_stem}.png`` and ``current/{current_stem}.png``."""

    pair_id: str
    past_source: str
    current_source: str
    past_stem: str
    current_stem: str


@dataclass(frozen=True)
class PairOutcome:
    """What happened to one pair. ``status``: written / discarded (MI above the threshold) / failed
    (``error`` names the file). Registration fields are None when registration was off or failed;
    ``angle_deg`` in degrees, ``translation_x/y`` in pixels at the output size."""

    pair_id: str
    status: str
    mutual_information: float | None = None
    angle_deg: float | None = None
    scale: float | None = None
    translation_x: float | None = None
    translation_y: float | None = None
    error: str | None = None


@dataclass(frozen=True)
class PairSettings:
    """resolution: output image side in pixels (the benchmark resolution); register: align the follow-up onto the prior; mi_threshold: discard
    pairs with Mattes MI above it (the paper's -0.88)."""

    resolution: int = 512
    register: bool = True
    mi_threshold: float = MI_THRESHOLD


def process_pair(job: PairJob, out: Path, settings: PairSettings) -> PairOutcome:
    """Read, resize, register and write one pair (runs in a worker process)."""
    unsafe = [stem for stem in (job.past_stem, job.current_stem) if not is_plain_name(stem)]
    if unsafe:  # an id from a metadata file must not lead a write outside the output folder
        return PairOutcome(job.pair_id, FAILED, error=f"image id {unsafe[0]!r} is not a plain file name")
    try:
        past = load_image(job.past_source, settings.resolution)
        current = load_image(job.current_source, settings.resolution)
    except (ImageReadError, OSError) as error:
        return PairOutcome(job.pair_id, FAILED, error=str(error))
    registration = {}
    if settings.register:
        try:
            result = register_pair(past, current)
        except RuntimeError as error:  # ITK refuses e.g. a blank image: this pair fails, the build goes on
            detail = str(error).strip().splitlines()[-1]
            return PairOutcome(job.pair_id, FAILED, error=f"registering {job.current_source} onto "
                                                          f"{job.past_source} failed: {detail}")
        registration = dict(mutual_information=result.mutual_information, angle_deg=result.angle_deg,
                            scale=result.scale, translation_x=result.translation[0],
                            translation_y=result.translation[1])
        if result.mutual_information > settings.mi_threshold:
            return PairOutcome(job.pair_id, DISCARDED, **registration)
        current = result.registered
    past_path = out / "past" / f"{job.past_stem}.png"
    if not past_path.exists():  # a prior shared by several pairs is written once (identical bytes anyway)
        save_png16(past_path, past)
    save_png16(out / "current" / f"{job.current_stem}.png", current)
    return PairOutcome(job.pair_id, WRITTEN, **registration)


def read_outcomes(out: str | Path) -> dict[str, PairOutcome]:
    """The latest recorded outcome of every pair in ``out/build/pairs.jsonl`` (empty when none)."""
    path = Path(out) / LEDGER
    if not path.is_file():
        return {}
    return {record["pair_id"]: PairOutcome(**record) for record in read_jsonl(path)}


def is_finished(outcome: PairOutcome | None, settings: PairSettings) -> bool:
    """Written, or discarded under a threshold at least as strict as the current one."""
    if outcome is None or outcome.status == FAILED:
        return False
    if outcome.status == DISCARDED:
        return outcome.mutual_information is not None and outcome.mutual_information > settings.mi_threshold
    return True


def _init_worker(itk_threads: int) -> None:
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(itk_threads)


def _run(jobs: list[PairJob], out: Path, settings: PairSettings, workers: int,
         itk_threads: int | None) -> Iterator[PairOutcome]:
    itk_threads = itk_threads or max(1, (os.cpu_count() or 1) // workers)
    if workers == 1:
        _init_worker(itk_threads)
        for job in jobs:
            yield process_pair(job, out, settings)
        return
    context = multiprocessing.get_context("spawn")  # no fork after torch/ITK threads have started
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker,
                             initargs=(itk_threads,)) as pool:
        futures = [pool.submit(process_pair, job, out, settings) for job in jobs]
        for future in as_completed(futures):
            yield future.result()


def process_pairs(jobs: Iterable[PairJob], out: str | Path, settings: PairSettings = PairSettings(),
                  workers: int = 1, progress: bool = True, itk_threads: int | None = None) -> dict[str, PairOutcome]:
    """Run every unfinished job over ``workers`` processes; returns the outcome of every job (earlier runs'
    included). ``itk_threads``: SimpleITK threads per worker (default: cores / workers)."""
    out = Path(out)
    jobs = list(jobs)
    remove_stale_temporaries(out)  # left by a build killed mid-write
    _check_settings(out, settings)
    done = read_outcomes(out)
    todo = [job for job in jobs if not is_finished(done.get(job.pair_id), settings)]
    if len(todo) < len(jobs):
        log.info("resuming: %d of %d pairs already finished", len(jobs) - len(todo), len(jobs))
    with JsonlLedger(out / LEDGER) as ledger:
        bar = tqdm(total=len(todo), desc="pairs", unit="pair", disable=not progress)
        for outcome in _run(todo, out, settings, max(1, workers), itk_threads):
            ledger.append(asdict(outcome))
            done[outcome.pair_id] = outcome
            if outcome.status == FAILED:
                log.warning("pair %s failed: %s", outcome.pair_id, outcome.error)
            bar.update(1)
        bar.close()
    wanted = {job.pair_id for job in jobs}
    return {pair_id: outcome for pair_id, outcome in done.items() if pair_id in wanted}


def _check_settings(out: Path, settings: PairSettings) -> None:
    """Refuse to resume into a folder built at another resolution or registration setting (the threshold may
    change: it only decides which recorded pairs are kept)."""
    path = out / SETTINGS
    fixed = {"resolution": settings.resolution, "register": settings.register}
    if path.is_file():
        previous = json.loads(path.read_text())
        if "size" in previous and "resolution" not in previous:  # folders built before the key was renamed
            previous["resolution"] = previous.pop("size")
        differ = {key: (previous.get(key), value) for key, value in fixed.items() if previous.get(key) != value}
        if differ:
            detail = ", ".join(f"{key}: {old!r} before, {new!r} now" for key, (old, new) in differ.items())
            raise ValueError(f"{out} was built with other settings ({detail}); build into a new --out folder "
                             "or delete it")
    else:
        atomic_write_json(path, fixed)


def kept(outcome: PairOutcome | None, settings: PairSettings) -> bool:
    """Whether a pair goes into the dataset: written and, when registered, MI at or below the threshold."""
    if outcome is None or outcome.status != WRITTEN:
        return False
    return outcome.mutual_information is None or outcome.mutual_information <= settings.mi_threshold


def write_dataset(out: str | Path, samples: list[Sample], outcomes: dict[str, PairOutcome], settings: PairSettings,
                  info: dict, title: str) -> dict:
    """Write ``instructions.csv`` (the kept samples, in plan order, with a ``registration_mi`` column),
    ``dataset.json`` (``info`` plus the funnel and the failed pairs) and the dataset card. ``info["funnel"]``
    (reason -> pairs) is extended with what happened to the images; returns the final info."""
    writer = DatasetWriter(out)
    funnel = dict(info.get("funnel", {}))
    failed = []
    for sample in samples:
        outcome = outcomes.get(sample.sample_id)
        if kept(outcome, settings):
            writer.add_row(sample, {"registration_mi": outcome.mutual_information})
            reason = "written"
        elif outcome is not None and outcome.status == FAILED:
            reason = "failed: missing or unreadable image"
            failed.append(f"{sample.sample_id}: {outcome.error}")
        else:
            reason = f"discarded: registration MI > {settings.mi_threshold}"
        funnel[reason] = funnel.get(reason, 0) + 1
    info = {**info, "resolution": settings.resolution, "registered": settings.register, "mi_threshold": settings.mi_threshold,
            "funnel": funnel, "failed": failed, "pairs": len(samples), "written": funnel.get("written", 0)}
    writer.close(info=info)
    write_dataset_card(out, title, info, registration_outcomes=outcomes)
    return info
