"""Content hashes: the SHA-256 that identifies datasets, weights and images in manifests and caches."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from cfbench.core.storage import atomic_write_json

HASH_CACHE_NAME = ".cfbench-sha256.json"  # beside hashed weights files: name -> (size, mtime, sha256)
WEIGHT_SUFFIXES: tuple[str, ...] = (".safetensors", ".bin", ".ckpt", ".pt", ".tiktoken")


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's content, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while block := stream.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _inside_package(path: Path) -> bool:
    from cfbench.core import config

    return path.resolve().is_relative_to(config.PACKAGE_DATA_DIR)


def cached_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file, remembered in ``.cfbench-sha256.json`` beside it by (name, size, mtime).

    A file whose size or modification time changed is hashed again. An unwritable folder only
    means the digest is not remembered, and so does a file shipped inside the package (``cfbench/data``):
    cfbench never writes into its installation (a fresh checkout gives the shipped files new mtimes).
    """
    path = Path(path)
    stat = path.stat()
    cache_path = path.parent / HASH_CACHE_NAME
    try:
        cache = json.loads(cache_path.read_text(encoding="utf-8"))
        if not isinstance(cache, dict):
            cache = {}
    except (OSError, ValueError):
        cache = {}
    record = cache.get(path.name)
    if (isinstance(record, dict) and record.get("size") == stat.st_size
            and record.get("mtime_ns") == stat.st_mtime_ns and isinstance(record.get("sha256"), str)):
        return record["sha256"]
    digest = file_sha256(path)
    if _inside_package(path):
        return digest
    cache[path.name] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest}
    try:
        atomic_write_json(cache_path, cache)
    except OSError:
        pass
    return digest


def folder_sha256(folder: str | os.PathLike, suffixes: tuple[str, ...] = WEIGHT_SUFFIXES) -> dict[str, str]:
    """SHA-256 of every file under ``folder`` whose suffix is in ``suffixes`` (default: weights files and
    tokenizer tables), keyed by relative path (cached beside the files): the weights identity of a model."""
    folder = Path(folder)
    files = sorted(path for path in folder.rglob("*") if path.is_file() and path.suffix in suffixes)
    return {str(path.relative_to(folder)): cached_sha256(path) for path in files}
