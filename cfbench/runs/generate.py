"""Generation: split -> model.edit -> run store.

``generate`` walks a split in batches, hands each batch to the model, validates every result and
writes it to the run folder. Re-running with the same config resumes: finished samples are skipped.
A sample whose image cannot be read, or whose result breaks the contract, is recorded as failed with
a message naming model and sample; the other samples go on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from tqdm.auto import tqdm

from cfbench.api.model import (
    DEFAULT_RESOLUTION,
    CounterfactualModel,
    EditRequest,
    LoadContext,
    ResultValidationError,
    validate_result,
)
from cfbench.api.registry import get_model_class
from cfbench.core.hashing import file_sha256
from cfbench.core.images import PNG_COMPRESSION, ImageReadError
from cfbench.core.prefetch import prefetched
from cfbench.core.process_state import kept_process_state
from cfbench.core.provenance import package_versions
from cfbench.core.seeds import derive_seed
from cfbench.core.storage import json_safe
from cfbench.datasets.edit_dataset import EditDataset, Sample
from cfbench.runs.batching import resolve_batch_size
from cfbench.runs.manifest import RunConfig, RunSession
from cfbench.runs.store import RunStore, Shard, UnstorableRecord, check_out_folder


@dataclass
class RunSettings:
    """Everything ``cfbench generate`` needs. Only the fields of :func:`run_config` decide whether an
    existing run folder may be resumed; batch size, device, limit and shard may change between sessions.
    ``shard``: this process generates only its part of the split (see :class:`cfbench.runs.store.Shard`).
    ``sample_timeout``: seconds one model call may take before its samples are recorded as failed (None: no
    limit). ``strict``: refuse a dataset with bad rows instead of leaving those rows out. ``region_masks``:
    "none" (``EditRequest.region_mask`` is None; adapters that need a region use their own), or "pseudo": each
    request carries the pseudo mask of its instruction's findings (the dataset's ``pseudo_masks.npz``, e.g.
    MS-CXR boxes, else the NIH ChestX-ray14 box unions), recorded in the run config."""

    model: str
    split: str
    data_dir: Path
    out: Path
    model_path: Path | None = None
    resolution: int = DEFAULT_RESOLUTION
    seed: int = 0
    limit: int | None = None
    batch_size: int | str = 1  # or "auto": cfbench.runs.batching picks it per device and model
    device: str = "cpu"
    options: dict[str, str] = field(default_factory=dict)
    shard: Shard | None = None
    sample_timeout: float | None = None
    strict: bool = False
    png_compression: int = PNG_COMPRESSION
    region_masks: str = "none"


@dataclass
class GenerateReport:
    total: int          # samples in scope (split, after --limit, this shard's part)
    already_done: int   # finished in earlier sessions
    generated: int      # finished in this session
    failed: list[str]   # "sample: error" for samples that failed in this session
    seconds: float
    run_folder: Path


def sample_seed(run_seed: int, sample_id: str) -> int:
    """The seed of one sample: a function of the run seed and the sample id only, so results do not
    depend on batch size, order or resumption."""
    return derive_seed(run_seed, sample_id)


def build_model(settings: RunSettings, dataset: EditDataset) -> CounterfactualModel:
    model_class = get_model_class(settings.model)
    context = LoadContext(
        model_path=None if settings.model_path is None else Path(settings.model_path).absolute(),
        device=settings.device,
        dataset=dataset,
        options=dict(settings.options),
    )
    with kept_process_state(f"model {settings.model!r} (load)"):
        return model_class.load(context)


def absolute_paths(settings: RunSettings) -> RunSettings:
    """``settings`` with the dataset and run folders absolute, fixed before any model code runs (a model that
    changes the working directory cannot divert the run's writes). The model path stays as given, since it is
    part of the run's config; the model receives it absolute (:func:`build_model`)."""
    return dataclasses.replace(settings, data_dir=Path(settings.data_dir).absolute(), out=Path(settings.out).absolute())


def run_config(settings: RunSettings, dataset: EditDataset, model: CounterfactualModel) -> RunConfig:
    """What identifies the run (an existing folder is resumed only with an equal config)."""
    return RunConfig(
        model=settings.model,
        model_path=str(settings.model_path) if settings.model_path else None,
        weights=model.identity(),
        split=settings.split,
        dataset_csv_sha256=file_sha256(dataset.csv_path),
        resolution=settings.resolution,
        seed=settings.seed,
        options=dict(sorted(settings.options.items())),
        region_masks=None if settings.region_masks == "none" else settings.region_masks,
    )


def generate(
    settings: RunSettings,
    dataset: EditDataset | None = None,
    model: CounterfactualModel | None = None,
    progress: bool = True,
) -> GenerateReport:
    """Generate counterfactuals for a split into ``settings.out``, resuming where an earlier session stopped."""
    started = time.perf_counter()
    settings = absolute_paths(settings)
    check_out_folder(settings.out, settings.data_dir)  # before the model loads: a bad --out costs nothing
    dataset = dataset or EditDataset(settings.data_dir, settings.split, settings.resolution, strict=settings.strict)
    model = model or build_model(settings, dataset)
    batch_size, batch_policy = resolve_batch_size(settings.batch_size, model, settings.device)
    runtime = RunSession(
        argv=list(sys.argv),
        data_dir=str(Path(settings.data_dir).resolve()),
        batch_size=batch_size,
        batch_policy=batch_policy,
        device=settings.device,
        limit=settings.limit,
        shard=None if settings.shard is None else [settings.shard.index, settings.shard.count],
        versions=package_versions(),
        started=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        model_class=f"{type(model).__module__}.{type(model).__qualname__}",
        png_compression=settings.png_compression,
    )
    samples = dataset.samples[: settings.limit] if settings.limit else dataset.samples
    if settings.shard is not None:
        samples = [sample for sample in samples if settings.shard.owns(sample.sample_id)]
    failed: list[str] = []
    with RunStore(settings.out, run_config(settings, dataset, model), runtime, shard=settings.shard,
                  png_compression=settings.png_compression) as store:
        store.update_runtime(runtime)
        done = store.finished(among={sample.sample_id for sample in samples})
        todo = [sample for sample in samples if sample.sample_id not in done]
        bar = tqdm(total=len(samples), initial=len(samples) - len(todo), disable=not progress,
                   desc=f"{settings.model} on {settings.split}", unit="sample", file=sys.stderr)
        batches = [todo[start : start + batch_size] for start in range(0, len(todo), batch_size)]
        masks = None
        if settings.region_masks == "pseudo":
            from cfbench.datasets.pseudo_masks import default_pseudo_masks

            masks = default_pseudo_masks(dataset.root, settings.resolution)
        load = functools.partial(_load_requests, dataset=dataset, settings=settings, pseudo_masks=masks)
        for batch, (requests, unreadable) in zip(batches, prefetched(batches, load)):
            failed += _run_batch(requests, unreadable, model, settings, store)
            bar.update(len(batch))
        bar.close()
    return GenerateReport(
        total=len(samples),
        already_done=len(samples) - len(todo),
        generated=len(todo) - len(failed),
        failed=failed,
        seconds=time.perf_counter() - started,
        run_folder=Path(settings.out),
    )


def make_request(sample: Sample, dataset: EditDataset, run_seed: int, pseudo_masks=None) -> EditRequest:
    """The request of one sample; ``pseudo_masks`` (a PseudoMasks): its instruction's region as ``region_mask``."""
    return EditRequest(
        sample_id=sample.sample_id,
        image=dataset.past_image(sample),
        instruction=sample.instruction,
        operations=list(sample.operations),
        target_report=sample.target_report,
        progression=sample.progression,
        region_mask=None if pseudo_masks is None else pseudo_masks.mask_for(sample.operations, dataset.resolution),
        seed=sample_seed(run_seed, sample.sample_id),
    )


def _load_requests(
    batch: Sequence[Sample], dataset: EditDataset, settings: RunSettings, pseudo_masks=None
) -> tuple[list[EditRequest], list[tuple[str, str]]]:
    """The requests of a batch, and (sample id, message) for samples whose input cannot be used (missing,
    corrupt, too large: anything reading it raised); one bad input never stops the batch."""
    requests, unreadable = [], []
    for sample in batch:
        try:
            requests.append(make_request(sample, dataset, settings.seed, pseudo_masks))
        except Exception as error:  # noqa: BLE001 -- named and recorded per sample
            reason = str(error) if isinstance(error, ImageReadError) else f"{type(error).__name__}: {error}"
            unreadable.append((sample.sample_id, f"model {settings.model!r}, sample {sample.sample_id!r}: {reason}"))
    return requests, unreadable


class SampleTimeout(Exception):
    """A model call ran past ``--sample-timeout``."""


@contextlib.contextmanager
def _time_limit(seconds: float | None):
    """Raise SampleTimeout in this (main) thread after ``seconds``; no limit when None or off the main thread
    (a timer signal interrupts Python code, and C code when it returns to Python)."""
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum, frame):
        raise SampleTimeout(f"no result after {seconds:g} s (--sample-timeout)")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _call_model(model: CounterfactualModel, requests: list[EditRequest], settings: RunSettings):
    """``model.edit(requests)`` checked for its result count; a problem is returned as a message, never raised
    (SystemExit from a model included): one bad batch must not end the run. Ctrl-C still stops it."""
    try:
        with _time_limit(settings.sample_timeout), kept_process_state(f"model {settings.model!r}"):
            results = model.edit(requests)
    except KeyboardInterrupt:
        raise
    except BaseException as error:  # noqa: BLE001
        return f"edit() raised {type(error).__name__}: {error}"
    if not isinstance(results, (list, tuple)) or len(results) != len(requests):
        count = len(results) if isinstance(results, (list, tuple)) else type(results).__name__
        return f"edit() returned {count} results for {len(requests)} requests"
    return list(results)


def storable(value, name: str, where: str):
    """A value a model returned (``info``, ``explanation``) as storable JSON (:func:`cfbench.core.storage.json_safe`:
    NumPy numbers and arrays converted, non-finite floats None, lone surrogates replaced, depth, size and
    integers bounded); anything else raises ResultValidationError naming the key."""
    try:
        return json_safe(value, name)
    except (TypeError, RecursionError) as error:
        raise ResultValidationError(f"{where}: {error}") from None


def _run_batch(
    requests: list[EditRequest],
    unreadable: list[tuple[str, str]],
    model: CounterfactualModel,
    settings: RunSettings,
    store: RunStore,
) -> list[str]:
    """Generate and store one batch; returns the messages of the samples that failed. A batch whose model
    call fails is retried one sample at a time, so one bad sample does not fail the others."""
    failed: list[str] = []

    def fail(sample_id: str, message: str) -> None:
        store.fail(sample_id, message)
        failed.append(message)

    for sample_id, message in unreadable:
        fail(sample_id, message)
    if not requests:
        return failed
    tick = time.perf_counter()
    results = _call_model(model, requests, settings)
    if isinstance(results, str):
        if len(requests) > 1:
            for request in requests:
                failed += _run_batch([request], [], model, settings, store)
            return failed
        fail(requests[0].sample_id, f"model {settings.model!r}, sample {requests[0].sample_id!r}: {results}")
        return failed
    seconds = (time.perf_counter() - tick) / len(requests)
    for request, result in zip(requests, results):
        try:
            validate_result(result, request, settings.model)
            where = f"model {settings.model!r}, sample {request.sample_id!r}"
            result.info = storable(result.info, "info", where)
            result.explanation = storable(result.explanation, "explanation", where)
            store.save(request.sample_id, request.seed, result, seconds)
        except (ResultValidationError, UnstorableRecord) as error:
            fail(request.sample_id, str(error))
    return failed
