"""`cfbench demo`: the whole pipeline on the embedded phantom suite, offline, in a few minutes on 2 cores.

Builds (or reuses) the demo split, runs the models through generate + eval with the shipped phantom
evaluator (pathology, group and age CNNs), and returns one summary row per model:

- ``identity`` (no edit: preserves the patient, misses the pathology change);
- ``instructpix2pix`` and ``instructx2x``: cfbench's InstructX2X trained on the phantom training stream
  (``cfbench/data/phantom_instructx2x``), sampled without and with Region-Specific Editing, the papers'
  ablation; with ``all_models`` also the two RSE ablations (relevance map only, pseudo mask only);
- ``ground-truth`` (the real later study: the papers' "Real Images (GT)" row) and ``true-counterfactual``
  (the exact answer).

The generator rows are left out, with a note, when the package was installed without the checkpoint.
The demo's benchmark resolution is 128 px, the phantom evaluator's input and the generator's side.
"""

from __future__ import annotations

from pathlib import Path

from cfbench.api.registry import get_model_class, phantom_weights_path
from cfbench.evaluation.evaluate import evaluate_run
from cfbench.evaluation.metric_names import metric_name
from cfbench.phantom.dataset import demo_dataset
from cfbench.phantom.scenario import DEMO_RESOLUTION
from cfbench.runs.generate import RunSettings, generate

REFERENCE_MODELS: tuple[str, ...] = ("identity", "ground-truth", "true-counterfactual")
GENERATOR_MODELS: tuple[str, ...] = ("instructpix2pix", "instructx2x")
ABLATION_MODELS: tuple[str, ...] = ("instructx2x-relevance-only", "instructx2x-mask-only")
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
    "guidance_auroc",
)


def demo_models(all_models: bool = False) -> tuple[list[str], list[str]]:
    """(models to run, notes on models left out): the references, and the generators whose shipped phantom
    checkpoint is installed, in table order."""
    generators = [*GENERATOR_MODELS, *(ABLATION_MODELS if all_models else ())]
    available = [m for m in generators if phantom_weights_path(get_model_class(m)) is not None]
    notes = [f"{m}: no phantom checkpoint in this installation (cfbench/data/phantom_instructx2x); "
             "train one with `cfbench phantom train-generator`" for m in generators if m not in available]
    return ["identity", *available, "ground-truth", "true-counterfactual"], notes


def run_demo(cache_dir: Path, runs_dir: Path, resolution: int = DEMO_RESOLUTION, batch_size: int = 8,
             all_models: bool = False, progress: bool = True) -> tuple[list[dict], list[str]]:
    """Generate and evaluate every demo model; (one summary row per model, notes on models left out)."""
    data_dir = demo_dataset(cache_dir, resolution=resolution, progress=progress)
    models, notes = demo_models(all_models)
    reports = []
    for model in models:
        settings = RunSettings(model=model, split="demo", data_dir=data_dir, out=runs_dir / model,
                               resolution=resolution, batch_size=batch_size)
        generated = generate(settings, progress=progress)
        if generated.failed:
            raise RuntimeError(f"demo run of {model} had failures: {generated.failed[:3]}")
        report = evaluate_run(settings.out, progress=progress)
        reports.append({"model": model, "run": str(settings.out), **{
            name: report["metrics"].get(name, {}).get("value") for name in SUMMARY_COLUMNS}})
    return reports, notes


def write_demo_leaderboard(runs_dir: Path, out: Path, models: list[str], gallery_samples: int = 8) -> dict:
    """The leaderboard folder of the demo runs (tables, plots, gallery): see cfbench.leaderboard.write.
    The papers' reported rows are left out: they were measured on MIMIC, not on phantoms (they are in
    ``leaderboards/reported``)."""
    from cfbench.leaderboard.write import write_leaderboard

    return write_leaderboard([runs_dir / model for model in models], out, gallery_samples=gallery_samples,
                             title="cfbench phantom demo", include_reported=False)


def format_table(rows: list[dict], columns: tuple[str, ...] = SUMMARY_COLUMNS) -> str:
    """A Markdown table: one row per model, values with 4 decimals ('-' for missing)."""
    header = "| model | " + " | ".join(metric_name(c).title for c in columns) + " |"
    rule = "|---|" + "---:|" * len(columns)
    lines = [header, rule]
    for row in rows:
        cells = ["-" if row.get(c) is None else f"{row[c]:.2f}" if c == "cmig" else f"{row[c]:.4f}" for c in columns]
        lines.append(f"| {row['model']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
