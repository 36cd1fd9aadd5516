"""A cache of decoded dataset images (targets, priors and, on phantoms, exact counterfactuals) at the
benchmark resolution, shared by every evaluation of every run.

Every evaluation reads each sample's target and prior image: 4.3 ms per 16-bit PNG at 512 px on these
machines (2.9 ms of it zlib inflate), tens of ms for a MIMIC JPEG that is also resized. The decoded array
depends only on the file's bytes and the resolution, so entries are keyed on exactly that: one folder per
resolution, one checked ``.entry`` (:mod:`cfbench.core.checked_entries`: an ``.npy`` behind a checksum bound to
its key) per image named by the SHA-256 of the file's content. An entry holds uint16 when
the image is exactly k / 65535 (a 16-bit source read at its own size: 2 bytes a pixel, read back to the
same float32 bits as the decoder gives), else float32. A second model evaluated on the same split decodes
only its own outputs.

Bounded: entries are added while the cache holds less than ``image_cache_gb`` (setting, default 8 GB; 0
turns the cache off); nothing is evicted, delete the folder to start again. Entries are written
atomically (the temporary files of a killed process are removed by the next cache opened on the folder).
Checked, never trusted: an entry that fails its checksum (truncated, overwritten, another key's), cannot be
read back or has the wrong shape is dropped, reported, decoded again and replaced. A cache that cannot be
written (disk full, read-only) is off for the process with one warning; the image is still returned, so a
sample is excluded only for a fault of its own files.
"""

from __future__ import annotations

import io
import logging
import os
import threading
from pathlib import Path
from typing import Callable

import numpy as np

from cfbench.core import config
from cfbench.core.checked_entries import ENTRY_OVERHEAD, CheckedEntries
from cfbench.core.images import from_sixteen_bit, to_sixteen_bit
from cfbench.core.storage import remove_stale_temporaries

logger = logging.getLogger(__name__)

FOLDER_NAME = "decoded-images"


def image_cache_bytes() -> int:
    """The ``image_cache_gb`` setting in bytes (0: no cache); ConfigError for a value that is not a number >= 0."""
    gigabytes = config.non_negative_number("image_cache_gb")
    return int(gigabytes * 1e9)


def _stored_form(image: np.ndarray) -> np.ndarray:
    """uint16 levels when they give back ``image`` bit for bit, else the float32 image itself."""
    levels = to_sixteen_bit(image)
    return levels if np.array_equal(from_sixteen_bit(levels), image) else image.astype(np.float32, copy=False)


def _image_form(stored: np.ndarray) -> np.ndarray:
    """float32 HxW in [0, 1] from a stored entry (16-bit levels read as every 16-bit image is)."""
    return from_sixteen_bit(stored) if stored.dtype == np.uint16 else stored


class DecodedImageCache:
    """Decoded images at one resolution, by file content. ``max_bytes`` 0 turns it off (every load decodes).
    Safe to share between loader threads: two threads that decode the same image both write it atomically,
    and the byte budget then counts it twice (erring on the small side until the cache is opened again)."""

    def __init__(self, root: str | os.PathLike, resolution: int, max_bytes: int):
        self.resolution = resolution
        self.max_bytes = max_bytes
        self.folder = Path(root) / FOLDER_NAME / f"r{resolution}"
        self.entries = CheckedEntries(self.folder, ".entry", "decoded-image cache")
        if max_bytes:
            try:
                remove_stale_temporaries(self.folder)  # half-written entries of killed processes
            except OSError as error:
                self.entries.turn_off(error)
        self.bytes_used = sum(entry.stat().st_size for entry in self.entries.entries()) if max_bytes else 0
        self.hits = 0
        self.decoded = 0
        self._lock = threading.Lock()  # guards the counters and the byte budget

    def _read(self, digest: str) -> np.ndarray | None:
        payload = self.entries.read(digest)
        if payload is None:
            return None
        path = self.entries.path(digest)
        try:
            stored = np.load(io.BytesIO(payload), allow_pickle=False)
        except (OSError, ValueError, EOFError) as error:
            logger.warning("decoded-image cache entry %s is unreadable (%s); decoding the image again", path, error)
            return None
        if stored.shape != (self.resolution, self.resolution) or stored.dtype not in (np.uint16, np.float32):
            logger.warning("decoded-image cache entry %s holds %s %s, not %d x %d; decoding the image again",
                           path, stored.dtype, stored.shape, self.resolution, self.resolution)
            return None
        return _image_form(stored)

    def load(self, digest: str, decode: Callable[[], np.ndarray]) -> np.ndarray:
        """The image whose file has content SHA-256 ``digest``: from the cache, else ``decode()`` (float32
        HxW in [0, 1] at the cache's resolution, stored while the cache has room)."""
        if not self.max_bytes:
            image = decode()
            with self._lock:
                self.decoded += 1
            return image
        image = self._read(digest)
        if image is not None:
            with self._lock:
                self.hits += 1
            return image
        image = decode()
        buffer = io.BytesIO()
        np.save(buffer, _stored_form(image), allow_pickle=False)
        with self._lock:
            self.decoded += 1
            size = buffer.tell() + ENTRY_OVERHEAD  # the entry file's size
            room = self.bytes_used + size <= self.max_bytes
            if room:
                self.bytes_used += size
        if room:
            self.entries.write(digest, buffer.getvalue())  # a failing write turns the cache off, never the sample
        return image
