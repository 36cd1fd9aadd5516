"""`cfbench demo`: the whole pipeline on the embedded phantom suite, offline, in about a minute.

Builds (or reuses) the demo split, runs the reference models through generate + eval with the shipped
phantom evaluator (pathology, group and age CNNs), and returns one summary row per model:
``identity`` (no edit: preserves the patient, misses the pathology change), ``ground-truth`` (the real
later study: the papers' "Real Images (GT)" row) and ``true-counterfactual`` (the exact answer).
"""

from __future__ import annotations

from pathlib import Path

from cfbench.evaluation.evaluate import evaluate_run
from cfbench.phantom.dataset import demo_dataset
from cfbench.runs.generate import RunSettings, generate

DEMO_MODELS: tuple[str, ...] = ("identity", "ground-truth", "true-counterfactual")
SUMMARY_COLUMNS: tuple[str, ...] = (
    "pathology_mean_auroc",
    "race_auroc",
    "age_pearson",
    "cmig",
    "kl_divergence",
    "fid",
    "mae_to_true_counterfactual",
    "change_inside_lesion",
    "change_outside_lesion",
)


def run_demo(cache_dir: Path, runs_dir: Path, resolution: int = 512, batch_size: int = 8,
             progress: bool = True) -> list[dict]:
    data_dir = demo_dataset(cache_dir, resolution=resolution, progress=progress)
    reports = []
    for model in DEMO_MODELS:
        settings = RunSettings(model=model, split="demo", data_dir=data_dir, out=runs_dir / model,
                               resolution=resolution, batch_size=batch_size)
        generated = generate(settings, progress=progress)
        if generated.failed:
            raise RuntimeError(f"demo run of {model} had failures: {generated.failed[:3]}")
        report = evaluate_run(settings.out, progress=progress)
        reports.append({"model": model, "run": str(settings.out), "n": report["n_samples"],
                        "protocol": report["protocol"], "skipped": report["skipped"],
                        "metrics": {name: report["metrics"][name] for name in SUMMARY_COLUMNS
                                    if name in report["metrics"]}})
    return reports


def write_demo_leaderboard(runs_dir: Path, out: Path, gallery_samples: int = 8) -> dict:
    """The leaderboard folder of the demo runs (tables, plots, gallery): see cfbench.leaderboard.write.
    The papers' reported rows are left out: they were measured on MIMIC, not on phantoms (they are in
    ``leaderboards/reported``)."""
    from cfbench.leaderboard.write import write_leaderboard

    return write_leaderboard([runs_dir / model for model in DEMO_MODELS], out, gallery_samples=gallery_samples,
                             title="cfbench phantom demo", include_reported=False)


def format_table(rows: list[dict], columns: tuple[str, ...] = SUMMARY_COLUMNS) -> str:
    """A Markdown table, one row per model: value [bootstrap interval] on the leaderboard's scale, n, and the
    reason for every '-' and every small-n warning below it (:mod:`cfbench.leaderboard.console`)."""
    from cfbench.leaderboard.console import summary_table

    return summary_table(rows, columns)
