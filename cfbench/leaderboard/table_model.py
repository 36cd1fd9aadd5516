"""Evaluated run folders (and the papers' reported values) -> one table model per layout.

A layout is the column set of one paper's table: ``instructx2x`` (Patho, Race, Age, CMIG, KL, FID) and
``progemu`` (FID, CLIP-I, AUROC, F1, BLEU-3, METEOR, ROUGE-L). Measured cells come from each run's
metrics.json (value and bootstrap interval) on the scale the paper prints: AUROC and Pearson r x 100 in
the InstructX2X layout, CLIP-I (mean cosine) x 100 in the ProgEmu layout; KL is in nats.

Rows have a kind:

- ``measured``: a run folder evaluated by cfbench;
- ``oracle``: a measured oracle row (models ``ground-truth`` / ``true-counterfactual``, the papers'
  "Real Images (GT)"): shown, never bolded, as the papers bold only generated methods;
- ``reported``: a value printed in a paper (:mod:`cfbench.leaderboard.reported`), never measured here.

Bolding, per column and direction-aware (higher is better, lower for KL and FID), on the values as
displayed (so ties at the shown precision are all bold): the best ``measured`` row, when at least two
measured rows have a value. Reported rows are not bolded against measured rows; with
``bold_reported=True`` reported generated rows join the candidates (their test sets and, for KL, their
scale differ: use with care).
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

ORACLE_MODELS: tuple[str, ...] = ("ground-truth", "true-counterfactual")
MEASURED, REFERENCE, REPORTED = "measured", "oracle", "reported"  # REFERENCE: the measured oracle rows
BREAKDOWN_METRICS: tuple[str, ...] = ("pathology_mean_auroc", "cmig", "kl_divergence")  # rescored per operation kind


@dataclass(frozen=True)
class Column:
    """One table column: the metrics.json name, the factor to the paper's scale, decimals, and a spanning
    header (``group``: "CMIG" over Patho/Race/Age/CMIG, as in the papers). Title and direction come from
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


LAYOUTS: dict[str, Layout] = {
    "instructx2x": Layout(
        name="instructx2x",
        title="InstructX2X protocol: pathology accuracy, attribute retention, CMIG, KL, FID",
        columns=(
            Column("patho", "pathology_mean_auroc", 100.0, group="CMIG"),
            Column("race", "race_auroc", 100.0, group="CMIG"),
            Column("age", "age_pearson", 100.0, group="CMIG"),
            Column("cmig", "cmig", 1.0, group="CMIG"),
            Column("kl", "kl_divergence", 1.0, 3),
            Column("fid", "fid", 1.0),
        ),
        notes=("Patho = mean AUROC over 5 findings x 100; Race = race (phantoms: group) AUROC x 100; "
               "Age = Pearson r x 100; CMIG on 0-100.",
               "Measured KL is in nats (unscaled; its reading of Eq. 4 is in the Protocol line); the papers' KL "
               "scaling is not published, so reported KL values are not comparable with measured ones."),
    ),
    "progemu": Layout(
        name="progemu",
        title="ProgEmu protocol: image quality, alignment, pathology, interpretation text",
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


@dataclass
class Leaderboard:
    layout: Layout
    rows: list[Row]
    confidence_level: float | None
    bold_reported: bool
    reported_tables: list[ReportedTable] = field(default_factory=list)
    protocol_notes: list[str] = field(default_factory=list)  # the open protocol choices of the measured rows
    small_n_rows: list[tuple[str, int]] = field(default_factory=list)  # (row label, n) with n < SMALL_N

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
    """One evaluated run folder: its identity and metrics.json."""

    run_dir: Path
    run_id: str
    model: str
    metrics: dict

    @property
    def label(self) -> str:
        return self.model


class LeaderboardError(ValueError):
    pass


def run_id(run_dir: Path, manifest: RunManifest) -> str:
    """'<folder name>@<first 8 hex of SHA-256 of the run config>': names the run and what produced it."""
    digest = hashlib.sha256(json.dumps(manifest.config.to_dict(), sort_keys=True).encode()).hexdigest()[:8]
    return f"{run_dir.name}@{digest}"


def load_runs(run_dirs: list[str | Path]) -> list[RunSummary]:
    """Read each run folder's manifest and metrics.json; labels made unique (model, then model [folder])."""
    runs = [_load_run(folder) for folder in map(Path, run_dirs)]
    models = [run.model for run in runs]
    for run in runs:
        if models.count(run.model) > 1:
            run.model = f"{run.model} [{run.run_dir.name}]"
    if len({run.model for run in runs}) != len(runs):
        raise LeaderboardError("two run folders have the same model and folder name; give them distinct names")
    return runs


def _load_run(folder: Path) -> RunSummary:
    """One run folder; LeaderboardError naming the file and the reason when its manifest or metrics.json is
    missing, malformed or not cfbench's."""
    from cfbench.evaluation.protocol import EvaluationError

    try:
        manifest = RunManifest.read(folder)
        return RunSummary(folder, run_id(folder, manifest), manifest.config.model, read_metrics(folder))
    except (EvaluationError, OSError, ValueError) as error:
        raise LeaderboardError(f"run {folder} cannot be read: {error}") from None


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
    return Cell(value, format_value(value, column.decimals), scaled(entry.get("ci_low")), scaled(entry.get("ci_high")))


def is_oracle(model: str) -> bool:
    return model.split(" [")[0] in ORACLE_MODELS


def build_leaderboard(runs: list[RunSummary], layout: str | Layout = "instructx2x",
                      reported: list[ReportedTable] | None = None, bold_reported: bool = False) -> Leaderboard:
    """Measured rows (run order) then reported rows (table order); bold marks set per column.

    reported: the paper tables to include (default: the comparison tables of this layout; [] for none)."""
    layout = LAYOUTS[layout] if isinstance(layout, str) else layout
    reported = tables_for_layout(layout.name) if reported is None else [t for t in reported if t.layout == layout.name]
    rows = []
    for run in runs:
        cells = {column.key: _measured_cell(run.metrics, column) for column in layout.columns}
        oracle = is_oracle(run.model)
        rows.append(Row(run.label, REFERENCE if oracle else MEASURED, run.run_id, cells,
                        n=run.metrics.get("n_samples"), run_dir=str(run.run_dir), is_reference=oracle))
    for table in reported:
        for reported_row in table.rows:
            cells = {}
            for column in layout.columns:
                value = reported_row.value(column.key)
                cells[column.key] = Cell(value, reported_row.values.get(column.key) or "–")
            rows.append(Row(reported_row.model, REPORTED, table.short, cells, citation=table.citation,
                            is_reference=reported_row.is_reference))
    levels = {run.metrics.get("protocol", {}).get("confidence_level") for run in runs} - {None}
    board = Leaderboard(layout, rows, levels.pop() if len(levels) == 1 else None, bold_reported, list(reported),
                        protocol_notes=_protocol_notes(runs, layout), small_n_rows=_small_n_rows(runs, layout))
    mark_best(board)
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


def _candidates(board: Leaderboard) -> list[Row]:
    measured = [row for row in board.rows if row.kind == MEASURED]
    if not board.bold_reported:
        return measured
    return measured + [row for row in board.reported_rows() if not row.is_reference]


def mark_best(board: Leaderboard) -> None:
    """Bold the best displayed value of each column among the candidates (needs at least two values)."""
    candidates = _candidates(board)
    for column in board.layout.columns:
        if column.higher_is_better is None:
            continue
        shown = [(row, float(row.cells[column.key].text)) for row in candidates
                 if row.cells[column.key].value is not None]
        if len(shown) < 2:
            continue
        best = max(v for _, v in shown) if column.higher_is_better else min(v for _, v in shown)
        for row, value in shown:
            row.cells[column.key].bold = value == best


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
