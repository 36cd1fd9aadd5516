"""Atomic file writes and crash-tolerant JSON-lines ledgers.

A file written here is either absent or complete: data goes to a temporary file in the same folder
(``.{name}.{pid}.{random}.tmp``), is flushed to disk, and is renamed over the target (rename is atomic on
POSIX and Windows). Files get the permissions of an ordinary ``open()`` under the process umask (0644
under umask 022), not the private 0600 of a temporary file. Temporary files of processes that died
(kill -9) are removed by :func:`remove_stale_temporaries`.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Iterator


def _umask() -> int:
    """The process umask (read by setting and restoring it; there is no other portable way)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # what open() would give a new file
_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[^.]+\.tmp$")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
    try:
        os.fchmod(handle, _FILE_MODE)
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def process_alive(pid: int) -> bool:
    """Whether a process with this id runs (on this machine)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def remove_stale_temporaries(folder: str | os.PathLike, recursive: bool = True) -> list[Path]:
    """Delete the temporary files of atomic writes whose process no longer runs (left by kill -9), in
    ``folder`` (and its sub-folders); the files of live processes are left alone. Returns what was removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for path in (folder.rglob(".*.tmp") if recursive else folder.glob(".*.tmp")):
        match = _TEMPORARY.match(path.name)
        if match and path.is_file() and not process_alive(int(match["pid"])):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def json_safe(value: Any, path: str = "") -> Any:
    """``value`` as plain JSON data: NumPy scalars and arrays become numbers and lists, NaN and infinities
    become None (an undefined score), recursively; anything else JSON cannot hold raises TypeError naming
    where it sits (``path`` prefixes the location, e.g. ``info``)."""
    if type(value).__module__ == "numpy":
        value = value.tolist() if hasattr(value, "tolist") else value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, dict):
        return {str(key): json_safe(item, f"{path}.{key}") for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item, f"{path}[{index}]") for index, item in enumerate(value)]
    raise TypeError(f"{path or 'value'} is a {type(value).__name__}, which JSON cannot hold")


def with_undefined_reasons(value: Any, reason: str = "not a finite number") -> Any:
    """``value`` as strict JSON data: every NaN or infinity becomes null, and the dict holding it gets an
    ``"undefined"`` entry naming the key (``"ci_low"``, ``"per_finding[2]"``) with ``reason`` and the value
    it had ("nan", "inf"), so a reader sees why a number is missing. Keys already in ``"undefined"`` are kept."""
    if type(value).__module__ == "numpy":
        value = value.tolist() if hasattr(value, "tolist") else value
    if isinstance(value, dict):
        cleaned, undefined = {}, {}
        for key, item in value.items():
            if isinstance(item, (list, tuple)) or type(item).__module__ == "numpy":
                item = item.tolist() if hasattr(item, "tolist") else item
            if isinstance(item, float) and not math.isfinite(item):
                cleaned[str(key)] = None
                undefined[str(key)] = f"{reason} ({item})"
            elif isinstance(item, (list, tuple)):
                items = []
                for index, element in enumerate(item):
                    if isinstance(element, float) and not math.isfinite(element):
                        undefined[f"{key}[{index}]"] = f"{reason} ({element})"
                        items.append(None)
                    else:
                        items.append(with_undefined_reasons(element, reason))
                cleaned[str(key)] = items
            else:
                cleaned[str(key)] = with_undefined_reasons(item, reason)
        if undefined:
            existing = cleaned.get("undefined")
            if isinstance(existing, dict):
                cleaned["undefined"] = {**undefined, **existing}
            elif existing is None:
                cleaned["undefined"] = undefined
        return cleaned
    if isinstance(value, (list, tuple)):
        return [None if isinstance(item, float) and not math.isfinite(item) else with_undefined_reasons(item, reason)
                for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def atomic_write_strict_json(path: str | os.PathLike, data: Any) -> None:
    """Strict JSON (no NaN / Infinity tokens, which JSON does not have): non-finite numbers are written as
    null with the reason beside them (:func:`with_undefined_reasons`); anything else that is not JSON raises."""
    atomic_write_text(path, json.dumps(with_undefined_reasons(data), indent=2, sort_keys=True, allow_nan=False) + "\n")


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """All complete records of a JSON-lines file; a torn last line (a crash mid-write) is ignored."""
    return list(_iter_complete_records(Path(path)))


def _iter_complete_records(path: Path) -> Iterator[dict]:
    if not path.exists():
        return
    with path.open("rb") as stream:
        for raw in stream:
            if not raw.endswith(b"\n"):
                return  # torn tail
            line = raw.strip()
            if line:
                yield json.loads(line)


class JsonlLedger:
    """An append-only JSON-lines file: one record per line, each line flushed and fsynced.

    On open, a torn last line left by a crash is cut off, so appends continue on a clean line.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._truncate_torn_tail()
        self._stream = self.path.open("ab")

    def _truncate_torn_tail(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
            with self.path.open("r+b") as stream:
                stream.truncate(keep)

    def records(self) -> list[dict]:
        return read_jsonl(self.path)

    def append(self, record: dict) -> None:
        line = json.dumps(record, sort_keys=True, allow_nan=False) + "\n"
        self._stream.write(line.encode("utf-8"))
        self._stream.flush()
        os.fsync(self._stream.fileno())

    def close(self) -> None:
        self._stream.close()

    def __enter__(self) -> "JsonlLedger":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class LockedError(RuntimeError):
    """Another live process holds the lock; the message names it."""


class FolderLock:
    """An advisory, exclusive lock on ``path`` (a small file holding the owner's pid and command line).

    The operating system drops the lock when its process ends, however it ends (kill -9 included), so a lock
    left by a dead process is simply taken over. A second process asking for a held lock gets
    :class:`LockedError` naming the holder, at once (no waiting).
    """

    def __init__(self, path: str | os.PathLike, what: str):
        self.path = Path(path)
        self.what = what
        self._handle = None

    def acquire(self) -> "FolderLock":
        import fcntl
        import sys

        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise LockedError(f"{self.what} is in use by {holder} (lock {self.path}); wait for it to finish, "
                              "or use another folder") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"process {os.getpid()} ({' '.join(sys.argv)[:200]})\n")
        handle.flush()
        self._handle = handle
        return self

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()  # closing the file drops the lock
            self._handle = None

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
