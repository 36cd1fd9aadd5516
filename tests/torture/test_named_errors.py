"""Safe inputs and named errors (issue 22, mechanism 5): bad settings, hub specs, ledgers, full disks, weights
folders and a missing extra each end in one line naming the variable, key, file, row or tensor."""

from __future__ import annotations

import errno
import json
import logging
import sys
from pathlib import Path

import numpy as np
import pytest

from cfbench.cli import main
from cfbench.core import hub, storage
from cfbench.evaluation.evaluate import evaluate_run
from cfbench.leaderboard.gallery import thumbnail_name
from cfbench.phantom.dataset import build_phantom_dataset
from cfbench.runs.generate import RunSettings, generate
from cfbench.runs.store import read_results
from tests.helpers.datasets import write_random_dataset


def generate_argv(data: Path, out: Path, *extra: str) -> list[str]:
    return ["generate", "--model", "identity", "--split", "holdout", "--data", str(data), "--out", str(out),
            "--resolution", "32", *extra]


@pytest.mark.parametrize("variable, value, message", [
    ("CFBENCH_MAX_IMAGE_PIXELS", "lots", "environment variable CFBENCH_MAX_IMAGE_PIXELS: expected a whole number >= 1, got 'lots'"),
    ("CFBENCH_MAX_IMAGE_PIXELS", "-5", "environment variable CFBENCH_MAX_IMAGE_PIXELS: expected a whole number >= 1, got '-5'"),
    ("CFBENCH_IMAGE_CACHE_GB", "-1", "setting image_cache_gb (env CFBENCH_IMAGE_CACHE_GB): expected a number >= 0, got '-1'"),
    ("CFBENCH_RUNS_DIR", "runs\x07", "setting runs_dir: a folder path cannot contain control characters"),
])
def test_bad_environment_values_are_one_line_naming_the_variable(tmp_path, monkeypatch, capsys, variable, value,
                                                                  message):
    data = write_random_dataset(tmp_path / "data", n=2)
    monkeypatch.setenv(variable, value)
    assert main(generate_argv(data, tmp_path / "run")) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_a_toml_value_of_the_wrong_type_is_refused_naming_the_key(tmp_path, monkeypatch, capsys):
    config_file = Path(tmp_path / "config.toml")
    config_file.write_text("cache_dir = true\n")
    monkeypatch.setenv("CFBENCH_CONFIG", str(config_file))
    monkeypatch.delenv("CFBENCH_CACHE_DIR")
    monkeypatch.chdir(tmp_path)
    data = write_random_dataset(tmp_path / "data", n=2)
    assert main(generate_argv(data, tmp_path / "run")) == 2
    err = capsys.readouterr().err
    assert f"config file {config_file}: key cache_dir must be a quoted string, got bool True" in err
    assert not (tmp_path / "True").exists()
    config_file.write_text("image_cache_gb = 2\n")  # a number is right for a number setting
    assert main(generate_argv(data, tmp_path / "run")) == 0


@pytest.mark.parametrize("spec", ["hf:../..", "hf:org/name@../../x", "hf:org/na--me", "hf:org/name@.hidden",
                                  "hf:org/name@a..b", "hf:org", "hf:/abs/path", "hf:org/name@v1/../../x",
                                  "hf:org/.name", "hf:org/name@"])
def test_hub_specs_that_could_leave_the_cache_are_refused(spec, tmp_path, capsys):
    with pytest.raises(hub.HubSpecError, match="hf:"):
        hub.parse_hub_spec(spec)
    data = write_random_dataset(tmp_path / "data", n=1)
    assert main(generate_argv(data, tmp_path / "run", "--model", "roentgen", "--model-path", spec)) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_valid_hub_specs_are_accepted():
    assert hub.parse_hub_spec("hf:StanfordAIMI/roent-gen-v1-0") == hub.HubSpec("StanfordAIMI/roent-gen-v1-0")
    assert hub.parse_hub_spec("hf:org/name@v1.0").revision == "v1.0"
    assert hub.parse_hub_spec("hf:org/name@refs/pr/1").revision == "refs/pr/1"
    assert hub.parse_hub_spec("hf:org/name@" + "a" * 40).revision == "a" * 40


def test_a_garbage_line_in_the_middle_of_a_ledger_is_skipped_with_its_line(tmp_path, caplog):
    data = build_phantom_dataset(tmp_path / "data", 5, seed=2, resolution=32, fractions={"holdout": 1.0},
                                 progress=False)
    run = tmp_path / "run"
    settings = RunSettings(model="identity", split="holdout", data_dir=data, out=run, resolution=32)
    generate(settings, progress=False)
    ledger = run / "results.jsonl"
    lines = ledger.read_bytes().splitlines(keepends=True)
    ledger.write_bytes(b"".join(lines[:2] + [b"\x00garbage{\n", b"[1, 2]\n"] + lines[3:]))  # line 3 replaced
    with caplog.at_level(logging.WARNING):
        assert len(read_results(run)) == 4
    assert f"{ledger} line 3 is not a JSON record" in caplog.text and f"{ledger} line 4" in caplog.text
    report = generate(settings, progress=False)  # the lost line's sample is generated again
    assert report.generated == 1 and len(read_results(run)) == 5
    assert evaluate_run(run, evaluator="none", progress=False)["n_samples"] == 5


def full_disk_after(monkeypatch, writes: int) -> None:
    """Every fsync after the first ``writes`` fails as a full disk does."""
    calls = {"n": 0}
    real_fsync = storage.os.fsync

    def fsync(descriptor):
        calls["n"] += 1
        if calls["n"] > writes:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(descriptor)

    monkeypatch.setattr(storage.os, "fsync", fsync)


def test_a_full_disk_during_generate_is_one_line_and_keeps_finished_samples(tmp_path, monkeypatch, capsys):
    data = write_random_dataset(tmp_path / "data", n=6)
    run = tmp_path / "run"
    full_disk_after(monkeypatch, 8)  # manifest, then a few images and ledger lines
    assert main(["--quiet", *generate_argv(data, run)]) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1
    assert "No space left on device writing " + str(run) in err
    assert err.endswith("free space and rerun; finished samples are kept")
    kept = len(read_results(run))
    assert 0 < kept < 6
    monkeypatch.undo()
    assert main(["--quiet", *generate_argv(data, run)]) == 0
    assert len(read_results(run)) == 6


def test_a_full_disk_during_eval_is_one_line(tmp_path, monkeypatch, capsys):
    data = build_phantom_dataset(tmp_path / "data", 4, seed=3, resolution=32, fractions={"holdout": 1.0},
                                 progress=False)
    run = tmp_path / "run"
    generate(RunSettings(model="identity", split="holdout", data_dir=data, out=run, resolution=32), progress=False)
    full_disk_after(monkeypatch, 0)
    assert main(["--quiet", "eval", "--run", str(run), "--evaluator", "none"]) == 2
    err = capsys.readouterr().err
    assert "No space left on device writing " + str(run) in err and "Traceback" not in err


def test_gallery_thumbnail_names_do_not_collide():
    names = {thumbnail_name(sample_id, "00_model") for sample_id in ("X", "X_", "X?", "X/", "_X")}
    assert len(names) == 5
    assert all(name.endswith("__00_model.png") and "/" not in name for name in names)


def test_text_metrics_without_the_text_extra_are_skipped_with_the_reason(monkeypatch):
    from cfbench.evaluation.scoring import SampleTable, score

    monkeypatch.setitem(sys.modules, "rouge_score", None)  # an install without the `text` extra
    n = 4
    table = SampleTable(
        sample_ids=[f"s{i}" for i in range(n)], operations=[("add",)] * n, labels=np.zeros((n, 5)),
        race=np.zeros(n, np.int64), sex_male=np.zeros(n), age=np.full(n, 50.0), race_classes=(),
        generated={}, real={}, pixel={"mae_to_target": np.linspace(0.1, 0.4, n)},
        explanations=["more fluid"] * n, reference_explanations=["fluid increased"] * n)
    result = score(table)
    assert "bleu3" not in result["metrics"] or result["metrics"]["bleu3"]["value"] is None
    assert "text metrics need the 'text' extra: pip install 'cfbench[text]'" in json.dumps(result)
