"""The metric-validity suite (``cfbench validate``): do the metrics rank the exact answer first?

On a phantom split (exact counterfactuals known) it runs the reference models (``identity``, ``ground-truth``,
``true-counterfactual``) and every degradation family of :mod:`cfbench.models.degradations` at its fixed
severities, evaluates them with the shipped phantom evaluator, and writes a validity table: for each metric
with a direction and each family,

- ``rho``: Spearman's rank correlation between the severity (0 = the exact answer) and the metric's badness
  (the value, negated when higher is better): +1 = the metric gets worse at every step, 0 (or flat) = it does not
  see the family, < 0 = it prefers the degradation;
- ``separates``: the 95 % bootstrap intervals of the exact answer and of the family's worst level are disjoint,
  with the worst level worse;
- ``paired``: the paired bootstrap interval of (worst level - exact answer), oriented so that > 0 is worse:
  "worse" (excludes 0 on the worse side), "better" (excludes 0 on the better side: the metric prefers the
  degradation) or "n.s.";
- ``at_or_above``: every run of the family that the metric ranks at or above the exact answer.

Files (into ``out``): ``validity.md``, ``validity.csv`` (one row per metric and family, the reference rows
``identity`` and ``ground-truth`` as families of one level) and ``validity.png`` (the heatmap of rho, a dot where
the paired test says "worse").
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cfbench.core.storage import atomic_write_text
from cfbench.evaluation.evaluate import evaluate_run
from cfbench.evaluation.metric_names import metric_name
from cfbench.evaluation.protocol import Protocol
from cfbench.evaluation.results import load_table
from cfbench.evaluation.scoring import score
from cfbench.metrics.bootstrap import interval_from_replicates
from cfbench.models.degradations import FAMILIES
from cfbench.phantom.dataset import cached_phantom_dataset
from cfbench.runs.generate import RunSettings, generate
from cfbench.runs.manifest import RunFiles

SUITE_SPLIT = "holdout"
SUITE_SIZE = 200
SUITE_SEED = 0
SUITE_RESOLUTION = 128
EXACT = "true-counterfactual"
REFERENCE_FAMILIES = ("identity", "ground-truth")
VALIDITY_METRICS: tuple[str, ...] = (
    "cfbench_score",
    "pathology_mean_auroc", "race_auroc", "sex_auroc", "age_pearson", "cmig", "kl_divergence", "fid", "f1_macro",
    "kid", "manifold_precision", "manifold_recall", "coverage",
    "effect_error", "age_change", "race_change", "sex_change", "feature_distance",
    "relative_change_outside_pseudo_mask", "w1_outside_pseudo_mask", "change_outside_pseudo_mask",
    "relative_change_outside_lesion", "w1_outside_lesion", "change_outside_lesion", "mae_to_true_counterfactual",
)
"""The metrics judged, in table order: the score, the papers' metrics, the realism measures beside FID (no paired
test: their replicates are FID's), cfbench's new ones, the phantom-only ones."""


@dataclass(frozen=True)
class SuiteRun:
    """One run of the suite: its model, family (``exact``, a reference, or a degradation family), severity."""

    model: str
    family: str
    severity: float
    folder: Path

    @property
    def label(self) -> str:
        return self.model if self.family in ("exact", *REFERENCE_FAMILIES) else f"{self.family} s={self.severity:g}"


def suite_runs(runs_dir: Path) -> list[SuiteRun]:
    """The runs of the suite, in table order: exact answer, references, each family's levels."""
    runs = [SuiteRun(EXACT, "exact", 0.0, runs_dir / EXACT)]
    runs += [SuiteRun(name, name, 1.0, runs_dir / name) for name in REFERENCE_FAMILIES]
    for family, (_, severities, _) in FAMILIES.items():
        runs += [SuiteRun(f"degrade-{family}", family, s, runs_dir / f"degrade-{family}-s{s:g}") for s in severities]
    return runs


def _evaluated(folder: Path) -> bool:
    """metrics.json exists and is newer than the results ledger (an earlier suite evaluated this run)."""
    files = RunFiles(folder)
    ledger = files.results_ledger()
    return files.metrics.is_file() and ledger.is_file() and files.metrics.stat().st_mtime >= ledger.stat().st_mtime


def run_suite(cache_dir: Path, runs_dir: Path, n: int = SUITE_SIZE, resolution: int = SUITE_RESOLUTION,
              protocol: Protocol = Protocol(), batch_size: int = 16, progress: bool = True) -> list[SuiteRun]:
    """Generate and evaluate every run of the suite on the cached phantom split (runs resume; a run evaluated
    by an earlier call is not evaluated again)."""
    data_dir = cached_phantom_dataset(cache_dir, SUITE_SPLIT, n, SUITE_SEED, resolution, progress)
    runs = suite_runs(runs_dir)
    for run in runs:
        options = {"severity": f"{run.severity:g}"} if run.model.startswith("degrade-") else {}
        settings = RunSettings(model=run.model, split=SUITE_SPLIT, data_dir=data_dir, out=run.folder,
                               resolution=resolution, batch_size=batch_size, options=options)
        report = generate(settings, progress=progress)
        if report.failed:
            raise RuntimeError(f"validity run {run.label} had failures: {report.failed[:3]}")
        if report.generated or not _evaluated(run.folder):
            evaluate_run(run.folder, protocol=protocol, cache_dir=cache_dir, batch_size=batch_size,
                         progress=progress)
    return runs


def _oriented(value: float | None, higher_is_better: bool) -> float:
    """The metric's badness: larger is worse."""
    if value is None or not math.isfinite(value):
        return math.nan
    return -value if higher_is_better else value


def _spearman(severities: list[float], badness: list[float]) -> float:
    """Spearman rho; 0 when the metric does not move at all (a flat metric does not see the family)."""
    from scipy.stats import spearmanr

    if any(not math.isfinite(b) for b in badness):
        return math.nan
    if len(set(np.round(badness, 12))) == 1:
        return 0.0
    return float(spearmanr(severities, badness).statistic)


def _scored(run: SuiteRun, protocol: Protocol) -> tuple[dict, dict[str, np.ndarray], list[str]]:
    """(metrics as in metrics.json, bootstrap replicates of each metric but FID, sample ids) of one run,
    rescored from its per-sample table with the suite's protocol."""
    table = load_table(run.folder)
    replicates: dict[str, np.ndarray] = {}
    metrics = score(table, protocol, breakdown=False, replicates=replicates)["metrics"]
    return metrics, replicates, table.sample_ids


def _paired(metrics: dict, replicates: dict, exact_metrics: dict, exact_replicates: dict) -> dict[str, dict]:
    """Paired differences run - exact answer of every metric both have replicates of: the same resampled
    samples on both sides (same split order and bootstrap seed), percentile interval of the differences."""
    differences = {}
    for name in set(replicates) & set(exact_replicates):
        value, reference = (metrics.get(name) or {}).get("value"), (exact_metrics.get(name) or {}).get("value")
        if value is None or reference is None:
            continue
        ci = interval_from_replicates(value - reference, replicates[name] - exact_replicates[name])
        differences[name] = {"value": ci.value, "ci_low": ci.low, "ci_high": ci.high}
    return differences


def validity_rows(runs: list[SuiteRun], protocol: Protocol = Protocol()) -> list[dict]:
    """One row per metric of :data:`VALIDITY_METRICS` and family (references included): see the module doc.
    FID has no paired test here (its replicates are drawn apart from the other metrics')."""
    scored = {run.label: _scored(run, protocol) for run in runs}
    exact_run = next(run for run in runs if run.family == "exact")
    exact_metrics, exact_replicates, exact_ids = scored[exact_run.label]
    for label, (_, _, ids) in scored.items():
        if ids != exact_ids:
            raise ValueError(f"validity run {label} was evaluated on other samples than the exact answer's run")
    metrics = {label: entry[0] for label, entry in scored.items()}
    paired = {run.label: _paired(*scored[run.label][:2], exact_metrics, exact_replicates)
              for run in runs if run is not exact_run}
    families: dict[str, list[SuiteRun]] = {}
    for run in runs:
        if run is not exact_run:
            families.setdefault(run.family, []).append(run)
    rows = []
    for name in VALIDITY_METRICS:
        higher = metric_name(name).higher_is_better
        exact = metrics[exact_run.label].get(name)
        if higher is None or not exact or exact.get("value") is None:
            continue
        exact_bad = _oriented(exact["value"], higher)
        for family, members in families.items():
            levels = [exact_run, *members]
            values = [(metrics[run.label].get(name) or {}) for run in levels]
            badness = [_oriented(entry.get("value"), higher) for entry in values]
            worst, worst_entry = members[-1], values[-1]
            rows.append({
                "metric": name, "family": family,
                "severities": [run.severity if run is not exact_run else 0.0 for run in levels],
                "values": [entry.get("value") for entry in values],
                "rho": _spearman([0.0, *[run.severity for run in members]], badness)
                if family not in REFERENCE_FAMILIES else math.nan,
                "separates": _separates(exact, worst_entry, higher),
                "paired": _paired_verdict(paired[worst.label].get(name), higher),
                "paired_difference": (paired[worst.label].get(name) or {}).get("value"),
                "paired_ci": [(paired[worst.label].get(name) or {}).get(k) for k in ("ci_low", "ci_high")],
                "paired_all": [_paired_verdict(paired[run.label].get(name), higher) for run in members],
                "at_or_above": [run.label for run, bad in zip(members, badness[1:])
                                if math.isfinite(bad) and bad <= exact_bad],
            })
    return rows


def _separates(exact: dict, worst: dict, higher_is_better: bool) -> bool:
    """The two 95 % intervals are disjoint and the worst level is on the worse side."""
    if None in (exact.get("ci_low"), exact.get("ci_high"), worst.get("ci_low"), worst.get("ci_high")):
        return False
    return worst["ci_high"] < exact["ci_low"] if higher_is_better else worst["ci_low"] > exact["ci_high"]


def _paired_verdict(difference: dict | None, higher_is_better: bool) -> str:
    """"worse" / "better" / "n.s." for the paired interval of (run - exact answer)."""
    if not difference or difference.get("ci_low") is None or difference.get("ci_high") is None:
        return "n/a"
    low, high = difference["ci_low"], difference["ci_high"]
    if higher_is_better:
        low, high = -high, -low
    return "worse" if low > 0 else ("better" if high < 0 else "n.s.")


def _notes() -> list[str]:
    lines = ["Regenerated by `cfbench validate --out leaderboards/phantom-demo` (33 runs from an empty runs folder: "
             "3 min 16 s wall on 2 cores beside other jobs, 9 min 50 s at load average 8-10; rerun on finished "
             "runs: under a minute).", "",
             f"Phantom split `{SUITE_SPLIT}`, n = {SUITE_SIZE}, {SUITE_RESOLUTION} px, seed {SUITE_SEED}; the shipped "
             "phantom evaluator; default protocol (1000 paired bootstrap resamples, 95 %). Severity 0 of every "
             "family is the exact answer (`true-counterfactual`). The families and severities were fixed before "
             "the metrics and the score were designed:", ""]
    for family, (_, severities, what) in FAMILIES.items():
        lines.append(f"- `{family}`: {what}; s = {', '.join(f'{s:g}' for s in severities)}")
    lines += ["", "rho: Spearman over severities of the metric's badness (+1 = worse at every step; 0 = flat; < 0 = "
              "prefers the degradation). sep: the 95 % intervals of the exact answer and the worst level are disjoint "
              "(worst on the worse side). paired: the paired interval of worst - exact: worse / better (prefers the "
              "degradation) / n.s. Identity and ground-truth are one-level references (paired test only)."]
    return lines


def _cell(row: dict) -> str:
    rho = "–" if not math.isfinite(row["rho"]) else f"{row['rho']:+.2f}"
    return f"{rho} {'sep' if row['separates'] else '·'} {row['paired']}"


def validity_markdown(rows: list[dict]) -> str:
    families = list(dict.fromkeys(row["family"] for row in rows))
    lines = ["# Metric validity on phantoms (`cfbench validate`)", "", *_notes(), "",
             "Each cell: rho, sep, paired (worst level vs the exact answer).", "",
             "| metric | " + " | ".join(families) + " |", "|---|" + "---|" * len(families)]
    by_metric: dict[str, dict[str, dict]] = {}
    for row in rows:
        by_metric.setdefault(row["metric"], {})[row["family"]] = row
    for name, cells in by_metric.items():
        title = f"{metric_name(name).title} {metric_name(name).arrow}"
        lines.append(f"| {title} | " + " | ".join(_cell(cells[f]) if f in cells else "–" for f in families) + " |")
    lines += ["", "## Runs a metric ranks at or above the exact answer", ""]
    for name, cells in by_metric.items():
        above = [label for row in cells.values() for label in row["at_or_above"]]
        lines.append(f"- {metric_name(name).title}: {', '.join(above) if above else 'none'}")
    return "\n".join(lines) + "\n"


def validity_csv(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["metric", "family", "severities", "values", "rho", "separates", "paired", "paired_difference",
                     "paired_ci_low", "paired_ci_high", "paired_per_level", "at_or_above_exact"])
    for row in rows:
        writer.writerow([row["metric"], row["family"], " ".join(f"{s:g}" for s in row["severities"]),
                         " ".join("" if v is None else f"{v:.6g}" for v in row["values"]),
                         "" if not math.isfinite(row["rho"]) else f"{row['rho']:.4f}", row["separates"],
                         row["paired"], "" if row["paired_difference"] is None else f"{row['paired_difference']:.6g}",
                         *("" if v is None else f"{v:.6g}" for v in row["paired_ci"]), " ".join(row["paired_all"]),
                         " ".join(row["at_or_above"])])
    return buffer.getvalue()


def validity_heatmap(rows: list[dict], path: Path) -> Path:
    """Metrics x families, colour = rho (references: +1 worse / -1 better / 0 n.s.), a dot where paired = worse."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    metrics = list(dict.fromkeys(row["metric"] for row in rows))
    families = list(dict.fromkeys(row["family"] for row in rows))
    grid = np.full((len(metrics), len(families)), np.nan)
    figure = Figure(figsize=(1.0 + 0.72 * len(families), 0.9 + 0.34 * len(metrics)))
    axes = figure.add_subplot()
    for row in rows:
        i, j = metrics.index(row["metric"]), families.index(row["family"])
        value = row["rho"] if math.isfinite(row["rho"]) else {"worse": 1.0, "better": -1.0, "n.s.": 0.0}.get(
            row["paired"], np.nan)
        grid[i, j] = value
        text = ("●" if row["paired"] == "worse" else "✕" if row["paired"] == "better" else "")
        axes.text(j, i, f"{value:+.1f}{text}" if math.isfinite(value) else "–", ha="center", va="center", fontsize=7,
                  color="white" if math.isfinite(value) and abs(value) > 0.6 else "black")
    image = axes.imshow(grid, cmap="RdBu", vmin=-1, vmax=1, aspect="auto")
    axes.set_xticks(range(len(families)), families, rotation=45, ha="right", fontsize=8)
    axes.set_yticks(range(len(metrics)), [f"{metric_name(m).title} {metric_name(m).arrow}" for m in metrics], fontsize=8)
    axes.set_title("Metric validity on phantoms: Spearman rho of badness vs severity (identity, ground-truth: "
                   "+1 worse, -1 better, 0 n.s.)\n● paired test: worst level worse than the exact answer; ✕ better "
                   "(the metric prefers it)", fontsize=9)
    figure.colorbar(image, ax=axes, fraction=0.03, pad=0.02, label="rho (blue = moves the right way)")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=130, metadata={"Software": None})
    return path


def write_validity(rows: list[dict], out: Path) -> list[Path]:
    """validity.md, validity.csv and validity.png into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "validity.md", validity_markdown(rows) + "\n![validity heatmap](validity.png)\n")
    atomic_write_text(out / "validity.csv", validity_csv(rows))
    return [out / "validity.md", out / "validity.csv", validity_heatmap(rows, out / "validity.png")]
