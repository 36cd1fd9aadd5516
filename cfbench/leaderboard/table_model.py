"""Evaluated run folders (and the papers' reported values) -> one table model per layout.

A layout is the column set of one paper's table: ``instructx2x`` (Patho, Race, Age, CMIG, KL, FID) and
``progemu`` (FID, CLIP-I, AUROC, F1, BLEU-3, METEOR, ROUGE-L). Measured cells come from each run's
metrics.json (value and bootstrap interval) on the scale the paper prints: AUROC and Pearson r x 100 in
the InstructX2X layout, CLIP-I (mean cosine) x 100 in the ProgEmu layout; KL is in nats.

Rows have a kind:

- ``measured``: a run folder evaluated by cfbench;
- ``oracle``: a measured row of a model that declares ``Capabilities(oracle=True)`` (``ground-truth``, the
  papers' "Real Images (GT)", ``true-counterfactual``, the validity suite's degradations): shown, never
  bolded, as the papers bold only generated methods;
- ``reported``: a value printed in a paper (:mod:`cfbench.leaderboard.reported`), never measured here.

Bolding, per column and direction-aware (higher is better, lower for KL and FID): the best ``measured``
row, only where it is significantly better than the runner-up (:func:`significant_best`: the paired
bootstrap of ``cfbench compare`` over the samples both runs share, with their protocol); otherwise the
two are marked as a tie (``Cell.tie``), as are rows equal at the displayed precision. A column needs at
least two candidate values. Reported rows are not bolded against measured rows; with
``bold_reported=True`` reported generated rows join the candidates and are compared by their printed
values (their test sets and, for KL, their scale differ: use with care).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from cfbench.core.findings import EVALUATED_FINDINGS
from cfbench.evaluation.metric_names import metric_name
from cfbench.evaluation.results import read_metrics
from cfbench.leaderboard.reported import ReportedTable, tables_for_layout
from cfbench.runs.manifest import RunManifest

MEASURED, REFERENCE, REPORTED = "measured", "oracle", "reported"  # REFERENCE: the measured oracle rows
BREAKDOWN_METRICS: tuple[str, ...] = ("pathology_mean_auroc", "cmig", "kl_divergence")  # rescored per operation kind


@dataclass(frozen=True)
class Column:
    """One table column: the metrics.json name, the factor to the paper's scale, decimals, and a spanning
    header (``group``: "CMIG terms" over Patho/Race/Age, the terms CMIG combines; CMIG has its own column). Title and direction come from
    the metric vocabulary (:mod:`cfbench.evaluation.metric_names`); ``title`` overrides the short title
    where a paper prints another one (ProgEmu's "AUROC")."""

    key: str
    metric: str
    scale: float = 1.0
    decimals: int = 2
    group: str = ""
    title_override: str | None = None

    @property
    def title(self) -> str:
        return self.title_override or metric_name(self.metric).title

    @property
    def higher_is_better(self) -> bool | None:
        """True / False, or None: descriptive, neither ranked nor bolded."""
        return metric_name(self.metric).higher_is_better

    @property
    def arrow(self) -> str:
        return metric_name(self.metric).arrow


@dataclass(frozen=True)
class Layout:
    name: str
    title: str
    columns: tuple[Column, ...]
    notes: tuple[str, ...] = ()
    optional: bool = False  # written only when some run has a value in it
    ranked_by: str | None = None  # measured rows sorted by this metric (best first), with a rank column
    papers_protocol: bool = False  # a paper's table: each column's footnote names the blind spots found


LAYOUTS: dict[str, Layout] = {
    "summary": Layout(
        name="summary",
        title="cfbench summary, ranked by cfbench_score (effectiveness, preservation, minimality, realism)",
        columns=(
            Column("score", "cfbench_score", 1.0, 1),
            Column("effect", "effect_error", 1.0, 3, group="Effectiveness"),
            Column("age_change", "age_change", 1.0, 2, group="Preservation"),
            Column("race_change", "race_change", 1.0, 3, group="Preservation"),
            Column("sex_change", "sex_change", 1.0, 3, group="Preservation"),
            Column("rel_outside", "relative_change_outside_pseudo_mask", 1.0, 3, group="Minimality"),
            Column("w1_outside", "w1_outside_pseudo_mask", 1.0, 4, group="Minimality"),
            Column("features", "feature_distance", 1.0, 3, group="Realism"),
            Column("mae_cf", "mae_to_true_counterfactual", 1.0, 4, group="Ground truth"),
        ),
        notes=("cfbench_score = 100 x geometric mean of four terms t = 1 / (1 + loss / reference): effectiveness "
               "(effect error, ref. 0.1), preservation (age change 5 years, race/group change 0.1, sex change 0.1), "
               "minimality (relative change outside the pseudo mask 0.05, W1 outside it 0.01) and realism (feature "
               "distance to the real target 0.1); computed only from the input, instruction, real target and "
               "pseudo masks, never from exact counterfactuals (cfbench.metrics.score). `cfbench validate` shows it "
               "ranks the exact answer first against every degradation family on phantoms "
               "(leaderboards/phantom-demo/validity.md). MAE to the true counterfactual (phantoms only) is the "
               "ground truth it is judged by, not part of it. Rank: by cfbench_score among measured and oracle rows.",),
        optional=True,
        ranked_by="cfbench_score",
    ),
    "instructx2x": Layout(
        name="instructx2x",
        title="The papers' protocol (InstructX2X): pathology accuracy, attribute retention, CMIG, KL, FID",
        columns=(
            Column("patho", "pathology_mean_auroc", 100.0, group="CMIG terms"),
            Column("race", "race_auroc", 100.0, group="CMIG terms"),
            Column("age", "age_pearson", 100.0, group="CMIG terms"),
            Column("cmig", "cmig", 1.0),
            Column("kl", "kl_divergence", 1.0, 3),
            Column("fid", "fid", 1.0),
        ),
        notes=("Patho = mean AUROC over 5 findings x 100; Race = race (phantoms: group) AUROC x 100; "
               "Age = Pearson r x 100; CMIG on 0-100.",
               "Measured KL is in nats (unscaled; its reading of Eq. 4 is in the Protocol line); the papers' KL "
               "scaling is not published, so reported KL values are not comparable with measured ones."),
        papers_protocol=True,
    ),
    "progemu": Layout(
        name="progemu",
        title="The papers' protocol (ProgEmu): image quality, alignment, pathology, interpretation text",
        columns=(
            Column("fid", "fid", 1.0, group="Counterfactual image"),
            Column("clip_i", "clip_i", 100.0, group="Counterfactual image"),
            Column("auroc", "pathology_mean_auroc", 1.0, 4, group="Counterfactual image", title_override="AUROC"),
            Column("f1", "f1_macro", 1.0, 4, group="Counterfactual image"),
            Column("bleu3", "bleu3", 1.0, 4, group="Explanatory text"),
            Column("meteor", "meteor", 1.0, 4, group="Explanatory text"),
            Column("rouge_l", "rouge_l", 1.0, 4, group="Explanatory text"),
        ),
        notes=("CLIP-I = 100 x mean cosine of BiomedCLIP embeddings; img-img: generated vs real target image, "
               "img-txt: generated image vs the text of its progression prompt (the pair the paper compares is not "
               "published; the variant is in the header and the Protocol line); AUROC / F1 vs the follow-up "
               "study's labels.",),
        papers_protocol=True,
    ),
    "locality": Layout(
        name="locality",
        title="Edit locality: where the counterfactual changed the input (cfbench, beyond the papers)",
        columns=(
            Column("outside", "change_outside_lesion", 1.0, 4, group="Mean |generated - input|"),
            Column("inside", "change_inside_lesion", 1.0, 4, group="Mean |generated - input|"),
            Column("mae_cf", "mae_to_true_counterfactual", 1.0, 4),
            Column("mae_target", "mae_to_target", 1.0, 4),
            Column("guidance", "guidance_auroc", 1.0, 3),
        ),
        notes=("Pixel values in [0, 1]. Lesion = the true lesion-change mask on phantoms, else the pseudo masks "
               "given to `cfbench eval --pseudo-masks` (see metrics.json, locality_region). Change inside the "
               "lesion is descriptive (an edit should change it by the right amount, not maximally); MAE to the "
               "true counterfactual exists on phantoms only; MAE to the real target includes the pose change, so "
               "it is not 0 for a perfect edit and is not ranked. Guidance map AUROC (phantoms, models that return "
               "a map): the map as a pixel-wise detector of the true lesion change, mean over samples.",),
        optional=True,
    ),
}


@dataclass
class Cell:
    """value / ci_low / ci_high on the layout's scale (None: not available); text as displayed."""

    value: float | None
    text: str
    ci_low: float | None = None
    ci_high: float | None = None
    bold: bool = False
    tie: bool = False  # the best of its column but not significantly better than the runner-up (or equal)
    degenerate: bool = False  # the row made no edit: its value in this column is trivially good (never bolded)


@dataclass
class Row:
    label: str
    kind: str                 # measured / reference / reported
    source: str               # run id, or the paper's short label
    cells: dict[str, Cell]
    n: int | None = None
    run_dir: str | None = None
    citation: str | None = None
    is_reference: bool = False  # real images / oracle answers: never bolded
    settings: dict = field(default_factory=dict)  # measured rows: run_settings of the run's manifest
    rank: int | None = None  # position by the layout's ranked_by metric (1 = best), ranked layouts only


@dataclass
class Leaderboard:
    layout: Layout
    rows: list[Row]
    confidence_level: float | None
    bold_reported: bool
    reported_tables: list[ReportedTable] = field(default_factory=list)
    protocol_notes: list[str] = field(default_factory=list)  # the open protocol choices of the measured rows
    small_n_rows: list[tuple[str, int]] = field(default_factory=list)  # (row label, n) with n < SMALL_N
    verdicts: dict = field(default_factory=dict)  # column key -> BestVerdict (set by mark_best)
    varying_settings: list[str] = field(default_factory=list)  # SETTING_NAMES whose values differ between runs

    def title(self, column: Column) -> str:
        """The column's header; CLIP-I names the variant the measured rows used ("CLIP-I (img-txt)")."""
        if column.metric == "clip_i" and self.clip_i_variant:
            from cfbench.evaluation.protocol import CLIP_I_SHORT

            return f"{column.title} ({CLIP_I_SHORT.get(self.clip_i_variant, self.clip_i_variant)})"
        return column.title

    @property
    def clip_i_variant(self) -> str | None:
        for note in self.protocol_notes:
            for variant in ("image-image", "image-text"):
                if f"CLIP-I = {variant}" in note:
                    return variant
        return None

    def measured_rows(self) -> list[Row]:
        return [row for row in self.rows if row.kind != REPORTED]

    def reported_rows(self) -> list[Row]:
        return [row for row in self.rows if row.kind == REPORTED]


@dataclass
class RunSummary:
    """One evaluated run folder: its identity, display name and metrics.json.

    model: the row's display name (the run's ``--label``, else the registry name and the options that differ
    from the model's defaults; made unique with `` [folder]``). oracle: the model declares
    ``Capabilities(oracle=True)``."""

    run_dir: Path
    run_id: str
    model: str
    metrics: dict
    oracle: bool = False
    settings: dict = field(default_factory=dict)  # :func:`run_settings` of its manifest

    @property
    def label(self) -> str:
        return self.model


SETTING_NAMES: tuple[str, ...] = ("resolution", "steps", "precision", "seed")
"""The benchmark settings a leaderboard shows as columns whenever its runs do not all share them."""


def run_settings(manifest: RunManifest) -> dict[str, str]:
    """The run's benchmark settings as shown: resolution in px, sampling steps and precision (the model
    options; "default" when the run kept the model's own), the run seed."""
    options = manifest.config.options or {}
    return {"resolution": f"{manifest.config.resolution} px", "steps": str(options.get("steps", "default")),
            "precision": str(options.get("precision", "default")), "seed": str(manifest.config.seed)}


def varying_settings(runs: list["RunSummary"]) -> list[str]:
    """The setting names whose values are not all equal over the runs (the columns a table must show)."""
    return [name for name in SETTING_NAMES if len({run.settings.get(name) for run in runs}) > 1]


class LeaderboardError(ValueError):
    pass


def run_id(run_dir: Path, manifest: RunManifest) -> str:
    """'<folder name>@<first 8 hex of SHA-256 of the run config>': names the run and what produced it."""
    digest = hashlib.sha256(json.dumps(manifest.config.to_dict(), sort_keys=True).encode()).hexdigest()[:8]
    return f"{run_dir.name}@{digest}"


def _model_class(model: str):
    """The registered (or importable) class of a run's model, or None when this installation lacks it."""
    from cfbench.api.registry import PluginError, UnknownModelError, get_model_class

    try:
        return get_model_class(model)
    except (UnknownModelError, PluginError):
        return None


def default_label(model: str, options: dict[str, str] | None) -> str:
    """A run's default row name: the model's registry name, then the ``--option``s that differ from the
    model's declared defaults (``CounterfactualModel.options_class``; without one, every option given)."""
    import dataclasses

    model_class = _model_class(model)
    name = model_class.name if model_class is not None else model
    options_class = getattr(model_class, "options_class", None)
    defaults = {f.name: f.default for f in dataclasses.fields(options_class)} if options_class else {}
    shown = []
    for key, text in sorted((options or {}).items()):
        if key in defaults:
            try:
                if getattr(options_class.from_options({key: text}), key) == defaults[key]:
                    continue
            except ValueError:
                pass
        shown.append(f"{key}={text}")
    return f"{name} ({', '.join(shown)})" if shown else name


def _label_for(folder: Path, labels: dict[str, str]) -> str | None:
    """The ``--label RUN=NAME`` given for a run folder (RUN: the path as given, or the folder's name)."""
    for key in (str(folder), folder.as_posix(), folder.name, str(folder.resolve())):
        if key in labels:
            return labels[key]
    return None


def load_runs(run_dirs: list[str | Path], labels: dict[str, str] | None = None) -> list[RunSummary]:
    """Read each run folder's manifest and metrics.json; labels made unique (name, then name [folder]).

    A row's name is ``labels[RUN]`` (RUN: the folder as given or its name), else the run's stored label,
    else :func:`default_label`."""
    labels = dict(labels or {})
    unknown = [key for key in labels if not any(_label_for(Path(folder), {key: ""}) is not None
                                                for folder in run_dirs)]
    if unknown:
        raise LeaderboardError(f"--label names runs that are not among the run folders given: {unknown}")
    runs = [_load_run(folder, labels) for folder in map(Path, run_dirs)]
    models = [run.model for run in runs]
    for run in runs:
        if models.count(run.model) > 1:
            run.model = f"{run.model} [{run.run_dir.name}]"
    if len({run.model for run in runs}) != len(runs):
        raise LeaderboardError("two run folders have the same model and folder name; give them distinct names")
    return runs


def _load_run(folder: Path, labels: dict[str, str]) -> RunSummary:
    """One run folder, named as :func:`load_runs` says; LeaderboardError naming the file and the reason when its
    manifest or metrics.json is missing, malformed or not cfbench's."""
    from cfbench.evaluation.protocol import EvaluationError

    try:
        manifest = RunManifest.read(folder)
        metrics = read_metrics(folder)
    except (EvaluationError, OSError, ValueError) as error:
        raise LeaderboardError(f"run {folder} cannot be read: {error}") from None
    label = (_label_for(folder, labels) or manifest.label
             or default_label(manifest.config.model, manifest.config.options))
    model_class = _model_class(manifest.config.model)
    oracle = bool(model_class is not None and getattr(model_class.capabilities, "oracle", False))
    return RunSummary(folder, run_id(folder, manifest), label, metrics, oracle, run_settings(manifest))


def format_value(value: float | None, decimals: int) -> str:
    """The value at the given decimals; '–' when missing; no '-0.00' for tiny negative round-off."""
    if value is None or not math.isfinite(value):
        return "–"
    text = f"{value:.{decimals}f}"
    return f"{0.0:.{decimals}f}" if float(text) == 0 else text


def _measured_cell(metrics: dict, column: Column) -> Cell:
    entry = metrics.get("metrics", {}).get(column.metric)
    if not entry or entry.get("value") is None:
        return Cell(None, "–")

    def scaled(x: float | None) -> float | None:
        return None if x is None else x * column.scale

    value = scaled(entry["value"])
    text = format_value(value, column.decimals)
    if column.metric == "cmig" and cmig_clipped_to_zero(metrics):
        text += CLIPPED_MARK
    return Cell(value, text, scaled(entry.get("ci_low")), scaled(entry.get("ci_high")))


CLIPPED_MARK = " (clipped)"


def cmig_clipped_to_zero(metrics: dict) -> bool:
    """CMIG is 0 only because a negative term (e.g. age r < 0) was clipped to 0 (metrics.json keeps the terms'
    values before clipping in components.cmig.clipped)."""
    component = metrics.get("components", {}).get("cmig") or {}
    return bool(component.get("clipped")) and component.get("value") == 0.0


def build_leaderboard(runs: list[RunSummary], layout: str | Layout = "instructx2x",
                      reported: list[ReportedTable] | None = None, bold_reported: bool = False) -> Leaderboard:
    """Measured rows (run order) then reported rows (table order); bold marks set per column.

    reported: the paper tables to include (default: the comparison tables of this layout; [] for none)."""
    layout = LAYOUTS[layout] if isinstance(layout, str) else layout
    reported = tables_for_layout(layout.name) if reported is None else [t for t in reported if t.layout == layout.name]
    rows = []
    for run in runs:
        cells = {column.key: _measured_cell(run.metrics, column) for column in layout.columns}
        oracle = run.oracle
        rows.append(Row(run.label, REFERENCE if oracle else MEASURED, run.run_id, cells,
                        n=run.metrics.get("n_samples"), run_dir=str(run.run_dir), is_reference=oracle,
                        settings=dict(run.settings)))
    for table in reported:
        for reported_row in table.rows:
            cells = {}
            for column in layout.columns:
                value = reported_row.value(column.key)
                cells[column.key] = Cell(value, reported_row.values.get(column.key) or "–")
            rows.append(Row(reported_row.model, REPORTED, table.short, cells, citation=table.citation,
                            is_reference=reported_row.is_reference))
    if layout.ranked_by:
        rank_rows(rows, runs, layout)
    mark_degenerate(rows, runs, layout)
    levels = {run.metrics.get("protocol", {}).get("confidence_level") for run in runs} - {None}
    board = Leaderboard(layout, rows, levels.pop() if len(levels) == 1 else None, bold_reported, list(reported),
                        protocol_notes=_protocol_notes(runs, layout), small_n_rows=_small_n_rows(runs, layout),
                        varying_settings=varying_settings(runs))
    mark_best(board, runs)
    return board


def _protocol_notes(runs: list[RunSummary], layout: Layout) -> list[str]:
    """'Protocol: KL = ..., age = ...' for the choices that touch this layout's metrics; one line per distinct
    set of choices (naming the runs when they differ)."""
    metrics = {column.metric for column in layout.columns}
    texts: dict[str, list[str]] = {}
    for run in runs:
        text = run_protocol(run).choices_text(metrics)
        if text:
            texts.setdefault(text, []).append(run.label)
    if len(texts) == 1:
        return [f"Protocol: {next(iter(texts))}."]
    return [f"Protocol of {', '.join(labels)}: {text}." for text, labels in texts.items()]


def _small_n_rows(runs: list[RunSummary], layout: Layout) -> list[tuple[str, int]]:
    from cfbench.evaluation.protocol import SMALL_N

    found = []
    for run in runs:
        ns = [(run.metrics.get("metrics", {}).get(c.metric) or {}).get("n") for c in layout.columns]
        ns = [n for n in ns if n is not None]
        if ns and min(ns) < SMALL_N:
            found.append((run.label, min(ns)))
    return found


BLIND_SPOTS: dict[str, str] = {
    "pathology_mean_auroc": "rank-based: prefers a contrast drift (rho -1), does not separate a leak outside the "
                            "lesion or a brightness drift, ranks a 1.25x over-edit and a slight blur at or above the "
                            "exact answer",
    "race_auroc": "saturates: flat for under-edits, drifts, wrong-side edits, leaks and misregistration; 25 of 32 "
                  "suite runs (the identity too) rank at or above the exact answer",
    "sex_auroc": "saturates: flat for most families; 22 of 32 suite runs rank at or above the exact answer",
    "age_pearson": "invariant to affine changes of the predicted age: prefers under-edits (paired), flat for "
                   "contrast drift and leaks; the identity ranks at or above the exact answer",
    "cmig": "inherits Patho's and Age's blind spots: prefers a contrast drift (rho -0.8), does not separate a leak, "
            "ranks a 1.25x over-edit at or above the exact answer; a negative age r clips it to 0",
    "kl_divergence": "compares mean probabilities only: does not separate a leak, prefers misregistration (rho -0.4)",
    "fid": "does not separate a leak outside the lesion; weak for another patient's anatomy (rho 0.4)",
    "f1_macro": "thresholded: prefers a contrast drift (paired), does not separate a leak",
    "clip_i": "not judged by the validity suite (no BiomedCLIP on phantoms)",
}
"""What `cfbench validate` found each papers' metric blind to (leaderboards/phantom-demo/validity.md)."""

NO_EDIT_CHANGE = 0.002
"""Mean |generated - input| inside the edit region below which a run counts as making no edit (1/500 of the
intensity range)."""

TRIVIAL_FOR_NO_EDIT: frozenset[str] = frozenset({
    "race_auroc", "sex_auroc", "age_pearson", "fid", "clip_i", "change_outside_lesion", "change_outside_pseudo_mask",
    "relative_change_outside_lesion", "relative_change_outside_pseudo_mask", "w1_outside_lesion",
    "w1_outside_pseudo_mask", "age_change", "race_change", "sex_change",
})
"""Columns a run that makes no edit wins trivially (preservation, minimality, realism against the input)."""


def makes_no_edit(run: RunSummary) -> bool:
    """The run changed the input by less than :data:`NO_EDIT_CHANGE` inside the edit region (the true lesion on
    phantoms, else the pseudo mask): the identity and any model that returns its input."""
    metrics = run.metrics.get("metrics", {})
    for name in ("change_inside_lesion", "change_inside_pseudo_mask"):
        value = (metrics.get(name) or {}).get("value")
        if value is not None:
            return value < NO_EDIT_CHANGE
    return False


def mark_degenerate(rows: list[Row], runs: list[RunSummary], layout: Layout) -> None:
    """Mark the cells the suite would call degenerate: a run that makes no edit (:func:`makes_no_edit`), in the
    columns such a run wins trivially (:data:`TRIVIAL_FOR_NO_EDIT`). Marked cells are shown, never bolded."""
    by_label = {run.label: run for run in runs}
    for row in rows:
        run = by_label.get(row.label)
        if row.kind == REPORTED or run is None or not makes_no_edit(run):
            continue
        for column in layout.columns:
            cell = row.cells[column.key]
            if column.metric in TRIVIAL_FOR_NO_EDIT and cell.value is not None:
                cell.degenerate = True


def rank_rows(rows: list[Row], runs: list[RunSummary], layout: Layout) -> None:
    """Sort the measured and oracle rows by the layout's ``ranked_by`` metric, best first (rows without a value
    last), and number them; reported rows keep their place after them."""
    column = next(c for c in layout.columns if c.metric == layout.ranked_by)
    measured = [row for row in rows if row.kind != REPORTED]
    sign = -1.0 if column.higher_is_better else 1.0
    measured.sort(key=lambda row: (row.cells[column.key].value is None, sign * (row.cells[column.key].value or 0.0)))
    for position, row in enumerate(measured, start=1):
        row.rank = position if row.cells[column.key].value is not None else None
    rows[:] = measured + [row for row in rows if row.kind == REPORTED]


def _candidates(board: Leaderboard) -> list[Row]:
    measured = [row for row in board.rows if row.kind == MEASURED]
    if not board.bold_reported:
        return measured
    return measured + [row for row in board.reported_rows() if not row.is_reference]


@dataclass(frozen=True)
class BestVerdict:
    """Whether a column's best row is significantly better than its runner-up.

    ``difference``: best - runner-up on the metrics.json scale with its paired bootstrap interval
    (``cfbench compare``'s test: the same resampled shared samples for both runs), None when not tested;
    ``significant``: the interval excludes 0 in the metric's better direction; ``reason``: why the best is
    not bolded, when it is not."""

    column: str
    best: str | None = None
    runner_up: str | None = None
    difference: tuple[float, float, float] | None = None  # (value, ci_low, ci_high)
    significant: bool = False
    reason: str = ""


_PAIRED = {}  # (run folder a, run folder b, metric names, protocol) -> compare_tables result, per process


def paired_difference(best: RunSummary, runner_up: RunSummary, metric: str) -> tuple[float, float, float] | str:
    """best - runner-up of ``metric`` on their shared samples with its paired bootstrap interval (the test of
    ``cfbench compare``, with the runs' own protocol); a reason string when it cannot be tested."""
    from cfbench.evaluation.results import load_table
    from cfbench.evaluation.scoring import compare_tables

    protocol = run_protocol(best)
    if protocol != run_protocol(runner_up):
        return "the two runs were scored with different protocols"
    if (best.metrics.get("evaluator") or {}) != (runner_up.metrics.get("evaluator") or {}):
        return "the two runs were evaluated with different evaluators"
    key = (str(best.run_dir), str(runner_up.run_dir), metric, protocol)
    if key not in _PAIRED:
        try:
            _PAIRED[key] = compare_tables(load_table(best.run_dir), load_table(runner_up.run_dir), protocol,
                                          metrics={metric})
        except (ValueError, RuntimeError, OSError) as error:  # no evaluation.npz (a bundle), too few shared samples
            _PAIRED[key] = str(error).splitlines()[0]
    result = _PAIRED[key]
    if isinstance(result, str):
        return result
    entry = result["differences"].get(metric)
    if not entry or entry.get("ci_low") is None or entry.get("ci_high") is None:
        return "no paired interval for this metric"
    return entry["value"], entry["ci_low"], entry["ci_high"]


def significant_best(board: Leaderboard, runs: list[RunSummary]) -> dict[str, BestVerdict]:
    """Per ranked column: the best candidate row, its runner-up, and whether the best is significantly
    better (paired bootstrap over the shared samples). Rows tied at the displayed precision are a tie
    without a test; a reported row (no samples) is compared by its printed value only."""
    by_label = {run.label: run for run in runs}
    verdicts = {}
    for column in board.layout.columns:
        if column.higher_is_better is None:
            continue
        shown = [(row, float(row.cells[column.key].text.removesuffix(CLIPPED_MARK))) for row in _candidates(board)
                 if row.cells[column.key].value is not None]
        if len(shown) < 2:
            verdicts[column.key] = BestVerdict(column.key, reason="fewer than two candidate rows have a value")
            continue
        shown = [(row, value) for row, value in shown if not row.cells[column.key].degenerate]  # never bolded
        if not shown:
            verdicts[column.key] = BestVerdict(column.key, reason="only degenerate cells have a value")
            continue
        if len(shown) == 1:
            verdicts[column.key] = BestVerdict(column.key, shown[0][0].label, significant=True,
                                               reason="the only candidate that is not degenerate")
            continue
        shown.sort(key=lambda item: item[1], reverse=column.higher_is_better)
        (best, best_value), (runner_up, runner_value) = shown[0], shown[1]
        if best_value == runner_value:
            verdicts[column.key] = BestVerdict(column.key, best.label, runner_up.label,
                                               reason="equal at the displayed precision")
            continue
        if best.kind == REPORTED or runner_up.kind == REPORTED:  # printed values: nothing to resample
            verdicts[column.key] = BestVerdict(column.key, best.label, runner_up.label, significant=True,
                                               reason="reported values compared as printed")
            continue
        tested = paired_difference(by_label[best.label], by_label[runner_up.label], column.metric)
        if isinstance(tested, str):
            verdicts[column.key] = BestVerdict(column.key, best.label, runner_up.label, reason=f"not tested: {tested}")
            continue
        value, low, high = tested
        better = low > 0 if column.higher_is_better else high < 0
        verdicts[column.key] = BestVerdict(column.key, best.label, runner_up.label, (value, low, high), better,
                                           "" if better else "the paired interval of the difference includes 0")
    return verdicts


def mark_best(board: Leaderboard, runs: list[RunSummary] | None = None) -> None:
    """Bold a column's best candidate only where it is significantly better than the runner-up
    (:func:`significant_best`); where it is not, the best and the runner-up are marked as a tie
    (``Cell.tie``), as are rows equal at the displayed precision."""
    board.verdicts = significant_best(board, runs or [])
    for key, verdict in board.verdicts.items():
        if verdict.best is None:
            continue
        rows = {row.label: row for row in _candidates(board)}
        if verdict.significant:
            rows[verdict.best].cells[key].bold = True
            continue
        best_text = rows[verdict.best].cells[key].text
        for row in rows.values():
            cell = row.cells[key]
            if cell.degenerate:  # shown with its own mark, never a candidate
                continue
            if row.label in (verdict.best, verdict.runner_up) or (cell.value is not None and cell.text == best_text):
                cell.tie = True


def per_finding_auroc(runs: list[RunSummary]) -> dict[str, dict[str, float | None]]:
    """model -> finding -> pathology AUROC (0-1) from metrics.json (None where not computed)."""
    table = {}
    for run in runs:
        metrics = run.metrics.get("metrics", {})
        table[run.label] = {finding: (metrics.get(f"pathology_auroc/{finding}") or {}).get("value")
                            for finding in EVALUATED_FINDINGS}
    return table


def run_protocol(run: RunSummary):
    """The Protocol the run was scored with (from metrics.json; fields this version lacks are ignored)."""
    from dataclasses import fields

    from cfbench.evaluation.protocol import Protocol

    known = {f.name for f in fields(Protocol)}
    saved = run.metrics.get("protocol", {})
    return Protocol(**{k: tuple(v) if isinstance(v, list) else v for k, v in saved.items() if k in known})


def by_operation(run: RunSummary, metrics: tuple[str, ...] = BREAKDOWN_METRICS,
                 n_resamples: int | None = None) -> dict[str, dict]:
    """Per operation kind (add / remove / change): n and each metric's value and bootstrap interval,
    scored on the run's per-sample table (evaluation.npz) restricted to the samples whose instruction
    contains that operation, with the run's own protocol (no FID: too few samples per kind).

    Returns {kind: {"n": int, metric: {"value", "ci_low", "ci_high"} or None}}; kinds with fewer than 2
    samples have n (and n_resamples) only. n_resamples: bootstrap resamples (default: the run's protocol)."""
    from dataclasses import replace

    import numpy as np

    from cfbench.evaluation.results import load_table
    from cfbench.evaluation.scoring import OPERATION_KINDS, score

    table = load_table(run.run_dir)
    protocol = run_protocol(run)
    if n_resamples is not None:
        protocol = replace(protocol, bootstrap_resamples=n_resamples)
    result = {}
    for kind in OPERATION_KINDS:
        rows = np.array([i for i, ops in enumerate(table.operations) if kind in ops], dtype=np.int64)
        result[kind] = {"n": int(len(rows)), "n_resamples": protocol.bootstrap_resamples}
        if len(rows) < 2:
            continue
        scored = score(table.subset(rows), protocol, breakdown=False, fid=False)["metrics"]
        for metric in metrics:
            entry = scored.get(metric)
            result[kind][metric] = None if entry is None or entry["value"] is None else {
                key: entry[key] for key in ("value", "ci_low", "ci_high")}
    return result
