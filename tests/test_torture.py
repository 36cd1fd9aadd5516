"""Hostile and careless input, one test per case seen (issue 15): nothing crashes a run or an evaluation,
nothing leaks outside its folder, no weights file runs code, and what was computed is kept."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cfbench.api.model import CounterfactualModel, EditRequest, EditResult, LoadContext
from cfbench.cli import main
from cfbench.core import config
from cfbench.core.images import ImageReadError, load_image
from cfbench.core.storage import FolderLock, LockedError, remove_stale_temporaries, temporary_prefix
from cfbench.datasets.edit_dataset import EditDataset
from cfbench.datasets.layout import DatasetError
from cfbench.evaluation.evaluate import evaluate_run
from cfbench.metrics.regression import pearson_r
from cfbench.phantom.dataset import build_phantom_dataset
from cfbench.runs.generate import RunSettings, generate
from cfbench.runs.store import read_failures, read_results
from tests.helpers.datasets import write_random_dataset

REPO = Path(__file__).resolve().parents[1]


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width x height pixels (a decompression bomb costs nothing to make this way)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def settings(data: Path, out: Path, model: str = "identity", **values) -> RunSettings:
    return RunSettings(model=model, split="holdout", data_dir=data, out=out, resolution=32, **values)


# --------------------------------------------------------------------------------------------- 1. bombs

def test_decompression_bomb_is_refused_from_the_header_and_named(tmp_path):
    bomb = png_header_only(tmp_path / "bomb.png", 20000, 20000)
    with pytest.raises(ImageReadError, match=r"bomb.png is 20000 x 20000 = 400 MP, over the limit of 64 MP"):
        load_image(bomb, 32)
    large = png_header_only(tmp_path / "large.png", 12000, 12000)  # 144 MP: under PIL's own bomb error
    with pytest.raises(ImageReadError, match="large.png is 12000 x 12000"):
        load_image(large)


def test_bomb_as_prior_fails_that_sample_only_and_the_run_finishes_twice(tmp_path):
    data = write_random_dataset(tmp_path / "data", n=4)
    png_header_only(data / "past" / "d001a.png", 20000, 20000)
    for attempt in range(2):
        report = generate(settings(data, tmp_path / "run", model="tests.helpers.fake_models:NoisyEditModel"),
                          progress=False)
        assert len(report.failed) == 1 and "d001a.png is 20000 x 20000" in report.failed[0]
        assert {r["sample_id"] for r in read_results(tmp_path / "run")} == {"s000", "s002", "s003"}
    assert [f["sample_id"] for f in read_failures(tmp_path / "run")] == ["s001", "s001"]


# ------------------------------------------------------------------- 2. unreadable files in evaluation

def test_unreadable_target_mask_and_output_exclude_only_their_samples(tmp_path):
    data = build_phantom_dataset(tmp_path / "data", 12, seed=3, resolution=32, fractions={"holdout": 1.0},
                                 progress=False)
    run = tmp_path / "run"
    generate(settings(data, run), progress=False)
    dataset = EditDataset(data, "holdout", 32)
    first, second, third = dataset.samples[:3]
    target = data / "current" / f"{first.current_dicom_id}.png"
    target.write_bytes(target.read_bytes()[:40])  # truncated
    (data / "lesion_mask" / f"{second.sample_id}.png").unlink()
    (run / "images" / f"{third.sample_id}.png").write_bytes(b"not a png")
    report = evaluate_run(run, evaluator="none", progress=False)
    excluded = {item["sample_id"]: item["reason"] for item in report["excluded_samples"]}
    assert set(excluded) == {first.sample_id, second.sample_id, third.sample_id}
    assert "cannot read image" in excluded[first.sample_id] and target.name in excluded[first.sample_id]
    assert "not found" in excluded[second.sample_id]
    assert "not a PNG or JPEG" in excluded[third.sample_id]
    assert report["n_samples"] == 9 and report["n_excluded"] == 3
    assert report["metrics"]["mae_to_target"]["n"] == 9


def test_generate_redoes_samples_whose_files_were_damaged_after_the_ledger(tmp_path):
    data = write_random_dataset(tmp_path / "data", n=4)
    run = tmp_path / "run"
    generate(settings(data, run, model="tests.helpers.fake_models:NoisyEditModel"), progress=False)
    original = (run / "images" / "s001.png").read_bytes()
    (run / "images" / "s001.png").write_bytes(original[: len(original) // 2])
    (run / "guidance" / "s002.png").unlink()
    report = generate(settings(data, run, model="tests.helpers.fake_models:NoisyEditModel"), progress=False)
    assert report.generated == 2 and report.already_done == 2
    assert (run / "images" / "s001.png").read_bytes() == original  # same seed, same image


# ------------------------------------------------------------------------------ 3. misbehaving models

class UnruleyModel(CounterfactualModel):
    """Per sample id: s000 NumPy/NaN info, s001 raises, s002 SystemExit, the rest the input."""

    name = "unruly"

    @classmethod
    def load(cls, context: LoadContext) -> "UnruleyModel":
        return cls()

    def edit(self, requests: Sequence[EditRequest]) -> list[EditResult]:
        ids = {r.sample_id for r in requests}
        if "s001" in ids:
            raise RuntimeError("boom on s001")
        if "s002" in ids:
            raise SystemExit(3)
        return [EditResult(image=r.image, info={"score": np.float32(0.5), "nan": float("nan"), "n": np.int64(2),
                                                 "arr": np.arange(2)}) for r in requests]


class ShortModel(CounterfactualModel):
    name = "short"

    @classmethod
    def load(cls, context):
        return cls()

    def edit(self, requests):
        return [EditResult(image=r.image) for r in requests[:-1]]


class SleepyModel(CounterfactualModel):
    name = "sleepy"

    @classmethod
    def load(cls, context):
        return cls()

    def edit(self, requests):
        import time

        if any(r.sample_id == "s001" for r in requests):
            time.sleep(30)
        return [EditResult(image=r.image) for r in requests]


def test_one_bad_sample_in_a_batch_does_not_fail_the_others(tmp_path):
    data = write_random_dataset(tmp_path / "data", n=5)
    report = generate(settings(data, tmp_path / "run", model="tests.test_torture:UnruleyModel", batch_size=4),
                      progress=False)
    failures = {f["sample_id"]: f["error"] for f in read_failures(tmp_path / "run")}
    assert set(failures) == {"s001", "s002"}
    assert "RuntimeError: boom on s001" in failures["s001"] and "SystemExit: 3" in failures["s002"]
    assert "model 'tests.test_torture:UnruleyModel'" in failures["s002"]
    results = {r["sample_id"]: r for r in read_results(tmp_path / "run")}
    assert set(results) == {"s000", "s003", "s004"} and report.generated == 3
    assert results["s000"]["info"] == {"score": 0.5, "nan": None, "n": 2, "arr": [0, 1]}


def test_result_count_mismatch_names_the_model(tmp_path):
    data = write_random_dataset(tmp_path / "data", n=3)
    generate(settings(data, tmp_path / "run", model="tests.test_torture:ShortModel", batch_size=3), progress=False)
    errors = [f["error"] for f in read_failures(tmp_path / "run")]
    assert len(errors) == 3  # retried one by one: each call still returns 0 results for 1 request
    assert all("model 'tests.test_torture:ShortModel'" in e and "returned 0 results for 1 requests" in e
               for e in errors)


def test_sample_timeout_records_the_hung_sample_and_goes_on(tmp_path):
    data = write_random_dataset(tmp_path / "data", n=3)
    report = generate(settings(data, tmp_path / "run", model="tests.test_torture:SleepyModel", sample_timeout=0.5),
                      progress=False)
    assert report.generated == 2 and len(report.failed) == 1
    assert "SampleTimeout: no result after 0.5 s" in report.failed[0]


# ------------------------------------------------------------------------------------- 4. demographics

def test_non_finite_ages_and_unknown_groups_are_excluded_and_counted(tmp_path):
    data = build_phantom_dataset(tmp_path / "data", 12, seed=4, resolution=32, fractions={"holdout": 1.0},
                                 progress=False)
    table = pd.read_csv(data / "instructions.csv", dtype=str)
    table.loc[0, "age"], table.loc[1, "age"], table.loc[2, "race"] = "inf", "nan", "Martian"
    table.to_csv(data / "instructions.csv", index=False)
    generate(settings(data, tmp_path / "run", model="identity"), progress=False)
    from tests.helpers.fake_models import RegionStatisticsEvaluator

    report = evaluate_run(tmp_path / "run", evaluator=RegionStatisticsEvaluator(), progress=False,
                          cache_dir=tmp_path / "cache")
    age = report["metrics"]["age_pearson"]
    assert (age["n"], age["n_excluded"]) == (10, 2) and -1.0 <= age["value"] <= 1.0
    assert age["reason"] == "samples without a known, finite age"
    race = report["metrics"]["race_auroc"]
    assert (race["n"], race["n_excluded"]) == (11, 1)
    with pytest.raises(ValueError, match="NaN or infinite"):
        pearson_r(np.array([1.0, 2.0, np.inf]), np.array([1.0, 2.0, 3.0]))


# ----------------------------------------------------------------------------------- 5. datasets, images

def test_bad_rows_are_skipped_with_reasons_and_strict_refuses(tmp_path):
    data = write_random_dataset(tmp_path / "data", n=8)
    table = pd.read_csv(data / "instructions.csv", dtype=str)
    table.loc[0, "instruction"] = ""
    table.loc[1, "Cardiomegaly"] = "2"
    table.loc[2, "instruction"], table.loc[2, "operations"] = "Make it nicer", ""
    table.loc[3, "sample_id"] = table.loc[4, "sample_id"]
    table.loc[5, "past_dicom_id"] = "../../../etc/passwd"
    table.loc[6, "current_dicom_id"] = "/etc/hostname"
    table.to_csv(data / "instructions.csv", index=False)
    dataset = EditDataset(data, "holdout")
    reasons = {row.row: row.reason for row in dataset.skipped_rows}
    assert [s.row for s in dataset] == [4, 8]
    assert "column 'instruction' is blank" in reasons[1] and "label '2'" in reasons[2]
    assert "cannot read the operations" in reasons[3] and "duplicate sample id" in reasons[5]
    assert "past_dicom_id '../../../etc/passwd' is not a plain file name" in reasons[6]
    assert "current_dicom_id '/etc/hostname' is not a plain file name" in reasons[7]
    with pytest.raises(DatasetError, match="row 1: column 'instruction' is blank"):
        EditDataset(data, "holdout", strict=True)
    report = generate(settings(data, tmp_path / "run"), progress=False)
    assert report.total == 2
    evaluation = evaluate_run(tmp_path / "run", evaluator="none", progress=False)
    assert len(evaluation["dataset_rows_skipped"]) == 6


def test_non_utf8_bytes_are_reported_with_their_line(tmp_path):
    data = write_random_dataset(tmp_path / "data", n=4)
    lines = (data / "instructions.csv").read_bytes().split(b"\n")
    lines[3] = lines[3].replace(b"Add", b"Add\xe9", 1)
    (data / "instructions.csv").write_bytes(b"\n".join(lines))
    with pytest.raises(DatasetError, match=r"instructions.csv line 4 \(data row 3\), byte 4 of the line"):
        EditDataset(data, "holdout")


def test_image_modes_and_shapes(tmp_path):
    gray = np.tile(np.linspace(0, 255, 40, dtype=np.uint8), (30, 1))
    Image.fromarray(np.stack([gray] * 3, -1)).save(tmp_path / "rgb-gray.png")
    assert np.allclose(load_image(tmp_path / "rgb-gray.png"), gray / 255.0)
    colour = np.stack([gray, gray // 2, gray], -1)
    Image.fromarray(colour).save(tmp_path / "colour.png")
    with pytest.raises(ImageReadError, match="colour picture"):
        load_image(tmp_path / "colour.png")
    rgba = np.concatenate([np.stack([gray] * 3, -1), np.full((30, 40, 1), 128, np.uint8)], -1)
    Image.fromarray(rgba).save(tmp_path / "alpha.png")
    with pytest.raises(ImageReadError, match="transparent pixels"):
        load_image(tmp_path / "alpha.png")
    Image.fromarray(gray).convert("P").save(tmp_path / "palette.png")
    assert load_image(tmp_path / "palette.png").shape == (30, 40)
    # non-square: centre-cropped to 30 x 30 (columns 5..34), then resized, never stretched
    wide = np.zeros((30, 40), np.uint8)
    wide[:, 5:35] = 200
    Image.fromarray(wide).save(tmp_path / "wide.png")
    assert np.allclose(load_image(tmp_path / "wide.png", 30), 200 / 255.0)
    Image.fromarray(gray).save(tmp_path / "really-a-jpeg.png", format="JPEG", quality=95)
    assert load_image(tmp_path / "really-a-jpeg.png").shape == (30, 40)
    (tmp_path / "text.png").write_text("hello")
    with pytest.raises(ImageReadError, match="not a PNG or JPEG"):
        load_image(tmp_path / "text.png")


# ---------------------------------------------------------------------------------------- 6. builders

def test_icg_builder_writes_nothing_outside_out(tmp_path):
    from tests.datasets.test_icg import write_pair

    root = tmp_path / "icg"
    write_pair(root, "pair-ok", [0.0] * 14, [1.0] + [0.0] * 13)
    write_pair(root, "pair-evil", [0.0] * 14, [1.0] + [0.0] * 13)
    document = next((root / "pair-evil").glob("*.json"))
    data = json.loads(document.read_text())
    data["reference-dicom-id"] = "../../escaped"
    data["followup-dicom-id"] = str(tmp_path / "absolute")
    document.write_text(json.dumps(data))
    assert main(["--quiet", "data", "build", "icg", "--root", str(root), "--out", str(tmp_path / "out"),
                 "--resolution", "32"]) == 0
    written = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.png")
               if not p.is_relative_to(root)}
    assert all(p.startswith("out/") for p in written) and not (tmp_path / "escaped.png").exists()
    assert json.loads((tmp_path / "out" / "dataset.json").read_text())["written"] == 1


# ----------------------------------------------------------------------------------- 7. weights files

class Payload:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ['CFBENCH_TORTURE_MARK']}",))


def test_a_planted_pickle_does_not_run_and_a_replaced_file_is_refused(tmp_path, monkeypatch):
    import torch

    from cfbench.evaluation import weights
    from cfbench.evaluation.weights_trust import UntrustedWeightsError
    from cfbench.evaluation.xrv import XRVPathologyEvaluator
    from tests.evaluation.test_xrv_evaluators import write_fake_xrv_weights

    monkeypatch.setenv("HOME", str(tmp_path))
    paths = write_fake_xrv_weights(tmp_path)
    XRVPathologyEvaluator()  # trusted on first use
    mark = tmp_path / "payload-ran"
    monkeypatch.setenv("CFBENCH_TORTURE_MARK", str(mark))
    torch.save({"state": Payload()}, paths["xrv-densenet121-all"])
    with pytest.raises(UntrustedWeightsError, match="not the .* recorded in"):
        XRVPathologyEvaluator()
    assert main(["weights", "trust", "xrv-densenet121-all"]) == 0  # the user accepts the new file...
    with pytest.raises(UntrustedWeightsError, match="refused to load .*could run code"):
        XRVPathologyEvaluator()  # ...which is still unpickled without running its code
    assert not mark.exists()
    assert weights.require("xrv-densenet121-all") == paths["xrv-densenet121-all"]


# ------------------------------------------------------------------------------ 8. permissions, 9. config

def test_files_are_written_with_the_umask_permissions(tmp_path):
    code = ("import os, sys; os.umask(int(sys.argv[2], 8)); from cfbench.core.storage import atomic_write_text;"
            "atomic_write_text(sys.argv[1], 'x')")
    for umask, mode in (("022", 0o644), ("027", 0o640)):
        target = tmp_path / f"file-{umask}.txt"
        subprocess.run([sys.executable, "-c", code, str(target), umask], check=True, cwd=REPO)
        assert target.stat().st_mode & 0o777 == mode


def test_config_values_with_control_characters_are_refused(tmp_path):
    with pytest.raises(config.ConfigError, match="control characters"):
        config.set_value("data_dir", "/data\nweights_dir = '/x'")
    path = config.set_value("data_dir", 'C:\\data "quoted"')
    assert config.resolve("data_dir").value == 'C:\\data "quoted"' and path.is_file()
    assert main(["config", "set", "runs_dir", "a\tb"]) == 2


# -------------------------------------------------------------------------- 10. concurrency, 11. leftovers

def test_a_second_writer_of_a_run_folder_is_refused_naming_the_first(tmp_path, capsys):
    data = write_random_dataset(tmp_path / "data", n=2)
    with FolderLock(tmp_path / "run" / ".lock", "run folder"):
        status = main(["--quiet", "generate", "--model", "identity", "--split", "holdout", "--data", str(data),
                       "--out", str(tmp_path / "run"), "--resolution", "32"])
    assert status == 2
    assert f"is in use by process {os.getpid()}" in capsys.readouterr().err
    with pytest.raises(LockedError):  # held: refused at once
        with FolderLock(tmp_path / "x" / ".lock", "x"), FolderLock(tmp_path / "x" / ".lock", "x"):
            pass
    assert generate(settings(data, tmp_path / "run"), progress=False).generated == 2  # released: goes on


def test_a_lock_left_by_a_killed_process_is_taken_over(tmp_path):
    code = ("import os, signal, sys; from cfbench.core.storage import FolderLock;"
            "FolderLock(sys.argv[1], 'x').acquire(); os.kill(os.getpid(), signal.SIGKILL)")
    subprocess.run([sys.executable, "-c", code, str(tmp_path / ".lock")], cwd=REPO)
    assert "process" in (tmp_path / ".lock").read_text()
    with FolderLock(tmp_path / ".lock", "x"):
        pass


def test_temporaries_of_dead_processes_are_cleaned_on_the_next_run(tmp_path):
    data = write_random_dataset(tmp_path / "data", n=2)
    run = tmp_path / "run"
    generate(settings(data, run), progress=False)
    dead = run / "images" / f"{temporary_prefix('s000.png', 999999999)}abc123.tmp"
    alive = run / "images" / f"{temporary_prefix('s001.png')}abc123.tmp"
    dead.write_bytes(b"x")
    alive.write_bytes(b"x")
    generate(settings(data, run), progress=False)
    assert not dead.exists() and alive.exists()
    assert remove_stale_temporaries(run) == []


def test_dead_demo_builds_are_removed(tmp_path):
    from cfbench.phantom.dataset import demo_dataset

    leftover = tmp_path / ".building-demo-999999999-abc"
    leftover.mkdir(parents=True)
    (leftover / "instructions.csv").write_text("partial")
    demo_dataset(tmp_path, resolution=32, progress=False)
    assert not leftover.exists() and not list(tmp_path.glob(".building-demo-*"))


@pytest.mark.parametrize("argv, message", [
    (["run", "--model", "identity", "--split", "demo", "--resolution", "0"], "must be at least 1"),
    (["run", "--model", "identity", "--split", "demo", "--resolution", "-5"], "must be at least 1"),
    (["run", "--model", "identity", "--split", "demo", "--resolution", "8"], "at least 16 pixels"),
    (["data", "phantom", "--n", "0", "--out", "x"], "must be at least 1"),
    (["run", "--model", "identity", "--split", "demo", "--sample-timeout", "-1"], "finite number > 0"),
])
def test_nonsense_numbers_are_refused_by_the_parser(argv, message, capsys):
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2 and message in capsys.readouterr().err


def test_pair_engine_refuses_ids_that_would_write_outside_out(tmp_path):
    """The MIMIC and NIH builders write through the pair engine: an id from a metadata file that is a path
    fails that pair, names it, and writes nothing."""
    from cfbench.datasets.pair_engine import FAILED, PairJob, PairSettings, process_pair

    source = tmp_path / "source.png"
    Image.fromarray(np.full((40, 40), 100, np.uint8)).save(source)
    for stem in ("../../escaped", str(tmp_path / "absolute")):
        job = PairJob("p0", str(source), str(source), stem, "fine")
        outcome = process_pair(job, tmp_path / "out", PairSettings(resolution=32, register=False))
        assert outcome.status == FAILED and "is not a plain file name" in outcome.error
    assert not list(tmp_path.rglob("escaped*")) and not (tmp_path / "absolute.png").exists()
    assert not (tmp_path / "out").exists()
