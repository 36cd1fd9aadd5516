"""Cache entries that are checked, never trusted, and a cache that can never stop the job it speeds up.

An entry is one file ``{folder}/{key[:2]}/{key}{suffix}`` holding a header (magic, SHA-256 of the key and the
payload) and the payload. :meth:`CheckedEntries.read` returns the payload only when the checksum matches the
key it is read under: an entry truncated, overwritten (zeros of the right shape included) or copied under
another key's name is dropped, reported once, and the caller computes the value again. A write that fails
(disk full, read-only folder, quota) turns writing off for that cache folder for the rest of the process with
one warning: the values are still returned to the caller, so no sample is ever lost to its cache.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from pathlib import Path

from cfbench.core.storage import atomic_write_bytes

logger = logging.getLogger(__name__)

MAGIC = b"cfbench-entry-1\n"
_DIGEST = 32
ENTRY_OVERHEAD = len(MAGIC) + _DIGEST  # bytes of an entry file beyond its payload
_off: set[Path] = set()          # cache folders whose writes failed in this process
_off_lock = threading.Lock()


def _checksum(key: str, payload: bytes) -> bytes:
    return hashlib.sha256(key.encode("utf-8") + b"\0" + payload).digest()


class CheckedEntries:
    """Checked entries of one cache folder. ``what`` names the cache in messages ("decoded-image cache")."""

    def __init__(self, folder: str | os.PathLike, suffix: str, what: str):
        self.folder = Path(folder)
        self.suffix = suffix
        self.what = what
        self.dropped = 0

    def path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}{self.suffix}"

    def entries(self) -> list[Path]:
        return list(self.folder.glob(f"??/*{self.suffix}"))

    @property
    def writable(self) -> bool:
        return self.folder not in _off

    def read(self, key: str) -> bytes | None:
        """The payload stored under ``key``, or None (absent, unreadable, or failing its checksum: then dropped)."""
        path = self.path(key)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as error:
            logger.warning("%s entry %s cannot be read (%s); computing it again", self.what, path, error)
            return None
        header = len(MAGIC) + _DIGEST
        payload = data[header:]
        if len(data) < header or data[: len(MAGIC)] != MAGIC or data[len(MAGIC) : header] != _checksum(key, payload):
            self.dropped += 1
            logger.warning("%s entry %s is damaged or not the entry of its key (checksum mismatch); dropped, "
                           "computing it again", self.what, path)
            try:
                path.unlink(missing_ok=True)
            except OSError:
                pass
            return None
        return payload

    def write(self, key: str, payload: bytes) -> bool:
        """Store ``payload`` under ``key``; False when writing is off or fails (the first failure turns this
        cache's writes off for the process, with one warning naming the folder and the error)."""
        if not self.writable:
            return False
        try:
            atomic_write_bytes(self.path(key), MAGIC + _checksum(key, payload) + payload)
            return True
        except OSError as error:
            self.turn_off(error)
            return False

    def turn_off(self, error: BaseException) -> None:
        """No more writes to this folder in this process (one warning)."""
        with _off_lock:
            if self.folder in _off:
                return
            _off.add(self.folder)
        logger.warning("%s at %s cannot be written (%s); it is off for this process: every value is computed, "
                       "no sample is affected", self.what, self.folder, error)


def stored_payload(path: str | os.PathLike) -> bytes:
    """The payload of an entry file, unchecked (for inspection and tests; :meth:`CheckedEntries.read` checks)."""
    return Path(path).read_bytes()[len(MAGIC) + _DIGEST :]
