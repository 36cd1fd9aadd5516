"""Cached SHA-256: remembered beside the file, except for files shipped inside the package."""

from __future__ import annotations

import hashlib
import os

from cfbench.core import config
from cfbench.core.hashing import HASH_CACHE_NAME, cached_sha256


def test_the_digest_is_remembered_beside_a_file_but_never_written_into_the_package(tmp_path, monkeypatch):
    weights = tmp_path / "weights" / "model.safetensors"
    weights.parent.mkdir()
    weights.write_bytes(b"abc" * 1000)
    expected = hashlib.sha256(b"abc" * 1000).hexdigest()
    assert cached_sha256(weights) == expected and (weights.parent / HASH_CACHE_NAME).is_file()

    shipped = tmp_path / "package-data" / "unet" / "model.safetensors"
    shipped.parent.mkdir(parents=True)
    shipped.write_bytes(b"abc" * 1000)
    recorded = shipped.parent / HASH_CACHE_NAME
    recorded.write_text('{"model.safetensors": {"size": 3000, "mtime_ns": 1, "sha256": "' + expected + '"}}')
    before = recorded.read_text()
    os.utime(shipped, ns=(2, 2))  # a fresh checkout: another mtime than the one recorded
    monkeypatch.setattr(config, "PACKAGE_DATA_DIR", (tmp_path / "package-data").resolve())
    assert cached_sha256(shipped) == expected
    assert recorded.read_text() == before  # the shipped record is left as it is
