"""Evaluated phantom runs made by the real runner and scored by a fast fake evaluator, for leaderboard tests."""

from __future__ import annotations

from pathlib import Path

from cfbench.evaluation.evaluate import evaluate_run
from cfbench.evaluation.protocol import Protocol
from cfbench.phantom.dataset import build_phantom_dataset
from cfbench.runs.generate import RunSettings, generate
from tests.helpers.fake_models import RegionStatisticsEvaluator

FAST = Protocol(bootstrap_resamples=100, fid_bootstrap_resamples=10)
MODELS = ("identity", "tests.helpers.fake_models:NoisyEditModel", "ground-truth")


def make_evaluated_runs(root: Path, n: int = 30, size: int = 64) -> dict[str, Path]:
    """A phantom split, three runs made by the real runner and scored by the real evaluator."""
    data = build_phantom_dataset(root / "data", n, seed=5, resolution=size, fractions={"holdout": 1.0}, progress=False)
    runs = {}
    for model in MODELS:
        settings = RunSettings(model=model, split="holdout", data_dir=data, out=root / "runs" / model.split(":")[-1],
                               resolution=size, batch_size=8)
        generate(settings, progress=False)
        evaluate_run(settings.out, evaluator=RegionStatisticsEvaluator(), protocol=FAST, cache_dir=root / "cache",
                     progress=False)
        runs[model] = settings.out
    return runs
