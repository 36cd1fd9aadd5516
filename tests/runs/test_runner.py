import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cfbench.core.images import load_image, png_intact
from cfbench.core.storage import read_jsonl
from cfbench.datasets.edit_dataset import EditDataset
from cfbench.evaluation.evaluate import evaluate_run
from cfbench.runs.generate import RunSettings, generate, sample_seed
from cfbench.runs.manifest import RunManifest
from cfbench.runs.store import RunConfigMismatch
from tests.helpers.datasets import write_random_dataset

REPO_ROOT = Path(__file__).resolve().parents[2]  # subprocesses import tests.helpers from here


def settings(data, out, **overrides):
    values = dict(model="tests.helpers.fake_models:NoisyEditModel", split="holdout", data_dir=data, out=out, resolution=32)
    values.update(overrides)
    return RunSettings(**values)


def run_outputs(folder: Path) -> dict:
    """Everything a run produced, by sample: image bytes, guidance bytes, explanation, seed."""
    records = read_jsonl(folder / "results.jsonl")
    return {
        r["sample_id"]: ((folder / "images" / f"{r['sample_id']}.png").read_bytes(),
                         (folder / "guidance" / f"{r['sample_id']}.png").read_bytes(),
                         r["explanation"], r["seed"], r["info"])
        for r in records
    }


def test_generate_writes_run_folder(random_dataset, tmp_path):
    report = generate(settings(random_dataset, tmp_path / "run", batch_size=4), progress=False)
    assert (report.total, report.already_done, report.generated, report.failed) == (6, 0, 6, [])
    manifest = RunManifest.read(tmp_path / "run")
    assert manifest.config.model == "tests.helpers.fake_models:NoisyEditModel"
    assert manifest.runtime.versions["numpy"] == np.__version__
    records = read_jsonl(tmp_path / "run" / "results.jsonl")
    assert [r["sample_id"] for r in records] == [f"s{i:03d}" for i in range(6)]
    assert records[0]["explanation"].startswith("edited: Add the finding of small pleural effusion")
    assert records[0]["seed"] == sample_seed(0, "s000")
    image = load_image(tmp_path / "run" / "images" / "s000.png")
    dataset = EditDataset(random_dataset, "holdout", 32)
    past = dataset.past_image(dataset.samples[0])
    assert image.shape == (32, 32)
    assert np.abs(image - past)[:8].max() < 1e-4        # outside the edited square: unchanged
    assert np.abs(image - past)[8:24, 8:24].max() > 0.05  # inside: edited
    assert load_image(tmp_path / "run" / "guidance" / "s000.png")[16, 16] == 1.0


def test_results_do_not_depend_on_batch_size_and_limit_extends(random_dataset, tmp_path):
    generate(settings(random_dataset, tmp_path / "a", batch_size=1), progress=False)
    generate(settings(random_dataset, tmp_path / "b", batch_size=4, limit=3), progress=False)
    assert len(run_outputs(tmp_path / "b")) == 3
    resumed = generate(settings(random_dataset, tmp_path / "b", batch_size=5), progress=False)
    assert (resumed.already_done, resumed.generated) == (3, 3)
    assert run_outputs(tmp_path / "a") == run_outputs(tmp_path / "b")
    assert len(RunManifest.read(tmp_path / "b").sessions) == 2


def test_different_config_refuses_old_folder(random_dataset, tmp_path):
    generate(settings(random_dataset, tmp_path / "run"), progress=False)
    with pytest.raises(RunConfigMismatch, match="seed: 0 -> 7"):
        generate(settings(random_dataset, tmp_path / "run", seed=7), progress=False)
    with pytest.raises(RunConfigMismatch, match="model: 'tests.helpers.fake_models:NoisyEditModel' -> 'identity'"):
        generate(settings(random_dataset, tmp_path / "run", model="identity"), progress=False)


def test_bad_samples_fail_alone_and_are_retried(random_dataset, tmp_path):
    (random_dataset / "past" / "d002a.png").write_bytes(b"garbage")
    report = generate(settings(random_dataset, tmp_path / "run", model="tests.helpers.fake_models:NaNModel", batch_size=2),
                      progress=False)
    # s001, s003, s005 give NaN; s002 has a corrupt input; s000 and s004 succeed
    assert report.generated == 2 and len(report.failed) == 4
    failures = {f["sample_id"]: f["error"] for f in read_jsonl(tmp_path / "run" / "failures.jsonl")}
    assert "model 'tests.helpers.fake_models:NaNModel', sample 's001': image has 1 non-finite values" in failures["s001"]
    assert "sample 's002'" in failures["s002"] and "d002a.png" in failures["s002"]
    assert sorted(r["sample_id"] for r in read_jsonl(tmp_path / "run" / "results.jsonl")) == ["s000", "s004"]
    again = generate(settings(random_dataset, tmp_path / "run", model="tests.helpers.fake_models:NaNModel"), progress=False)
    assert again.already_done == 2 and len(again.failed) == 4  # failed samples are tried again


def test_resume_after_sigkill_matches_uninterrupted_run(tmp_path):
    data = write_random_dataset(tmp_path / "data", n=12)
    command = [sys.executable, "-m", "cfbench.cli", "--quiet", "generate", "--model", "tests.helpers.fake_models:NoisyEditModel",
               "--split", "holdout", "--data", str(data), "--resolution", "32", "--batch-size", "2"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]))

    reference = subprocess.run(command + ["--out", str(tmp_path / "reference")], env=env, capture_output=True, text=True)
    assert reference.returncode == 0, reference.stderr

    killed = subprocess.run(command + ["--out", str(tmp_path / "resumed")], capture_output=True, text=True,
                            env=dict(env, CFBENCH_TEST_KILL_AFTER="5"))
    assert killed.returncode == -9  # really killed, no clean-up ran
    partial = read_jsonl(tmp_path / "resumed" / "results.jsonl")
    # batches of two: samples 0-3 were handed to the writer thread, the batch with sample 5 died. Those the
    # writer had finished (images on disk, then the ledger line, in order) count; the others are redone.
    done = len(partial)
    assert [r["sample_id"] for r in partial] == [f"s{i:03d}" for i in range(done)] and done <= 4
    assert all(png_intact(tmp_path / "resumed" / "images" / f"{r['sample_id']}.png") for r in partial)

    resumed = subprocess.run(command + ["--out", str(tmp_path / "resumed")], env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{done} already done, {12 - done} generated now" in resumed.stdout
    records = read_jsonl(tmp_path / "resumed" / "results.jsonl")
    assert sorted(r["sample_id"] for r in records) == [f"s{i:03d}" for i in range(12)]  # none lost or duplicated
    assert run_outputs(tmp_path / "resumed") == run_outputs(tmp_path / "reference")
    leftovers = [p.name for p in (tmp_path / "resumed").rglob("*.tmp")]
    assert leftovers == [] or all(name.startswith(".") for name in leftovers)


def test_torn_ledger_line_is_ignored_and_repaired(random_dataset, tmp_path):
    generate(settings(random_dataset, tmp_path / "run", limit=2), progress=False)
    with (tmp_path / "run" / "results.jsonl").open("ab") as stream:
        stream.write(b'{"sample_id": "s002", "se')  # a crash in the middle of a write
    report = generate(settings(random_dataset, tmp_path / "run"), progress=False)
    assert (report.already_done, report.generated) == (2, 4)
    lines = (tmp_path / "run" / "results.jsonl").read_text().splitlines()
    assert len(lines) == 6 and all(json.loads(line) for line in lines)


def test_eval_of_identity_measures_no_change(random_dataset, tmp_path):
    generate(settings(random_dataset, tmp_path / "run", model="identity"), progress=False)
    report = evaluate_run(tmp_path / "run", evaluator="none", progress=False)
    dataset = EditDataset(random_dataset, "holdout", 32)
    expected = np.mean([np.abs(dataset.past_image(s).astype(np.float64) - dataset.current_image(s)).mean()
                        for s in dataset])
    assert report["metrics"]["mae_to_target"]["value"] == pytest.approx(expected, abs=1e-4)
    assert report["n_samples"] == 6 and "change_outside_lesion" not in report["metrics"]
    assert json.loads((tmp_path / "run" / "metrics.json").read_text()) == report


def test_shards_are_disjoint_cover_the_split_and_match_an_unsharded_run(tmp_path):
    from cfbench.runs.store import Shard, read_results

    data = write_random_dataset(tmp_path / "data", n=12)
    generate(settings(data, tmp_path / "whole", batch_size=3), progress=False)
    reports = [generate(settings(data, tmp_path / "sharded", batch_size=2, shard=Shard(k, 3)), progress=False)
               for k in range(3)]
    assert sum(report.total for report in reports) == 12 and all(report.failed == [] for report in reports)
    ledgers = sorted(path.name for path in (tmp_path / "sharded").glob("results*.jsonl"))
    assert ledgers == [f"results.shard-{k}-of-3.jsonl" for k in range(3)]
    owners = [{r["sample_id"] for r in read_jsonl(tmp_path / "sharded" / name)} for name in ledgers]
    assert sum(len(ids) for ids in owners) == 12 and len(set().union(*owners)) == 12  # disjoint and complete
    whole = run_outputs(tmp_path / "whole")
    sharded = {r["sample_id"]: r for r in read_results(tmp_path / "sharded")}
    for sample_id, (image, guidance, explanation, seed, _) in whole.items():
        assert (tmp_path / "sharded" / "images" / f"{sample_id}.png").read_bytes() == image
        assert (sharded[sample_id]["explanation"], sharded[sample_id]["seed"]) == (explanation, seed)
    assert RunManifest.read(tmp_path / "sharded").sessions == []  # each shard keeps its own runtime record
    assert json.loads((tmp_path / "sharded" / "runtime.shard-1-of-3.json").read_text())["shard"] == [1, 3]
    # an unsharded session afterwards finds everything done
    assert generate(settings(data, tmp_path / "sharded"), progress=False).already_done == 12
    with pytest.raises(ValueError, match="INDEX/COUNT"):
        Shard.parse("2 of 4")
    with pytest.raises(ValueError, match=r"0 <= K < N: the 4 parts are 0/4, 1/4, 2/4, 3/4 \(K counts from 0\)"):
        Shard.parse("4/4")
    with pytest.raises(ValueError, match=r"the 2 parts are 0/2, 1/2 "):
        Shard.parse("2/2")


def test_concurrent_shard_processes_under_a_launcher_environment(tmp_path):
    data = write_random_dataset(tmp_path / "data", n=10)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]),
               WORLD_SIZE="2")
    command = [sys.executable, "-m", "cfbench.cli", "--quiet", "generate", "--model", "tests.helpers.fake_models:NoisyEditModel",
               "--split", "holdout", "--data", str(data), "--resolution", "32", "--out", str(tmp_path / "run"),
               "--shard", "auto"]
    processes = [subprocess.Popen(command, env=dict(env, RANK=str(rank)), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for rank in range(2)]
    outputs = [process.communicate(timeout=300) for process in processes]
    assert all(process.returncode == 0 for process in processes), outputs
    report = evaluate_run(tmp_path / "run", evaluator="none", progress=False, cache_dir=tmp_path / "cache")
    assert report["n_samples"] == 10 and report["n_failed"] == 0
