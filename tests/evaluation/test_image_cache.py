"""The decoded-image cache (cfbench.evaluation.image_cache): entries give back the decoder's float32 bits,
a second evaluation of the split reads its targets, priors and exact counterfactuals from the cache only and
scores exactly the same, bad entries are decoded again, the size bound holds and the setting is checked."""

from __future__ import annotations

import io
import json
import logging

import numpy as np
import pytest

from cfbench.core import config
from cfbench.core.checked_entries import stored_payload
from cfbench.core.hashing import file_sha256
from cfbench.core.images import load_image
from cfbench.core.storage import temporary_prefix
from cfbench.datasets.edit_dataset import EditDataset
from cfbench.evaluation.evaluate import evaluate_run
from cfbench.evaluation.image_cache import DecodedImageCache, image_cache_bytes
from cfbench.evaluation.protocol import Protocol
from cfbench.phantom.dataset import build_phantom_dataset
from cfbench.runs.generate import RunSettings, generate
from tests.helpers.fake_models import RegionStatisticsEvaluator

def read_entry(path) -> np.ndarray:
    return np.load(io.BytesIO(stored_payload(path)), allow_pickle=False)


FAST = Protocol(bootstrap_resamples=100, fid_bootstrap_resamples=10)


@pytest.fixture(scope="module")
def phantom_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("image-cache")
    data = build_phantom_dataset(root / "data", 12, seed=5, resolution=64, fractions={"holdout": 1.0}, progress=False)
    settings = RunSettings(model="tests.helpers.fake_models:NoisyEditModel", split="holdout", data_dir=data,
                           out=root / "run", resolution=64, batch_size=4)
    generate(settings, progress=False)
    return data, settings.out


def _metrics(run, cache_dir, loader_threads=None) -> dict:
    evaluate_run(run, evaluator=RegionStatisticsEvaluator(), protocol=FAST, cache_dir=cache_dir, batch_size=5,
                 progress=False, loader_threads=loader_threads)
    metrics = json.loads((run / "metrics.json").read_text())["metrics"]
    return {name: (entry["value"], entry["ci_low"], entry["ci_high"]) for name, entry in metrics.items()}


def test_second_evaluation_reads_dataset_images_from_the_cache_and_scores_the_same(phantom_run, tmp_path,
                                                                                    monkeypatch):
    data, run = phantom_run
    monkeypatch.setenv("CFBENCH_IMAGE_CACHE_GB", "0")
    without = _metrics(run, tmp_path / "no-cache")
    assert not (tmp_path / "no-cache" / "decoded-images").exists()
    monkeypatch.setenv("CFBENCH_IMAGE_CACHE_GB", "1")
    first = _metrics(run, tmp_path / "cache")
    entries = sorted((tmp_path / "cache" / "decoded-images" / "r64").rglob("*.entry"))
    assert len(entries) == 36  # 12 targets, priors, exact counterfactuals; 16-bit PNGs at their own size: uint16
    assert all(read_entry(entry).dtype == np.uint16 for entry in entries)

    def no_decoding(self, sample):
        raise AssertionError(f"decoded {sample.sample_id} although the cache holds it")

    for method in ("current_image", "past_image", "counterfactual_image"):
        monkeypatch.setattr(EditDataset, method, no_decoding)
    second = _metrics(run, tmp_path / "cache")
    assert without == first == second  # every value and interval bound, exactly


def test_entries_give_back_the_decoders_bits_and_bad_entries_are_decoded_again(phantom_run, tmp_path, caplog):
    data, _ = phantom_run
    path = next((data / "current").glob("*.png"))
    digest = file_sha256(path)
    for resolution, stored_dtype in ((64, np.uint16), (48, np.float32)):  # own size; resized (not k / 65535)
        decoded = load_image(path, resolution)
        cache = DecodedImageCache(tmp_path, resolution, max_bytes=10**9)
        assert cache.load(digest, lambda: decoded) is decoded and cache.decoded == 1
        entry = tmp_path / "decoded-images" / f"r{resolution}" / digest[:2] / f"{digest}.entry"
        assert read_entry(entry).dtype == stored_dtype
        again = DecodedImageCache(tmp_path, resolution, max_bytes=10**9).load(digest, lambda: pytest.fail("decoded"))
        assert again.dtype == np.float32 and np.array_equal(again, decoded)
        assert again.view(np.uint32).tolist() == decoded.view(np.uint32).tolist()  # bit for bit

    entry.write_bytes(b"not an npy file")
    with caplog.at_level(logging.WARNING):
        value = DecodedImageCache(tmp_path, 48, max_bytes=10**9).load(digest, lambda: load_image(path, 48))
    assert np.array_equal(value, load_image(path, 48)) and "checksum mismatch" in caplog.text
    assert read_entry(entry).dtype == np.float32  # replaced by a good entry
    wrong_shape = io.BytesIO()
    np.save(wrong_shape, np.zeros((8, 8), np.float32))  # checked and readable, wrong shape
    cache = DecodedImageCache(tmp_path, 48, max_bytes=10**9)
    cache.entries.write(digest, wrong_shape.getvalue())
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        value = cache.load(digest, lambda: load_image(path, 48))
    assert np.array_equal(value, load_image(path, 48)) and "not 48 x 48" in caplog.text


def test_the_cache_stops_adding_at_its_size_bound(phantom_run, tmp_path):
    data, _ = phantom_run
    paths = sorted((data / "current").glob("*.png"))[:3]
    entry_bytes = 64 * 64 * 2 + 128 + 48  # one uint16 entry with its .npy header and its checksum header
    cache = DecodedImageCache(tmp_path, 64, max_bytes=entry_bytes + 10)
    images = [cache.load(file_sha256(p), lambda p=p: load_image(p, 64)) for p in paths]
    assert len(list((tmp_path / "decoded-images").rglob("*.entry"))) == 1 and cache.bytes_used == entry_bytes
    assert all(np.array_equal(image, load_image(p, 64)) for image, p in zip(images, paths))
    reopened = DecodedImageCache(tmp_path, 64, max_bytes=entry_bytes + 10)
    assert reopened.bytes_used == entry_bytes  # the bound counts what earlier processes stored


@pytest.mark.parametrize("value", ["-1", "lots", "nan"])
def test_the_setting_must_be_a_size(value, monkeypatch):
    monkeypatch.setenv("CFBENCH_IMAGE_CACHE_GB", value)
    with pytest.raises(config.ConfigError, match="image_cache_gb \\(env CFBENCH_IMAGE_CACHE_GB\\)"):
        image_cache_bytes()
    monkeypatch.setenv("CFBENCH_IMAGE_CACHE_GB", "0.5")
    assert image_cache_bytes() == 500_000_000


def test_temporaries_of_killed_processes_are_removed(tmp_path):
    import subprocess
    import sys

    from cfbench.evaluation.output_cache import EvaluatorOutputCache

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid that no longer runs
    image_folder = tmp_path / "decoded-images" / "r64" / "ab"
    image_folder.mkdir(parents=True)
    stale = image_folder / f"{temporary_prefix('abc.entry', dead.pid)}x1y2.tmp"
    live = image_folder / f"{temporary_prefix('abd.entry')}x1y2.tmp"
    stale.write_bytes(b"half")
    live.write_bytes(b"being written")
    DecodedImageCache(tmp_path, 64, max_bytes=10**9)
    assert not stale.exists() and live.exists()
    evaluator = RegionStatisticsEvaluator()
    output_folder = EvaluatorOutputCache(tmp_path, evaluator, 64).folder
    stale = output_folder / "ab" / f"{temporary_prefix('abc.npz', dead.pid)}x1y2.tmp"
    stale.parent.mkdir()
    stale.write_bytes(b"half")
    EvaluatorOutputCache(tmp_path, evaluator, 64)
    assert not stale.exists()


def test_loader_threads_change_no_number_and_share_one_cache(phantom_run, tmp_path, monkeypatch):
    """One thread or four reading the samples (batches of 5, so threads race within a batch and on shared
    cache entries): the same numbers, the same entries, and the byte budget counts each entry once."""
    _, run = phantom_run
    monkeypatch.setenv("CFBENCH_IMAGE_CACHE_GB", "1")
    one = _metrics(run, tmp_path / "one", loader_threads=1)
    predictions_one = (run / "predictions.csv").read_text()
    four = _metrics(run, tmp_path / "four", loader_threads=4)
    assert four == one and (run / "predictions.csv").read_text() == predictions_one

    def entries(root):
        return {path.name: read_entry(path) for path in (root / "decoded-images" / "r64").rglob("*.entry")}

    single, shared = entries(tmp_path / "one"), entries(tmp_path / "four")
    assert single.keys() == shared.keys() and len(single) == 36
    assert all(np.array_equal(single[name], shared[name]) for name in single)
    cache = DecodedImageCache(tmp_path / "four", 64, 10**9)
    counted = sum(path.stat().st_size for path in (tmp_path / "four" / "decoded-images" / "r64").rglob("*.entry"))
    assert cache.bytes_used == counted
