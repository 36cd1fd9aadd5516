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
The demo's benchmark resolution is 128 px, the phantom evaluator's input and the generator's side; the
generators sample with 20 DDIM steps (``GENERATOR_OPTIONS``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from cfbench.api.registry import get_model_class, phantom_weights_path
from cfbench.evaluation.evaluate import evaluate_run
from cfbench.phantom.dataset import demo_dataset
from cfbench.phantom.scenario import DEMO_RESOLUTION, DEMO_STEPS
from cfbench.runs.generate import RunSettings, generate
from cfbench.runs.seed_pairs import generate_second_seed

REFERENCE_MODELS: tuple[str, ...] = ("identity", "ground-truth", "true-counterfactual")
GENERATOR_MODELS: tuple[str, ...] = ("instructpix2pix", "instructx2x")
ABLATION_MODELS: tuple[str, ...] = ("instructx2x-relevance-only", "instructx2x-mask-only")
# The generators sample with 20 DDIM steps in the demo (the paper's default is 100, which `cfbench run` keeps):
# five times faster on a CPU, and the demo compares the same steps with and without RSE.
GENERATOR_OPTIONS: dict[str, str] = {"steps": str(DEMO_STEPS)}
SUMMARY_COLUMNS: tuple[str, ...] = (
    "cfbench_score",
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


@dataclass(frozen=True)
class ModelDone:
    """What the demo reports when one model is finished (``row``: its summary row, None when it failed;
    ``error``: one line, when it failed; ``seconds_left``: the estimate for the models still to run, None
    until a model of each remaining kind, reference or generator, has been timed)."""

    index: int  # 1-based position of the model in the run order
    total: int
    model: str
    row: dict | None
    error: str | None
    seconds: float
    seconds_left: float | None


def _kind(model: str) -> str:
    return "reference" if model in REFERENCE_MODELS else "generator"


def estimate_seconds_left(timed: dict[str, list[float]], remaining: list[str]) -> float | None:
    """The seconds the ``remaining`` models will take: per model, the mean time of the finished models of
    its kind (references take seconds, generators minutes); None while a remaining kind has no timing."""
    total = 0.0
    for model in remaining:
        times = timed.get(_kind(model))
        if not times:
            return None
        total += sum(times) / len(times)
    return total


def run_demo(cache_dir: Path, runs_dir: Path, resolution: int = DEMO_RESOLUTION, batch_size: int = 8,
             all_models: bool = False, only: list[str] | None = None, progress: bool = True,
             on_model_done: Callable[[ModelDone], None] | None = None, seeds: int = 1) -> tuple[list[dict], list[str]]:
    """Generate and evaluate every demo model (``only``: just these of them, in table order); (one summary
    row per finished model, notes on models left out or failed). ``on_model_done`` is called as each model
    finishes or fails; a model that fails is noted and the next one runs, so every finished run stays usable.
    ``seeds`` 2: also each model's second seed (seed diversity). Every evaluation compares the outputs with the
    phantom training stream (memorisation)."""
    data_dir = demo_dataset(cache_dir, resolution=resolution, progress=progress)
    models, notes = demo_models(all_models or bool(only))
    if only:
        unknown = sorted(set(only) - set(models) - set(GENERATOR_MODELS) - set(ABLATION_MODELS))
        if unknown:
            raise ValueError(f"not demo models: {unknown}; the demo runs {', '.join(models)}")
        models = [model for model in models if model in only]
    reports = []
    timed: dict[str, list[float]] = {}
    for index, model in enumerate(models, start=1):
        started = time.perf_counter()
        row, error = None, None
        try:
            row = _run_model(model, data_dir, runs_dir, resolution, batch_size, progress, seeds)
            reports.append(row)
        except Exception as failure:  # noqa: BLE001 - one model's failure must not lose the others' runs
            if isinstance(failure, (KeyboardInterrupt, SystemExit)):
                raise
            error = f"{type(failure).__name__}: {str(failure).splitlines()[0] if str(failure) else ''}"
            notes.append(f"{model}: failed ({error}); the other models' runs are kept")
        seconds = time.perf_counter() - started
        timed.setdefault(_kind(model), []).append(seconds)
        if on_model_done is not None:
            on_model_done(ModelDone(index, len(models), model, row, error, seconds,
                                    estimate_seconds_left(timed, models[index:])))
    return reports, notes


def _run_model(model: str, data_dir: Path, runs_dir: Path, resolution: int, batch_size: int,
               progress: bool, seeds: int = 1) -> dict:
    options = dict(GENERATOR_OPTIONS) if model not in REFERENCE_MODELS else {}
    settings = RunSettings(model=model, split="demo", data_dir=data_dir, out=runs_dir / model,
                           resolution=resolution, batch_size=batch_size, options=options)
    generated = generate(settings, progress=progress)
    if seeds == 2:
        generated.failed.extend(generate_second_seed(settings, progress=progress).failed)
    if generated.failed:
        raise RuntimeError(f"demo run of {model} had failures: {generated.failed[:3]}")
    report = evaluate_run(settings.out, progress=progress, memorisation=True)
    return {"model": model, "run": str(settings.out), "n": report["n_samples"],
            "protocol": report["protocol"], "skipped": report["skipped"],
            "metrics": {name: report["metrics"][name] for name in SUMMARY_COLUMNS if name in report["metrics"]}}


def write_demo_leaderboard(runs_dir: Path, out: Path, models: list[str], gallery_samples: int = 8) -> dict:
    """The leaderboard folder of the demo runs (tables, plots, gallery): see cfbench.leaderboard.write.
    The papers' reported rows are left out: they were measured on MIMIC, not on phantoms (they are in
    ``leaderboards/reported``)."""
    from cfbench.leaderboard.write import write_leaderboard

    folders = [runs_dir / model for model in models]
    return write_leaderboard(folders, out, gallery_samples=gallery_samples, title="cfbench phantom demo",
                             include_reported=False,  # rows named as the demo names its models (its split fixes steps)
                             labels={str(folder): model for folder, model in zip(folders, models)})


def format_table(rows: list[dict], columns: tuple[str, ...] = SUMMARY_COLUMNS) -> str:
    """A Markdown table, one row per model: value [bootstrap interval] on the leaderboard's scale, n, and the
    reason for every '-' and every small-n warning below it (:mod:`cfbench.leaderboard.console`)."""
    from cfbench.leaderboard.console import summary_table

    return summary_table(rows, columns)
