"""Atomic file writes and crash-tolerant JSON-lines ledgers.

A file written here is either absent or complete: data goes to a temporary file in the same folder
(``.cfbench-{name}.{host}.{pid}.{random}.tmp``), is flushed to disk, and is renamed over the target (rename is
atomic on POSIX and Windows). Files get the permissions of an ordinary ``open()`` under the process umask (0644
under umask 022), not the private 0600 of a temporary file. Temporary files of processes that died
(kill -9) are removed by :func:`remove_stale_temporaries`: only files with cfbench's prefix, written on this
host, by a process that no longer runs (a user's own ``.x.123.tmp`` and another host's in-flight write on a
shared file system are left alone).
"""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import re
import socket
import tempfile
from pathlib import Path
from typing import Any, Iterator


def _umask() -> int:
    """The process umask (read by setting and restoring it; there is no other portable way)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


logger = logging.getLogger(__name__)
_FILE_MODE = 0o666 & ~_umask()  # what open() would give a new file
_TEMPORARY = re.compile(r"^\.cfbench-(?P<name>.+)\.(?P<host>[A-Za-z0-9-]+)\.(?P<pid>\d+)\.[^.]+\.tmp$")


def host_name() -> str:
    """This machine's name as it appears in temporary file names (letters, digits and '-')."""
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname() or "localhost")[:64]


def temporary_prefix(name: str, pid: int | None = None) -> str:
    """The start of a temporary file's name for target ``name``: ``.cfbench-{name}.{host}.{pid}.``."""
    return f".cfbench-{name}.{host_name()}.{os.getpid() if pid is None else pid}."


FULL_DISK = (errno.ENOSPC, errno.EDQUOT)


class DiskFullError(OSError):
    """No space (or quota) left writing a file: one line naming the file and what to do."""

    def __init__(self, path: str | os.PathLike, cause: OSError):
        super().__init__(cause.errno, f"No space left on device writing {path}: free space and rerun; finished "
                                      "samples are kept", str(path))

    def __str__(self) -> str:
        return self.strerror


def named_disk_full(path: str | os.PathLike, error: BaseException) -> BaseException:
    """``error`` as a :class:`DiskFullError` naming ``path`` when it is a full disk or quota, else itself."""
    if isinstance(error, OSError) and not isinstance(error, DiskFullError) and error.errno in FULL_DISK:
        return DiskFullError(path, error)
    return error


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=temporary_prefix(path.name), suffix=".tmp")
    except OSError as error:
        raise named_disk_full(path, error) from error
    try:
        os.fchmod(handle, _FILE_MODE)
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException as error:
        Path(temporary).unlink(missing_ok=True)
        named = named_disk_full(path, error)
        if named is error:
            raise
        raise named from error


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
    """Delete cfbench's temporary files (:func:`temporary_prefix`) written on this host by processes that no
    longer run (left by kill -9), in ``folder`` (and its sub-folders); the files of live processes, of other
    hosts and anything without cfbench's prefix are left alone. Returns what was removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    host = host_name()
    for path in (folder.rglob(".cfbench-*.tmp") if recursive else folder.glob(".cfbench-*.tmp")):
        match = _TEMPORARY.match(path.name)
        if match and match["host"] == host and path.is_file() and not process_alive(int(match["pid"])):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


JSON_MAX_DEPTH = 32          # nesting levels of one stored value
JSON_MAX_ITEMS = 100_000     # numbers, strings and containers in one stored value
JSON_MAX_TEXT = 4_000_000    # characters of all strings (keys included) in one stored value
JSON_MAX_INT_BITS = 63       # integers beyond +-2**63 are refused (JSON readers lose them; Python refuses to print huge ones)


def valid_text(text: str) -> str:
    """``text`` with lone surrogates (not encodable as UTF-8) replaced by U+FFFD; valid pairs are joined."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def json_safe(value: Any, path: str = "") -> Any:
    """``value`` as plain, storable JSON data: NumPy scalars and arrays become numbers and lists, NaN and
    infinities become None (an undefined score), lone surrogates in text become U+FFFD, recursively.
    Anything JSON cannot hold, or cannot hold safely (a cycle, more than ``JSON_MAX_DEPTH`` levels, more than
    ``JSON_MAX_ITEMS`` items or ``JSON_MAX_TEXT`` characters, an integer beyond 63 bits), raises TypeError
    naming where it sits (``path`` prefixes the location, e.g. ``info``)."""
    budget = {"items": JSON_MAX_ITEMS, "text": JSON_MAX_TEXT}
    return _json_safe(value, path, 0, set(), budget)


def _json_safe(value: Any, path: str, depth: int, open_containers: set[int], budget: dict[str, int]) -> Any:
    where = path or "value"
    budget["items"] -= 1
    if budget["items"] < 0:
        raise TypeError(f"{where}: more than {JSON_MAX_ITEMS} items in one value")
    if type(value).__module__ == "numpy":
        if getattr(value, "size", 1) > JSON_MAX_ITEMS:
            raise TypeError(f"{where}: an array of {value.size} numbers, over {JSON_MAX_ITEMS} items")
        value = value.tolist() if hasattr(value, "tolist") else value
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        if abs(value).bit_length() > JSON_MAX_INT_BITS:
            raise TypeError(f"{where} is an integer of {abs(value).bit_length()} bits, over {JSON_MAX_INT_BITS}")
        return int(value)
    if isinstance(value, str):
        budget["text"] -= len(value)
        if budget["text"] < 0:
            raise TypeError(f"{where}: more than {JSON_MAX_TEXT} characters of text in one value")
        return valid_text(str(value))
    if not isinstance(value, (dict, list, tuple)):
        raise TypeError(f"{where} is a {type(value).__name__}, which JSON cannot hold")
    if depth >= JSON_MAX_DEPTH:
        raise TypeError(f"{where}: nested more than {JSON_MAX_DEPTH} levels deep")
    if id(value) in open_containers:
        raise TypeError(f"{where} contains itself (a cycle)")
    open_containers.add(id(value))
    try:
        if isinstance(value, dict):
            safe = {}
            for key, item in value.items():
                name = _json_safe(key if isinstance(key, str) else str(key), f"{path}.<key>", depth + 1,
                                  open_containers, budget)
                safe[name] = _json_safe(item, f"{path}.{name}", depth + 1, open_containers, budget)
            return safe
        return [_json_safe(item, f"{path}[{index}]", depth + 1, open_containers, budget)
                for index, item in enumerate(value)]
    finally:
        open_containers.discard(id(value))


def json_line(record: dict) -> bytes:
    """One JSON-lines record as bytes (sorted keys, no NaN); ValueError/TypeError when it cannot be stored."""
    return (json.dumps(record, sort_keys=True, allow_nan=False) + "\n").encode("utf-8")


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
    """All complete records of a JSON-lines file; a torn last line (a crash mid-write) is ignored, and a line that
    is not a JSON object (garbage written by something else) is skipped with a warning naming file and line."""
    return list(_iter_complete_records(Path(path)))


def _iter_complete_records(path: Path) -> Iterator[dict]:
    if not path.exists():
        return
    with path.open("rb") as stream:
        for number, raw in enumerate(stream, start=1):
            if not raw.endswith(b"\n"):
                return  # torn tail
            line = raw.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except ValueError as error:  # JSONDecodeError and UnicodeDecodeError
                record = error
            if isinstance(record, dict):
                yield record
            else:
                logger.warning("%s line %d is not a JSON record (%s); skipped (a skipped result is generated again)",
                               path, number, record if isinstance(record, Exception) else type(record).__name__)


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
        self.append_line(json_line(record))

    def append_line(self, line: bytes) -> None:
        """Append one already encoded record (:func:`json_line`)."""
        try:
            self._stream.write(line)
            self._stream.flush()
            os.fsync(self._stream.fileno())
        except OSError as error:
            named = named_disk_full(self.path, error)
            if named is error:
                raise
            raise named from error

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
