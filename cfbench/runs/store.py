"""The run folder: everything one model produced on one split, written so that a crash loses nothing.

The files are named in :mod:`cfbench.runs.manifest`. A sample is finished exactly when its line is in a
results ledger; its images are written (atomically) before that line, so a crash at any moment leaves
either a finished sample or one that is redone.

Writes happen off the generation thread: ``RunStore.save`` hands the sample to the writer through a bounded
queue (``write_queue`` samples; a full queue makes ``save`` wait, so memory stays bounded); two image
threads encode the PNGs and write them atomically, and one ledger thread appends each sample's line only
after that sample's images are on disk, in the order the samples were saved. A sample still in the queue when the process is killed has no ledger
line and is generated again on resume; ``close`` (also on an exception) waits for the queue to drain, and
a write error is raised in the generating thread at its next ``save``/``fail`` or at ``close``.

Sharded runs (one process per GPU, :class:`Shard`): every process writes into the same folder, but
each owns its ledgers (``results.shard-K-of-N.jsonl``, ``failures.shard-K-of-N.jsonl``) and its
runtime record (``runtime.shard-K-of-N.json``), so no file is written by two processes (safe on
network file systems too). Readers take the union of all ledgers (:func:`read_results`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import queue
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from cfbench.api.model import EditResult
from cfbench.core.images import PNG_COMPRESSION, check_png_compression, load_image, png_intact, save_png16
from cfbench.core.storage import (DiskFullError, FolderLock, JsonlLedger, LockedError, atomic_write_json, json_line, read_jsonl,
                                  remove_stale_temporaries, valid_text)
from cfbench.runs.manifest import FAILURES_STEM, RESULTS_STEM, RunConfig, RunFiles, RunManifest, RunSession

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Shard:
    """Part ``index`` (0-based) of ``count`` equal parts of a split; a sample belongs to the shard given by
    a hash of its id, so shards are disjoint, cover the split, and do not depend on order or --limit."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            parts = ", ".join(f"{k}/{self.count}" for k in range(min(self.count, 4))) if self.count >= 1 else ""
            more = " ..." if self.count > 4 else ""
            suggestion = f": the {self.count} parts are {parts}{more} (K counts from 0)" if parts else ""
            raise ValueError(f"shard {self.index}/{self.count}: need 0 <= K < N{suggestion}")

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


def read_results(folder: str | Path) -> list[dict]:
    """Every finished sample's record, from the unsharded and all shard ledgers (one record per sample)."""
    records: dict[str, dict] = {}
    for path in RunFiles(Path(folder)).all_ledgers(RESULTS_STEM):
        for record in read_jsonl(path):
            if isinstance(record.get("sample_id"), str) and isinstance(record.get("seed"), int):
                records.setdefault(record["sample_id"], record)
            else:
                logger.warning("%s: a record without sample_id and seed skipped (its sample is generated again)", path)
    return list(records.values())


def read_failures(folder: str | Path) -> list[dict]:
    """Every failed attempt, from the unsharded and all shard ledgers."""
    return [record for path in RunFiles(Path(folder)).all_ledgers(FAILURES_STEM) for record in read_jsonl(path)
            if isinstance(record.get("sample_id"), str)]


class UnstorableRecord(ValueError):
    """A sample's record cannot be written as one JSON line; only that sample fails."""


class RunFolderError(ValueError):
    """``--out`` names something that must not become a run folder (a file, the dataset, a foreign folder)."""


class RunInProgress(RuntimeError):
    """An evaluation asked for a run that a live ``generate`` is still writing (without ``--partial``)."""


OWN_LEFTOVERS = (".lock", ".cfbench-")  # names cfbench leaves in a run folder before its manifest exists


def check_out_folder(out: Path, data_dir: Path) -> None:
    """RunFolderError unless ``out`` may become (or already is) a run folder: a new or empty folder, or one
    holding a manifest.json; never a file, the dataset folder or a folder that contains it, nor a folder of
    other files (run files would be mixed into them). Both paths absolute."""
    out, data_dir = Path(out).resolve(), Path(data_dir).resolve()
    if out.exists() and not out.is_dir():
        raise RunFolderError(f"--out {out} is a file; give a new folder or an existing run folder")
    if out == data_dir or data_dir.is_relative_to(out):
        raise RunFolderError(f"--out {out} is the dataset folder or holds it ({data_dir}); run files would be mixed "
                             "into the dataset: give a folder outside it")
    if out.is_dir() and not RunFiles(out).manifest.is_file():
        foreign = sorted(entry.name for entry in out.iterdir() if not entry.name.startswith(OWN_LEFTOVERS))
        if foreign:
            raise RunFolderError(f"--out {out} is not a cfbench run folder (no manifest.json; it holds "
                                 f"{', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}): give a new folder")


@contextlib.contextmanager
def evaluation_lock(folder: str | Path, partial: bool = False) -> Iterator[None]:
    """Hold a run folder for one evaluation: a second evaluation of it is refused naming the first (LockedError),
    and so is an evaluation while ``generate`` writes it (RunInProgress), unless ``partial`` (then the samples
    finished so far are evaluated). The generation locks are held too, so no ``generate`` starts meanwhile."""
    folder = Path(folder)
    with contextlib.ExitStack() as held:
        held.enter_context(FolderLock(folder / ".lock.eval", f"evaluation of run folder {folder}"))
        for path in [folder / ".lock", *sorted(folder.glob(".lock.shard-*"))]:
            try:
                held.enter_context(FolderLock(path, f"run folder {folder}"))
            except LockedError as error:
                if not partial:
                    raise RunInProgress(f"{error}. It is still being generated: wait for it to finish, or pass "
                                        "--partial to evaluate the samples finished so far") from None
        yield


class RunConfigMismatch(RuntimeError):
    """The run folder was made with a different config; writing into it would mix two runs."""


@dataclass
class FinishedSample:
    sample_id: str
    seed: int
    explanation: str | None
    info: dict
    has_guidance: bool


class _Writer:
    """Image writes on ``IMAGE_WRITERS`` threads (PNG encoding and fsync release the GIL, so they overlap),
    and one thread that runs the ledger appends in submission order, each after its sample's images; fed
    through a bounded queue."""

    IMAGE_WRITERS = 2

    def __init__(self, size: int, name: str) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, size))
        self._error: BaseException | None = None
        self._images = ThreadPoolExecutor(self.IMAGE_WRITERS, thread_name_prefix=f"{name}-images")
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit_sample(self, write_images, append) -> None:
        """``write_images`` on an image thread; ``append`` (the ledger line) in order, only once it is done."""
        self.raise_error()
        written = self._images.submit(write_images)

        def job() -> None:
            written.result()  # raises the image write's error: the line is not written
            append()

        self._queue.put(job)

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            try:
                if job is None:
                    return
                if self._error is None:  # after a failed write nothing more is written: the ledger stays in order
                    job()
            except BaseException as error:  # noqa: BLE001 -- handed to the generating thread
                self._error = error
            finally:
                self._queue.task_done()

    def submit(self, job) -> None:
        self.raise_error()
        self._queue.put(job)

    def drain(self) -> None:
        self._queue.join()
        self.raise_error()

    def raise_error(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            if isinstance(error, DiskFullError):
                raise error  # already one line naming the file and what to do
            raise RuntimeError(f"writing the run folder failed: {error}") from error

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join()
        self._images.shutdown(wait=True)


class RunStore:
    """Open (or create) a run folder for a given config; refuse a folder made with another config.
    With a ``shard``, this process writes only its own ledgers and runtime record (see the module).
    ``png_compression``: zlib level of the image files (0-9; bytes only, never pixels). ``write_queue``:
    samples that may wait for the writer thread (0: write in the calling thread)."""

    def __init__(self, folder: str | Path, config: RunConfig, runtime: RunSession | None = None,
                 shard: Shard | None = None, png_compression: int = PNG_COMPRESSION, write_queue: int = 8):
        self.files = RunFiles(Path(folder).absolute())  # a model's os.chdir cannot move the writes
        self.folder = self.files.folder
        self.config = config
        self.shard = shard
        suffix = shard.suffix if shard else ""
        self._lock = FolderLock(self.folder / f".lock{suffix}",
                                f"run folder {self.folder}" + (f" (shard {shard.index}/{shard.count})" if shard else ""))
        self._lock.acquire()  # one writer per run folder (per shard); a dead holder's lock is taken over
        try:
            remove_stale_temporaries(self.folder)
            if self.files.manifest.is_file():
                existing = RunManifest.read(self.folder)
                if existing.config != config:
                    raise RunConfigMismatch(_describe_mismatch(self.folder, existing.config, config))
                self.manifest = existing
            else:
                self.folder.mkdir(parents=True, exist_ok=True)
                self.manifest = RunManifest(config=config, runtime=runtime)
                self.manifest.write(self.folder)
        except BaseException:
            self._lock.release()
            raise
        self._results = JsonlLedger(self.files.results_ledger(suffix))
        self._failures = JsonlLedger(self.files.failures_ledger(suffix))
        self.png_compression = check_png_compression(png_compression)
        self._writer = _Writer(write_queue, f"cfbench-writer-{self.folder.name}") if write_queue > 0 else None

    def update_runtime(self, runtime: RunSession) -> None:
        """Record how the latest session ran (device, batch size, versions), keeping earlier sessions
        (a shard keeps its sessions in ``runtime.shard-K-of-N.json``, not in the shared manifest)."""
        if self.shard is not None:
            path = self.files.runtime_record(self.shard.suffix)
            sessions = json.loads(path.read_text())["sessions"] if path.is_file() else []
            atomic_write_json(path, {"shard": [self.shard.index, self.shard.count],
                                     "sessions": sessions + [runtime.to_dict()]})
            return
        self.manifest.sessions.append(runtime)
        self.manifest.runtime = runtime
        self.manifest.write(self.folder)

    def finished(self, among: set[str] | None = None) -> dict[str, FinishedSample]:
        """Samples finished by any process (all ledgers), so shards may be re-split between sessions, whose
        image files are intact: a sample whose image (or guidance map) was deleted or damaged after it was
        recorded is left out, so it is generated again. ``among``: only these sample ids (the ones this
        process will generate), so a shard reads back only its own images."""
        self.flush()
        finished = {}
        for record in read_results(self.folder):
            if among is not None and record["sample_id"] not in among:
                continue
            sample = _to_finished(record)
            damaged = [path for path in self._files_of(sample) if not png_intact(path)]
            if damaged:
                logger.warning("run %s: %s of finished sample %s missing or damaged; it is generated again",
                               self.folder, ", ".join(str(p) for p in damaged), sample.sample_id)
                continue
            finished[sample.sample_id] = sample
        return finished

    def _files_of(self, sample: "FinishedSample") -> list[Path]:
        files = [self.files.image(sample.sample_id)]
        return files + [self.files.guidance_map(sample.sample_id)] if sample.has_guidance else files

    def save(self, sample_id: str, seed: int, result: EditResult, seconds: float) -> None:
        """Record a finished sample: its images (atomically), then its ledger line. With a writer thread this
        returns once the sample is queued; the arrays are copied, so the model may reuse its buffers."""
        image = np.array(result.image, copy=True)
        guidance = None if result.guidance_map is None else np.array(result.guidance_map, copy=True)
        record = {
            "sample_id": sample_id,
            "seed": seed,
            "explanation": result.explanation,
            "info": result.info,
            "has_guidance": guidance is not None,
            "seconds": round(seconds, 6),
        }
        try:  # encoded here, so a record that cannot be stored fails its sample, never the writer thread
            line = json_line(record)
        except (TypeError, ValueError, RecursionError) as error:
            raise UnstorableRecord(f"sample {sample_id!r}: its record cannot be stored ({error})") from None

        def write_images() -> None:
            save_png16(self.files.image(sample_id), image, self.png_compression)
            if guidance is not None:
                save_png16(self.files.guidance_map(sample_id), guidance, self.png_compression)

        def append() -> None:
            self._results.append_line(line)  # only after the images are on disk

        if self._writer is None:
            write_images()
            append()
        else:
            self._writer.submit_sample(write_images, append)

    def fail(self, sample_id: str, error: str) -> None:
        line = json_line({"sample_id": sample_id, "error": valid_text(error)})  # a model's message may hold anything
        self._run(lambda: self._failures.append_line(line))

    def flush(self) -> None:
        """Wait until every queued sample is written (raises a write error of the writer thread)."""
        if self._writer is not None:
            self._writer.drain()

    def _run(self, job) -> None:
        if self._writer is None:
            job()
        else:
            self._writer.submit(job)

    def failures(self) -> list[dict]:
        return read_failures(self.folder)

    def close(self) -> None:
        try:
            if self._writer is not None:
                try:
                    self._writer.drain()
                finally:
                    self._writer.stop()
        finally:
            self._results.close()
            self._failures.close()
            self._lock.release()

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


def _describe_mismatch(folder: Path, old: RunConfig, new: RunConfig) -> str:
    return (
        f"run folder {folder} was made with a different config ({'; '.join(old.differences(new))}). "
        "Choose another --out, or delete the folder to start over."
    )


def load_generated(folder: str | Path, sample_id: str, resolution: int) -> np.ndarray:
    """The generated image of one sample, float32 HxW in [0, 1] at ``resolution``."""
    return load_image(RunFiles(Path(folder)).image(sample_id), resolution)
