"""Content hashes: the SHA-256 that identifies datasets, weights and images in manifests and caches."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from cfbench.core.storage import atomic_write_json

HASH_CACHE_FOLDER = "weights-sha256"  # under the cache_dir setting: one JSON per hashed folder
WEIGHT_SUFFIXES: tuple[str, ...] = (".safetensors", ".bin", ".ckpt", ".pt", ".tiktoken")


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's content, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while block := stream.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def hash_cache_path(folder: str | os.PathLike) -> Path | None:
    """Where the digests of the files in ``folder`` are remembered: ``{cache_dir}/weights-sha256/{id}.json``,
    ``id`` a hash of the folder's absolute path, in the user's cache folder (never beside the files: an
    installed package or a read-only weights folder is not written). None when no cache folder is set."""
    from cfbench.core import config

    try:
        root = config.resolve_path("cache_dir")
    except config.ConfigError:
        return None
    if root is None:
        return None
    name = hashlib.sha256(str(Path(folder).resolve()).encode("utf-8", "surrogatepass")).hexdigest()[:24]
    return root / HASH_CACHE_FOLDER / f"{name}.json"


def cached_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file, remembered in the user cache folder (:func:`hash_cache_path`) by (name, size, mtime,
    inode). A file whose size, modification time or inode changed is hashed again; a cache that cannot be
    read or written only means the digest is computed."""
    path = Path(path)
    stat = path.stat()
    cache_path = hash_cache_path(path.parent)
    try:
        cache = json.loads(cache_path.read_text(encoding="utf-8")) if cache_path else {}
        if not isinstance(cache, dict):
            cache = {}
    except (OSError, ValueError):
        cache = {}
    record = cache.get(path.name)
    if (isinstance(record, dict) and record.get("size") == stat.st_size and record.get("inode") == stat.st_ino
            and record.get("mtime_ns") == stat.st_mtime_ns and isinstance(record.get("sha256"), str)):
        return record["sha256"]
    digest = file_sha256(path)
    cache[path.name] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "inode": stat.st_ino, "sha256": digest}
    if cache_path is not None:
        try:
            atomic_write_json(cache_path, cache)
        except OSError:
            pass
    return digest


def folder_sha256(folder: str | os.PathLike, suffixes: tuple[str, ...] = WEIGHT_SUFFIXES) -> dict[str, str]:
    """SHA-256 of every file under ``folder`` whose suffix is in ``suffixes`` (default: weights files and
    tokenizer tables), keyed by relative path (cached in the user cache folder): the weights identity of a model."""
    folder = Path(folder)
    files = sorted(path for path in folder.rglob("*") if path.is_file() and path.suffix in suffixes)
    return {str(path.relative_to(folder)): cached_sha256(path) for path in files}
