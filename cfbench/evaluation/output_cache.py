"""A cache of evaluator outputs on real images, shared by every evaluation of every run.

The outputs of an evaluator on a real image depend only on the evaluator (its ``identity()``: weights
SHA-256, library and preprocessing versions), the benchmark resolution and the image file's bytes. So
entries are keyed on exactly that: one folder per (evaluator identity, resolution), one ``.npz`` per image
named by the SHA-256 of the file's content. A second model evaluated on the same split, or the same split
under another name, reuses them.

Safe with several processes: entries are written to a temporary file and renamed into place (a reader
sees a whole entry or none), a lock file serialises the computing of missing entries so two processes
do not do the same work, and ``.npz`` files are read with ``allow_pickle=False``.

Checked, never trusted (:mod:`cfbench.core.checked_entries`): every entry carries a checksum bound to its key;
a truncated or rewritten entry is dropped, reported and computed again. A cache folder that cannot be written
(disk full, read-only) is off for the process with one warning: the outputs are computed and used as usual.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from cfbench.api.evaluator import Evaluator, check_outputs
from cfbench.core.checked_entries import CheckedEntries
from cfbench.core.storage import atomic_write_json, remove_stale_temporaries

CACHE_FORMAT = 2  # 2: checked entries

try:  # POSIX advisory locks; elsewhere the atomic renames alone keep entries whole
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        if fcntl is not None:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


class EvaluatorOutputCache:
    """Outputs of one evaluator at one resolution, by image content."""

    def __init__(self, root: str | os.PathLike, evaluator: Evaluator, resolution: int):
        self.evaluator = evaluator
        self.resolution = resolution
        description = {"evaluator": evaluator.identity(), "resolution": resolution, "cache_format": CACHE_FORMAT}
        self.key = hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()[:24]
        self.folder = Path(root) / "evaluator-outputs" / self.key
        self.entries = CheckedEntries(self.folder, ".npz", "evaluator-output cache")
        try:
            if not (self.folder / "identity.json").is_file():
                atomic_write_json(self.folder / "identity.json", description)
            remove_stale_temporaries(self.folder)  # half-written entries of killed processes
        except OSError as error:
            self.entries.turn_off(error)
        self.hits = 0
        self.computed = 0

    def _read(self, digest: str) -> dict[str, np.ndarray] | None:
        payload = self.entries.read(digest)
        if payload is None:
            return None
        try:
            with np.load(io.BytesIO(payload), allow_pickle=False) as archive:
                return {key: archive[key] for key in archive.files}
        except (OSError, ValueError, EOFError, KeyError):  # checksum right, content not an archive: recompute
            return None

    def _write(self, digest: str, outputs: dict[str, np.ndarray]) -> None:
        buffer = io.BytesIO()
        np.savez(buffer, **outputs)
        self.entries.write(digest, buffer.getvalue())

    @contextlib.contextmanager
    def _computing(self) -> Iterator[None]:
        """The cache's lock while missing entries are computed; none when the cache cannot be written."""
        with contextlib.ExitStack() as stack:
            if self.entries.writable:
                try:
                    stack.enter_context(file_lock(self.folder / ".lock"))
                except OSError as error:
                    self.entries.turn_off(error)
            yield

    def lookup(self, digests: Sequence[str]) -> dict[int, dict[str, np.ndarray]]:
        """The cached rows among ``digests`` (content SHA-256 of image files), by position."""
        rows = {index: entry for index, digest in enumerate(digests) if (entry := self._read(digest)) is not None}
        self.hits += len(rows)
        return rows

    def fill(self, digests: Sequence[str], images: np.ndarray) -> list[dict[str, np.ndarray]]:
        """Rows for images not found by :meth:`lookup`: computed under the cache's lock (after looking
        again, in case another process computed some meanwhile) and stored. ``images``: float32 (B, H, W)
        in [0, 1] at the cache's resolution, ``digests`` their files' content SHA-256."""
        with self._computing():
            rows: list[dict[str, np.ndarray] | None] = [self._read(digest) for digest in digests]
            missing = [position for position, row in enumerate(rows) if row is None]
            self.hits += len(digests) - len(missing)
            if missing:
                outputs = check_outputs(self.evaluator.predict(images[missing]), self.evaluator, len(missing))
                for offset, position in enumerate(missing):
                    row = {key: np.asarray(value[offset]) for key, value in outputs.items()}
                    self._write(digests[position], row)
                    rows[position] = row
                self.computed += len(missing)
        return rows
