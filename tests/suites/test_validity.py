"""The metric-validity suite end to end on a small phantom split: every run, the table's verdicts against the
ground truth by construction (MAE to x* grows with every family's severity), and the files a user reads."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from cfbench.evaluation.protocol import Protocol
from cfbench.models.degradations import FAMILIES
from cfbench.suites.validity import REFERENCE_FAMILIES, run_suite, suite_runs, validity_rows, write_validity

FAST = Protocol(bootstrap_resamples=60, fid_bootstrap_resamples=0)


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    root = tmp_path_factory.mktemp("validity")
    runs = run_suite(root / "cache", root / "runs", n=16, resolution=64, protocol=FAST, progress=False)
    return root, runs, validity_rows(runs, FAST)


def test_every_family_and_reference_is_judged_and_the_ground_truth_metric_is_valid(suite):
    _, runs, rows = suite
    assert len(runs) == 3 + sum(len(levels) for _, levels, _ in FAMILIES.values())
    families = {row["family"] for row in rows}
    assert families == set(FAMILIES) | set(REFERENCE_FAMILIES)
    for row in (r for r in rows if r["metric"] == "mae_to_true_counterfactual"):
        assert row["at_or_above"] == []  # nothing is closer to x* than x* itself
        if row["family"] not in REFERENCE_FAMILIES:
            assert row["rho"] == pytest.approx(1.0), row["family"]
            assert row["paired"] == "worse" and row["paired_all"] == ["worse"] * 3
    identity = next(r for r in rows if r["metric"] == "change_outside_pseudo_mask" and r["family"] == "identity")
    assert identity["paired"] == "better" and identity["at_or_above"] == ["identity"]  # no change: trivially local


def test_files_round_trip_and_the_runs_are_in_table_order(suite, tmp_path):
    root, _, rows = suite
    written = write_validity(rows, tmp_path)
    assert [p.name for p in written] == ["validity.md", "validity.csv", "validity.png"]
    with open(tmp_path / "validity.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == len(rows)
    assert {row["metric"] for row in table} >= {"cfbench_score", "cmig", "effect_error", "w1_outside_pseudo_mask"}
    markdown = (tmp_path / "validity.md").read_text()
    for family, (_, severities, _) in FAMILIES.items():
        assert f"`{family}`" in markdown and ", ".join(f"{s:g}" for s in severities) in markdown
    assert (tmp_path / "validity.png").stat().st_size > 10_000
    assert [run.label for run in suite_runs(root / "runs")][:4] == ["true-counterfactual", "identity",
                                                                   "ground-truth", "under-edit s=0.25"]
    np.testing.assert_equal(rows[0]["severities"][0], 0.0)
