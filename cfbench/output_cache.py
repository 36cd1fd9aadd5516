"""A cache of evaluator outputs on real images, shared by every evaluation of every run.

The outputs of an evaluator on a real image depend only on the evaluator (its ``identity()``: weights
SHA-256, library and preprocessing versions), the benchmark resolution and the image file's bytes. So
entries are keyed on exactly that: one folder per (evaluator identity, resolution), one ``.npz`` per image
named by the SHA-256 of the file's content. A second model evaluated on the same split, or the same split
under another name, reuses them.

Safe with several processes: entries are written to a temporary file and renamed into place (a reader
sees a whole entry or none), a lock file serialises the computing of missing entries so two processes
do not do the same work, and ``.npz`` files are read with ``allow_pickle=False``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
from tqdm.auto import tqdm

from cfbench.evaluator import Evaluator, check_outputs
from cfbench.prefetch import prefetched
from cfbench.storage import atomic_write_bytes, atomic_write_json

CACHE_FORMAT = 1

try:  # POSIX advisory locks; elsewhere the atomic renames alone keep entries whole
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None


def content_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


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
        if not (self.folder / "identity.json").is_file():
            atomic_write_json(self.folder / "identity.json", description)
        self.hits = 0
        self.computed = 0

    def _entry_path(self, digest: str) -> Path:
        return self.folder / digest[:2] / f"{digest}.npz"

    def _read(self, digest: str) -> dict[str, np.ndarray] | None:
        path = self._entry_path(digest)
        if not path.is_file():
            return None
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}

    def _write(self, digest: str, outputs: dict[str, np.ndarray]) -> None:
        buffer = io.BytesIO()
        np.savez(buffer, **outputs)
        atomic_write_bytes(self._entry_path(digest), buffer.getvalue())

    def outputs_for(
        self,
        paths: Sequence[Path],
        load: Callable[[int], np.ndarray],
        batch_size: int = 16,
        progress: bool = True,
    ) -> dict[str, np.ndarray]:
        """Stacked outputs for the images at ``paths`` (in order); ``load(i)`` reads image i as float32 HxW
        in [0, 1] at the cache's resolution, and is called only for images not in the cache."""
        digests = [content_sha256(path) for path in paths]
        rows: dict[int, dict[str, np.ndarray]] = {}
        for index, digest in enumerate(digests):
            if (entry := self._read(digest)) is not None:
                rows[index] = entry
        self.hits += len(rows)
        if len(rows) < len(paths):
            with file_lock(self.folder / ".lock"):
                for index, digest in enumerate(digests):  # another process may have filled some meanwhile
                    if index not in rows and (entry := self._read(digest)) is not None:
                        rows[index] = entry
                        self.hits += 1
                missing = [index for index in range(len(paths)) if index not in rows]
                bar = tqdm(total=len(missing), desc=f"{self.evaluator.name} on real images", unit="image",
                           disable=not progress or not missing)
                batches = [missing[start : start + batch_size] for start in range(0, len(missing), batch_size)]
                loaded = prefetched(batches, lambda batch: np.stack([load(index) for index in batch]))
                for batch, images in zip(batches, loaded):
                    outputs = check_outputs(self.evaluator.predict(images), self.evaluator, len(batch))
                    for position, index in enumerate(batch):
                        row = {key: np.asarray(value[position]) for key, value in outputs.items()}
                        self._write(digests[index], row)
                        rows[index] = row
                    self.computed += len(batch)
                    bar.update(len(batch))
                bar.close()
        keys = rows[0].keys() if rows else ()
        return {key: np.stack([rows[i][key] for i in range(len(paths))]) for key in keys}
