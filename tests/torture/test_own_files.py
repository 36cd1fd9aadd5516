"""Own files only (issue 22, mechanism 4): cleanup removes only cfbench's own temporaries of dead processes on
this host; --out cannot be a file, the dataset or a foreign folder; an evaluation holds the run's lock; nothing
is written inside the installed package."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cfbench.core.hashing import folder_sha256
from cfbench.core.storage import FolderLock, LockedError, remove_stale_temporaries, temporary_prefix
from cfbench.evaluation.evaluate import evaluate_run
from cfbench.phantom.dataset import build_phantom_dataset
from cfbench.runs.generate import RunSettings, generate
from cfbench.runs.store import RunFolderError, RunInProgress
from tests.helpers.datasets import write_random_dataset

REPO = Path(__file__).resolve().parents[2]


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_cleanup_removes_only_this_hosts_cfbench_temporaries_of_dead_processes(tmp_path):
    pid = dead_pid()
    ours_dead = tmp_path / f"{temporary_prefix('a.png', pid)}x1.tmp"
    ours_alive = tmp_path / f"{temporary_prefix('b.png')}x2.tmp"
    users_own = tmp_path / f".notes.{pid}.draft.tmp"  # the old pattern: a user's file, not cfbench's
    other_host = tmp_path / f".cfbench-c.png.another-host.{pid}.x3.tmp"  # a live write on a shared file system
    for path in (ours_dead, ours_alive, users_own, other_host):
        path.write_bytes(b"x")
    assert remove_stale_temporaries(tmp_path) == [ours_dead]
    assert ours_alive.exists() and users_own.exists() and other_host.exists()


def settings(data: Path, out: Path) -> RunSettings:
    return RunSettings(model="identity", split="holdout", data_dir=data, out=out, resolution=32)


def test_out_must_be_a_new_folder_or_a_run_folder(tmp_path):
    data = write_random_dataset(tmp_path / "data", n=2)
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "holiday.jpg").write_bytes(b"jpg")
    for out, message in ((a_file, "is a file"), (data, "is the dataset folder or holds it"),
                         (tmp_path, "is the dataset folder or holds it"), (foreign, "is not a cfbench run folder")):
        with pytest.raises(RunFolderError, match=message):
            generate(settings(data, out), progress=False)
    assert sorted(p.name for p in data.iterdir()) == sorted(p.name for p in write_random_dataset(
        tmp_path / "again", n=2).iterdir())  # nothing was added to the dataset
    assert a_file.read_text() == "mine" and [p.name for p in foreign.iterdir()] == ["holiday.jpg"]
    run = tmp_path / "run"
    generate(settings(data, run), progress=False)
    assert generate(settings(data, run), progress=False).already_done == 2  # an existing run folder resumes


def test_eval_holds_the_run_lock_and_refuses_a_run_still_being_generated(tmp_path):
    data = build_phantom_dataset(tmp_path / "data", 4, seed=1, resolution=32, fractions={"holdout": 1.0},
                                 progress=False)
    run = tmp_path / "run"
    generate(settings(data, run), progress=False)
    with FolderLock(run / ".lock.eval", "evaluation"):
        with pytest.raises(LockedError, match=f"in use by process {os.getpid()}"):
            evaluate_run(run, evaluator="none", progress=False)
    with FolderLock(run / ".lock", "run folder"):  # what a live `cfbench generate` holds
        with pytest.raises(RunInProgress, match="still being generated: wait for it to finish, or pass --partial"):
            evaluate_run(run, evaluator="none", progress=False)
        assert evaluate_run(run, evaluator="none", progress=False, partial=True)["n_samples"] == 4
    assert evaluate_run(run, evaluator="none", progress=False)["n_samples"] == 4


def test_hashing_the_shipped_weights_writes_nothing_in_the_package():
    shipped = REPO / "cfbench" / "data" / "phantom_instructx2x"
    before = sorted((p.relative_to(REPO), p.stat().st_mtime_ns) for p in shipped.rglob("*"))
    digests = folder_sha256(shipped)
    assert digests and folder_sha256(shipped) == digests  # the second time from the user cache
    assert sorted((p.relative_to(REPO), p.stat().st_mtime_ns) for p in shipped.rglob("*")) == before
