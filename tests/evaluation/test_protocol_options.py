"""The open protocol choices (--kl, --age-reference, --clip-i): each changes the number exactly as a hand
computation says, is recorded in metrics.json (protocol and protocol_choices) and appears in the table notes;
small-n warnings in metrics.json, the console and the tables."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from cfbench.cli import main
from cfbench.core.findings import EVALUATED_FINDINGS
from cfbench.evaluation.evaluate import evaluate_run
from cfbench.evaluation.protocol import SMALL_N, Protocol
from cfbench.evaluation.results import load_table
from cfbench.evaluation.scoring import SampleTable, score
from cfbench.leaderboard.formats import to_latex, to_markdown
from cfbench.leaderboard.table_model import build_leaderboard, load_runs
from cfbench.phantom.dataset import build_phantom_dataset
from cfbench.runs.generate import RunSettings, generate
from tests.helpers.fake_models import RegionStatisticsEvaluator

FAST = Protocol(bootstrap_resamples=20, fid_bootstrap_resamples=0)


def hand_kl(p, q, variant):
    eps = 1e-7
    p = [min(max(x, eps), 1 - eps) for x in p]
    q = [min(max(x, eps), 1 - eps) for x in q]
    if variant == "bernoulli":
        return sum(a * math.log(a / b) + (1 - a) * math.log((1 - a) / (1 - b)) for a, b in zip(p, q))
    if variant == "normalised":
        p = [a / sum(p) for a in p]
        q = [b / sum(q) for b in q]
    return sum(a * math.log(a / b) for a, b in zip(p, q))


def pearson(x, y):
    mx, my = sum(x) / len(x), sum(y) / len(y)
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
    return sxy / math.sqrt(sum((a - mx) ** 2 for a in x) * sum((b - my) ** 2 for b in y))


def tiny_table(n=6):
    rng = np.random.default_rng(3)
    return SampleTable(
        sample_ids=[f"s{i}" for i in range(n)], operations=[("add",)] * n,
        labels=rng.integers(0, 2, (n, 5)).astype(float), race=np.zeros(n, np.int64), sex_male=np.ones(n),
        age=np.array([60.0, 71, 55, 80, 47, 66][:n]), race_classes=("a",),
        generated={"pathology": rng.uniform(0.05, 0.95, (n, 5)), "age": np.array([58.0, 75, 50, 70, 52, 61][:n])},
        real={"pathology": rng.uniform(0.05, 0.95, (n, 5))},
        anchor_age=np.array([57.0, 70, 51, 79, 47, 63][:n]))


@pytest.mark.parametrize("variant", ["bernoulli", "eq4", "normalised"])
def test_kl_variants_equal_hand_computation(variant):
    table = tiny_table()
    p = table.real["pathology"].mean(axis=0).tolist()
    q = table.generated["pathology"].mean(axis=0).tolist()
    report = score(table, Protocol(bootstrap_resamples=5, kl_variant=variant), breakdown=False)
    assert report["metrics"]["kl_divergence"]["value"] == pytest.approx(hand_kl(p, q, variant), abs=1e-12)
    component = report["components"]["kl_divergence"]
    assert component["variant"] == variant and sum(component["per_finding"].values()) == pytest.approx(
        hand_kl(p, q, variant), abs=1e-12)


def test_kl_variants_differ_and_normalised_is_a_divergence():
    table = tiny_table()
    values = {v: score(table, Protocol(bootstrap_resamples=5, kl_variant=v), breakdown=False)["metrics"]
              ["kl_divergence"]["value"] for v in ("bernoulli", "eq4", "normalised")}
    assert len({round(v, 9) for v in values.values()}) == 3
    assert values["normalised"] >= 0 and values["bernoulli"] >= 0
    same = SampleTable(**{**table.__dict__, "generated": {**table.generated, "pathology": table.real["pathology"]}})
    for variant in values:
        zero = score(same, Protocol(bootstrap_resamples=5, kl_variant=variant), breakdown=False)
        assert zero["metrics"]["kl_divergence"]["value"] == pytest.approx(0.0, abs=1e-12)


def test_age_reference_anchor_correlates_with_anchor_age():
    table = tiny_table()
    at_study = score(table, Protocol(bootstrap_resamples=5), breakdown=False)["metrics"]["age_pearson"]["value"]
    anchor = score(table, Protocol(bootstrap_resamples=5, age_reference="anchor"), breakdown=False)
    predicted = table.generated["age"].tolist()
    assert at_study == pytest.approx(pearson(predicted, table.age.tolist()), abs=1e-12)
    assert anchor["metrics"]["age_pearson"]["value"] == pytest.approx(pearson(predicted, table.anchor_age.tolist()),
                                                                      abs=1e-12)
    assert anchor["metrics"]["age_pearson"]["value"] != pytest.approx(at_study, abs=1e-6)
    # a dataset without anchor_age: the metric is skipped with the reason, never silently at-study
    without = SampleTable(**{**table.__dict__, "anchor_age": None})
    skipped = score(without, Protocol(bootstrap_resamples=5, age_reference="anchor"), breakdown=False)
    assert "age_pearson" not in skipped["metrics"] and "anchor_age" in skipped["skipped"]["age_pearson"]


def test_unknown_choice_is_refused():
    with pytest.raises(ValueError, match="kl_variant must be one of bernoulli, eq4, normalised"):
        Protocol(kl_variant="symmetric")
    with pytest.raises(SystemExit):
        main(["eval", "--run", "x", "--kl", "symmetric"])


@pytest.fixture(scope="module")
def anchored_run(tmp_path_factory):
    """A 12-pair phantom split whose CSV also has an anchor_age column, and one run on it."""
    root = tmp_path_factory.mktemp("protocol")
    data = build_phantom_dataset(root / "data", 12, seed=5, resolution=32, fractions={"holdout": 1.0}, progress=False)
    csv = data / "instructions.csv"
    table = pd.read_csv(csv)
    table["anchor_age"] = table["age"] - np.arange(len(table)) % 4
    table.to_csv(csv, index=False)
    settings = RunSettings(model="tests.helpers.fake_models:NoisyEditModel", split="holdout", data_dir=data,
                           out=root / "run", resolution=32, batch_size=4)
    generate(settings, progress=False)
    return settings.out, root


def test_choices_recorded_in_metrics_json_and_table_notes(anchored_run):
    run, root = anchored_run
    report = evaluate_run(run, evaluator=RegionStatisticsEvaluator(), cache_dir=root / "cache", progress=False,
                          protocol=Protocol(bootstrap_resamples=20, fid_bootstrap_resamples=0, kl_variant="eq4",
                                            age_reference="anchor"))
    table = load_table(run)  # the per-sample values at full precision
    p = [float(np.mean(table.real["pathology"][:, f].astype(np.float64))) for f in range(len(EVALUATED_FINDINGS))]
    q = [float(np.mean(table.generated["pathology"][:, f].astype(np.float64))) for f in range(len(EVALUATED_FINDINGS))]
    assert report["metrics"]["kl_divergence"]["value"] == pytest.approx(hand_kl(p, q, "eq4"), abs=1e-6)  # float32 means in scoring
    csv_anchor = pd.read_csv(run / "predictions.csv")["anchor_age_true"].tolist()
    assert table.anchor_age.tolist() == csv_anchor
    assert report["metrics"]["age_pearson"]["value"] == pytest.approx(
        pearson(table.generated["age"].astype(np.float64).tolist(), csv_anchor), abs=1e-9)
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["protocol"]["kl_variant"] == "eq4" and saved["protocol"]["age_reference"] == "anchor"
    assert "KL = eq4" in saved["protocol_choices"] and "age = anchor" in saved["protocol_choices"]
    # n = 12 < 30: every metric carries the warning, FID's names its bias
    assert set(saved["warnings"]) >= {"kl_divergence", "age_pearson", "fid"} and "biased" in saved["warnings"]["fid"]
    runs = load_runs([run])
    markdown = to_markdown(build_leaderboard(runs, "instructx2x", reported=[]))
    assert "Protocol: KL = eq4" in markdown and "age = anchor" in markdown
    assert f"computed on fewer than {SMALL_N} samples" in markdown and "(n=12)" in markdown
    latex = to_latex(build_leaderboard(runs, "instructx2x", reported=[]))
    assert "KL = eq4" in latex
    progemu = to_markdown(build_leaderboard(runs, "progemu", reported=[]))
    assert "KL = eq4" not in progemu  # only the choices that touch the layout's metrics


def test_console_shows_scale_intervals_n_reasons_and_small_n(anchored_run, capsys):
    run, root = anchored_run
    assert main(["--quiet", "eval", "--run", str(run), "--bootstrap", "20", "--fid-bootstrap", "0",
                 "--kl", "normalised"]) == 0
    printed = capsys.readouterr().out
    saved = json.loads((run / "metrics.json").read_text())
    patho = saved["metrics"]["pathology_mean_auroc"]
    line = next(line for line in printed.splitlines() if line.strip().startswith("Patho"))
    assert f"{100 * patho['value']:.2f}" in line and f"[{100 * patho['ci_low']:.2f}," in line
    assert " 12 " in line and "AUROC x 100" in line and line.rstrip().endswith("!")
    assert "KL = normalised" in printed
    assert f"computed on fewer than {SMALL_N} samples (n=12)" in printed and "FID especially" in printed
    for name, reason in saved["undefined"].items():  # every '-' says why
        assert reason in printed
