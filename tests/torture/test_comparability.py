"""Comparability (issue 22, mechanism 3) and safe table files (mechanism 5): runs measured in different
settings never share a table or a bold mark; a malformed or foreign metrics.json is refused by name; CSV and
Markdown cells cannot become formulas, columns or HTML."""

from __future__ import annotations

import csv
import json
from dataclasses import replace

import pytest

from cfbench.cli import main
from cfbench.evaluation.comparability import KEY_FIELDS, METRIC_SCHEMA_VERSION, comparability_key
from cfbench.evaluation.evaluate import evaluate_run
from cfbench.evaluation.protocol import Protocol
from cfbench.leaderboard.table_model import LeaderboardError
from cfbench.leaderboard.write import write_leaderboard
from cfbench.phantom.dataset import build_phantom_dataset
from cfbench.runs.generate import RunSettings, generate
from tests.helpers.fake_models import RegionStatisticsEvaluator

FAST = Protocol(bootstrap_resamples=50, fid_bootstrap_resamples=0)
NOISY = "tests.helpers.fake_models:NoisyEditModel"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """name -> evaluated run folder: a and b at 32 px, c at 24 px, d at 32 px with another KL variant."""
    root = tmp_path_factory.mktemp("comparability")
    data = build_phantom_dataset(root / "data", 10, seed=9, resolution=32, fractions={"holdout": 1.0},
                                 progress=False)
    folders = {}
    for name, model, resolution, protocol in (("a", "identity", 32, FAST), ("b", NOISY, 32, FAST),
                                              ("c", NOISY, 24, FAST), ("d", "identity", 32,
                                                                       replace(FAST, kl_variant="eq4"))):
        out = root / name
        generate(RunSettings(model=model, split="holdout", data_dir=data, out=out, resolution=resolution),
                 progress=False)
        evaluate_run(out, evaluator=RegionStatisticsEvaluator(), protocol=protocol, cache_dir=root / "cache",
                     progress=False)
        folders[name] = out
    return folders


def board_options() -> dict:
    return dict(include_reported=False, plots=False, gallery=False, breakdown_resamples=10)


def test_every_evaluation_records_its_comparability_key(runs):
    metrics = json.loads((runs["a"] / "metrics.json").read_text())
    key = metrics["comparability"]
    assert set(key) == set(KEY_FIELDS) and key["metric_schema_version"] == METRIC_SCHEMA_VERSION
    assert key["split"] == "holdout" and key["resolution"] == 32 and key["dataset"].startswith("phantom ")
    assert key["evaluators"] == [{"evaluator": "region-statistics", "version": 1}]
    assert "bootstrap_resamples" not in key["protocol"] and key["protocol"]["kl_variant"] == "bernoulli"
    del metrics["comparability"]  # a metrics.json of an earlier version: the same key, derived
    assert comparability_key(metrics) == key


def test_runs_of_another_resolution_or_protocol_are_refused_naming_the_difference(runs, tmp_path, capsys):
    with pytest.raises(LeaderboardError, match=r"runs differ in resolution \(identity, noisy-edit \[b\]: "
                                               r"32; noisy-edit \[c\]: 24\)") as error:
        write_leaderboard([runs["a"], runs["b"], runs["c"]], tmp_path / "board", **board_options())
    assert "--allow-mixed" in str(error.value)
    assert main(["leaderboard", str(runs["a"]), str(runs["d"]), "--out", str(tmp_path / "cli"),
                 "--no-plots", "--no-gallery", "--no-reported"]) == 2
    assert "runs differ in protocol" in capsys.readouterr().err
    assert not (tmp_path / "board").exists()


def test_allow_mixed_writes_one_table_set_per_setting_never_bolded_across(runs, tmp_path):
    out = tmp_path / "board"
    write_leaderboard([runs["a"], runs["b"], runs["c"]], out, allow_mixed=True, **board_options())
    index = (out / "README.md").read_text()
    assert "runs differ in resolution" in index and "[set 1](set-1/README.md)" in index
    first = list(csv.DictReader((out / "set-1" / "instructx2x.csv").open()))
    second = list(csv.DictReader((out / "set-2" / "instructx2x.csv").open()))
    assert [row["source"].split("@")[0] for row in first] == ["a", "b"]
    assert [row["source"].split("@")[0] for row in second] == ["c"]
    assert all(row["best"] == "" for row in second)  # alone in its setting: nothing to win against


def test_compare_refuses_runs_of_different_settings(runs, capsys):
    fast = ["--bootstrap", "20", "--fid-bootstrap", "0"]
    assert main(["compare", str(runs["b"]), str(runs["c"]), *fast]) == 2
    assert "differ in resolution: 32 vs 24" in capsys.readouterr().err
    assert main(["compare", str(runs["a"]), str(runs["d"]), *fast]) == 0  # protocol: compare rescores both anyway


@pytest.mark.parametrize("content, reason", [
    ('{"metrics": {"fid": ', "not valid JSON"),
    ('{"hello": "world"}', "not a cfbench evaluation"),
    ('[1, 2, 3]', "not a cfbench evaluation"),
    ('{"metrics": {}, "run": 5, "dataset": {}}', "no 'run' and 'dataset' records"),
])
def test_a_malformed_or_foreign_metrics_file_is_refused_with_its_path(runs, tmp_path, capsys, content, reason):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(runs["a"], broken)
    (broken / "metrics.json").write_text(content)
    assert main(["leaderboard", str(runs["b"]), str(broken), "--out", str(tmp_path / "board"), "--no-plots",
                 "--no-gallery", "--no-reported"]) == 2
    err = capsys.readouterr().err
    assert str(broken / "metrics.json") in err and reason in err and "Traceback" not in err


def test_a_truncated_manifest_is_one_named_line(runs, tmp_path, capsys):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(runs["a"], broken)
    manifest = broken / "manifest.json"
    manifest.write_text(manifest.read_text()[:40])
    for argv in (["eval", "--run", str(broken), "--evaluator", "none"],
                 ["leaderboard", str(broken), "--out", str(tmp_path / "board"), "--no-plots", "--no-gallery"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert f"{manifest} is damaged or not a cfbench manifest" in err and "Traceback" not in err


def test_run_names_cannot_become_formulas_columns_or_html(runs, tmp_path):
    import shutil

    hostile = {"=HYPERLINK(1)": runs["a"], "a|b<img src=x onerror=alert(1)>": runs["b"]}
    folders = []
    for name, source in hostile.items():
        shutil.copytree(source, tmp_path / name)
        folders.append(tmp_path / name)
    out = tmp_path / "board"
    write_leaderboard(folders, out, **board_options())
    rows = list(csv.reader((out / "instructx2x.csv").open()))
    sources = [row[rows[0].index("source")] for row in rows[1:]]
    assert sources[0].startswith("'=HYPERLINK(1)@")
    for name in ("per_finding_auroc.csv", "instructx2x.csv"):
        for row in csv.reader((out / name).open()):
            assert not any(cell.startswith(("=", "+", "@")) for cell in row)
            assert not any(cell.startswith("-") and not cell[1:2].isdigit() for cell in row)
    table = (out / "instructx2x.md").read_text()
    assert "<img" not in table and "&lt;img src=x onerror=alert(1)>" in table and "a\\|b" in table
    line = next(line for line in table.splitlines() if "a\\|b" in line)
    assert line.replace("\\|", "").count("|") == (out / "instructx2x.md").read_text().splitlines()[2].count("|")
    assert "<img" not in (out / "README.md").read_text()
