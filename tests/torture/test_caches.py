"""Verified, optional caches (issue 22, mechanism 2): a damaged entry is dropped, recomputed and reported;
a cache that cannot be written is off with one warning; no number changes and no sample is excluded."""

from __future__ import annotations

import errno
import io
import logging

import numpy as np
import pytest

from cfbench.core import checked_entries
from cfbench.core.checked_entries import ENTRY_OVERHEAD, stored_payload
from cfbench.evaluation.evaluate import evaluate_run
from cfbench.evaluation.protocol import Protocol
from cfbench.phantom.dataset import build_phantom_dataset
from cfbench.runs.generate import RunSettings, generate
from tests.helpers.fake_models import RegionStatisticsEvaluator

FAST = Protocol(bootstrap_resamples=50, fid_bootstrap_resamples=5)
SAMPLES = 17


@pytest.fixture(scope="module")
def phantom_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("caches")
    data = build_phantom_dataset(root / "data", SAMPLES, seed=8, resolution=32, fractions={"holdout": 1.0},
                                 progress=False)
    settings = RunSettings(model="tests.helpers.fake_models:NoisyEditModel", split="holdout", data_dir=data,
                           out=root / "run", resolution=32, batch_size=4)
    generate(settings, progress=False)
    return settings.out


def evaluate(run, cache_dir):
    report = evaluate_run(run, evaluator=RegionStatisticsEvaluator(), cache_dir=cache_dir, protocol=FAST,
                          progress=False, batch_size=8)
    return report, {name: entry["value"] for name, entry in report["metrics"].items()}


def rewrite_payloads(entries, change) -> None:
    """Replace each entry's payload by ``change(array or archive dict)``, keeping its old header (checksum)."""
    for path in entries:
        data = path.read_bytes()
        buffer = io.BytesIO()
        if path.suffix == ".npz":
            with np.load(io.BytesIO(stored_payload(path))) as archive:
                np.savez(buffer, **{key: change(archive[key]) for key in archive.files})
        else:
            np.save(buffer, change(np.load(io.BytesIO(stored_payload(path)))))
        path.write_bytes(data[:ENTRY_OVERHEAD] + buffer.getvalue())


@pytest.mark.parametrize("cache", ["decoded-images", "evaluator-outputs"])
def test_entries_overwritten_with_zeros_of_the_right_shape_are_dropped_and_change_no_number(
        phantom_run, tmp_path, cache, caplog):
    _, clean = evaluate(phantom_run, tmp_path / "fresh")
    evaluate(phantom_run, tmp_path / "cache")
    entries = sorted((tmp_path / "cache" / cache).rglob("*.entry" if cache == "decoded-images" else "*.npz"))
    assert entries
    rewrite_payloads(entries, np.zeros_like)
    with caplog.at_level(logging.WARNING):
        report, values = evaluate(phantom_run, tmp_path / "cache")
    assert values == clean and report["n_samples"] == SAMPLES
    assert caplog.text.count("checksum mismatch") == len(entries)  # each reported once
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        _, again = evaluate(phantom_run, tmp_path / "cache")  # recomputed entries are good again
    assert again == clean and "checksum mismatch" not in caplog.text


def test_a_truncated_entry_is_recomputed_and_later_evals_are_not_stuck(phantom_run, tmp_path):
    _, clean = evaluate(phantom_run, tmp_path / "cache")
    for pattern in ("*.entry", "*.npz"):
        entry = sorted(tmp_path.joinpath("cache").rglob(pattern))[0]
        entry.write_bytes(entry.read_bytes()[:20])
    for _ in range(2):
        report, values = evaluate(phantom_run, tmp_path / "cache")
        assert values == clean and report["n_samples"] == SAMPLES


def test_an_entry_copied_under_another_key_is_refused(tmp_path):
    entries = checked_entries.CheckedEntries(tmp_path, ".entry", "test cache")
    assert entries.write("aa11", b"payload of aa11")
    entries.path("bb22").parent.mkdir(parents=True)
    entries.path("bb22").write_bytes(entries.path("aa11").read_bytes())
    assert entries.read("aa11") == b"payload of aa11"
    assert entries.read("bb22") is None and not entries.path("bb22").exists()


def test_a_full_disk_turns_the_cache_off_with_one_warning_and_excludes_no_sample(phantom_run, tmp_path,
                                                                                 monkeypatch, caplog):
    _, clean = evaluate(phantom_run, tmp_path / "fresh")

    def disk_full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(checked_entries, "atomic_write_bytes", disk_full)
    with caplog.at_level(logging.WARNING):
        report, values = evaluate(phantom_run, tmp_path / "full")
    assert report["n_samples"] == SAMPLES and report["n_excluded"] == 0 and values == clean
    assert caplog.text.count("decoded-image cache at") == 1 and caplog.text.count("evaluator-output cache at") == 1
    assert "No space left on device" in caplog.text and "it is off for this process" in caplog.text


def test_a_read_only_cache_folder_is_used_without_writing(phantom_run, tmp_path, monkeypatch):
    _, clean = evaluate(phantom_run, tmp_path / "fresh")
    cache = tmp_path / "read-only"
    cache.mkdir()

    def read_only(path, data):
        raise PermissionError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(checked_entries, "atomic_write_bytes", read_only)
    monkeypatch.setattr("cfbench.evaluation.output_cache.atomic_write_json", read_only)
    report, values = evaluate(phantom_run, cache)
    assert values == clean and report["n_samples"] == SAMPLES
    assert not any(path.is_file() for path in cache.rglob("*"))
