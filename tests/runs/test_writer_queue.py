"""Image writes off the generation thread: order, atomicity, errors, and the png_compression setting."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from cfbench.core.images import load_image
from cfbench.core.storage import read_jsonl
from cfbench.runs import store as store_module
from cfbench.runs.generate import RunSettings, generate
from cfbench.runs.manifest import RunManifest


def settings(data, out, **overrides):
    values = dict(model="tests.helpers.fake_models:NoisyEditModel", split="holdout", data_dir=data, out=out,
                  resolution=32, batch_size=2)
    values.update(overrides)
    return RunSettings(**values)


def test_images_are_on_disk_before_the_ledger_line_and_lines_keep_the_save_order(random_dataset, tmp_path,
                                                                                 monkeypatch):
    events = []
    original_save, original_append = store_module.save_png16, store_module.JsonlLedger.append_line
    main = threading.get_ident()

    def save(path, image, level=1):
        original_save(path, image, level)
        events.append(("png", path.parent.name, path.stem, threading.get_ident() != main))

    def append(self, line):
        record = json.loads(line)
        if "seed" in record:  # a results line: every file of the sample must already be complete
            folder = self.path.parent
            assert load_image(folder / "images" / f"{record['sample_id']}.png").shape == (32, 32)
            events.append(("ledger", "results", record["sample_id"], threading.get_ident() != main))
        original_append(self, line)

    monkeypatch.setattr(store_module, "save_png16", save)
    monkeypatch.setattr(store_module.JsonlLedger, "append_line", append)
    generate(settings(random_dataset, tmp_path / "run"), progress=False)
    ledger = [e[2] for e in events if e[0] == "ledger"]
    assert ledger == [f"s{i:03d}" for i in range(6)]
    for sample in ledger:  # image and guidance map written before the sample's line
        position = events.index(("ledger", "results", sample, True))
        assert ("png", "images", sample, True) in events[:position]
        assert ("png", "guidance", sample, True) in events[:position]
    assert all(off_thread for *_, off_thread in events)  # nothing written on the generation thread


def test_a_failed_write_stops_the_run_with_the_error_and_records_nothing_after_it(random_dataset, tmp_path,
                                                                                  monkeypatch):
    original_save = store_module.save_png16

    def save(path, image, level=1):
        if path.stem == "s002":
            raise OSError("disk full")
        original_save(path, image, level)

    monkeypatch.setattr(store_module, "save_png16", save)
    with pytest.raises(RuntimeError, match="disk full"):
        generate(settings(random_dataset, tmp_path / "run"), progress=False)
    recorded = [r["sample_id"] for r in read_jsonl(tmp_path / "run" / "results.jsonl")]
    assert recorded == ["s000", "s001"]  # in order, nothing after the failed sample
    monkeypatch.setattr(store_module, "save_png16", original_save)
    report = generate(settings(random_dataset, tmp_path / "run"), progress=False)  # resumes; the lock was released
    assert (report.already_done, report.generated) == (2, 4)


def test_png_compression_changes_bytes_not_pixels_and_is_recorded_per_session(random_dataset, tmp_path):
    fast = generate(settings(random_dataset, tmp_path / "level0", png_compression=0), progress=False)
    small = generate(settings(random_dataset, tmp_path / "level9", png_compression=9), progress=False)
    assert fast.generated == small.generated == 6
    for sample in ("s000", "s005"):
        a, b = (tmp_path / "level0" / "images" / f"{sample}.png"), (tmp_path / "level9" / "images" / f"{sample}.png")
        assert a.read_bytes() != b.read_bytes() and a.stat().st_size >= b.stat().st_size  # noise barely compresses
        np.testing.assert_array_equal(load_image(a), load_image(b))
    level0, level9 = RunManifest.read(tmp_path / "level0"), RunManifest.read(tmp_path / "level9")
    assert level0.runtime.png_compression == 0 and level9.runtime.png_compression == 9
    assert level0.config == level9.config  # same run identity: a level is a session fact
    report = generate(settings(random_dataset, tmp_path / "level0", png_compression=5), progress=False)
    assert report.already_done == 6  # another level resumes the same run
    assert [s.png_compression for s in RunManifest.read(tmp_path / "level0").sessions] == [0, 5]
    with pytest.raises(ValueError, match="png_compression"):
        generate(settings(random_dataset, tmp_path / "bad", png_compression=10), progress=False)


def test_the_queue_is_bounded(random_dataset, tmp_path, monkeypatch):
    sizes = []
    original = store_module._Writer.submit_sample

    def submit(self, *jobs):
        sizes.append(self._queue.qsize())
        original(self, *jobs)

    monkeypatch.setattr(store_module._Writer, "submit_sample", submit)
    generate(settings(random_dataset, tmp_path / "run"), progress=False)
    assert sizes and max(sizes) <= 8
