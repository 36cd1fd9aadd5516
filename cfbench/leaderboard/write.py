"""`cfbench leaderboard`: write a leaderboard folder from evaluated run folders.

Layout of ``out/``::

    README.md                 index: every table in Markdown, links to the files below
    index.html                the same as a page: a sortable, filterable table of the runs, the plots, links
                              to each run's manifest and the gallery (cfbench.leaderboard.site)
    instructx2x.{md,csv,tex}  InstructX2X-protocol table (measured rows, then the papers' reported rows);
                              .tex is a full-width table*, instructx2x-narrow.tex a one-column variant
    progemu.{md,csv,tex}      ProgEmu-protocol table
    realism.{md,csv,tex}      realism and diversity (KID, precision/recall, density/coverage, seeds, memorisation),
                              when some run has them (cfbench.leaderboard.realism_table)
    per_finding_auroc.csv     pathology AUROC per finding and run (0-1, with intervals)
    by_operation.csv          per operation kind: n and metrics with intervals, from per-sample data
    plots/                    metric_bars, tradeoff, finding_heatmap, by_operation (.png and .pdf)
    gallery/index.html        input | target | outputs | guidance overlays, PNG thumbnails in gallery/img/
    gallery/memorisation.html runs evaluated with --memorisation: worst cases beside their nearest training image
    bundles/                  results bundles given instead of run folders (`cfbench export`), unpacked

With no run folders, only the papers' reported tables are written, one file set per paper table.
"""

from __future__ import annotations

import csv
import functools
import io
from pathlib import Path

from cfbench.core.findings import EVALUATED_FINDINGS
from cfbench.core.storage import atomic_write_text, remove_stale_temporaries
from cfbench.core.safe_text import csv_text, markdown_text
from cfbench.leaderboard.formats import to_csv, to_latex, to_markdown
from cfbench.leaderboard.grouping import comparable_groups, describe_groups, require_comparable
from cfbench.leaderboard.realism_table import REALISM_LAYOUT, realism_board
from cfbench.leaderboard.reported import ALL_TABLES, LEADERBOARD_TABLES
from cfbench.leaderboard.table_model import (
    BREAKDOWN_METRICS,
    LAYOUTS,
    RunSummary,
    build_leaderboard,
    by_operation,
    load_runs,
)

BREAKDOWN_RESAMPLES = 200


def write_table_files(board, stem: Path) -> list[Path]:
    """{stem}.md, .csv, .tex (full width, table*) and {stem}-narrow.tex (one column, values only)."""
    paths = [stem.with_suffix(".md"), stem.with_suffix(".csv"), stem.with_suffix(".tex"),
             stem.with_name(f"{stem.name}-narrow.tex")]
    texts = (to_markdown(board), to_csv(board), to_latex(board, f"tab:{stem.name}"),
             to_latex(board, f"tab:{stem.name}", narrow=True))
    for path, text in zip(paths, texts):
        atomic_write_text(path, text)
    return paths


def write_reported_tables(out: str | Path) -> list[Path]:
    """Every transcribed paper table on its own (bold: best generated row of that table)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written, sections = [], ["# Values reported in the papers", "",
                             "Transcribed as printed; not measured by cfbench. Written by `cfbench leaderboard` "
                             "from `cfbench/leaderboard/reported.py`.", ""]
    for table in ALL_TABLES:
        board = build_leaderboard([], table.layout, reported=[table], bold_reported=True)
        written += write_table_files(board, out / table.key)
        sections += [f"## {table.short}", "", to_markdown(board, heading_level=3)]
    atomic_write_text(out / "README.md", "\n".join(sections))
    return [out / "README.md", *written]


def _per_finding_csv(runs: list[RunSummary]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["model", "run_id", "finding", "auroc", "ci_low", "ci_high", "n"])
    for run in runs:
        for finding in EVALUATED_FINDINGS:
            entry = run.metrics.get("metrics", {}).get(f"pathology_auroc/{finding}") or {}
            writer.writerow([csv_text(run.label), csv_text(run.run_id), finding, *("" if entry.get(k) is None else repr(entry[k])
                                                               for k in ("value", "ci_low", "ci_high", "n"))])
    return buffer.getvalue()


def _by_operation_csv(breakdowns: dict[str, dict], runs: list[RunSummary]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["model", "run_id", "operation", "n", "metric", "value", "ci_low", "ci_high", "n_resamples"])
    for run in runs:
        for kind, entry in breakdowns[run.label].items():
            for metric in BREAKDOWN_METRICS:
                values = entry.get(metric)
                cells = ["", "", ""] if not values else [repr(values[k]) if values[k] is not None else ""
                                                         for k in ("value", "ci_low", "ci_high")]
                writer.writerow([csv_text(run.label), csv_text(run.run_id), kind, entry["n"], metric, *cells, entry["n_resamples"]])
    return buffer.getvalue()


def unpack_bundles(run_dirs: list[str | Path], out: Path) -> list[Path]:
    """Run folders as given; results bundles (``cfbench export``) unpacked into ``out/bundles/`` first."""
    from cfbench.leaderboard.bundle import is_bundle, open_bundle

    return [open_bundle(path, out / "bundles") if is_bundle(path) else Path(path) for path in run_dirs]


def reported_tables_for(runs: list[RunSummary], include_reported: bool | str = "auto") -> list:
    """The papers' tables to show beside these runs: "auto" (default) only those measured on a dataset kind
    some run was evaluated on (the MIMIC rows do not sit beside phantom rows); True: all; False: none."""
    if include_reported == "auto":
        kinds = {(run.metrics.get("dataset") or {}).get("kind") for run in runs}
        return [table for table in LEADERBOARD_TABLES if table.dataset_kind in kinds]
    return list(LEADERBOARD_TABLES) if include_reported else []


def write_leaderboard(run_dirs: list[str | Path], out: str | Path, include_reported: bool | str = "auto",
                      bold_reported: bool = False, plots: bool = True, gallery: bool = True,
                      gallery_samples: int = 8, thumbnail: int = 192, title: str | None = None,
                      breakdown_resamples: int = BREAKDOWN_RESAMPLES,
                      labels: dict[str, str] | None = None, allow_mixed: bool = False) -> dict[str, list]:
    """Tables, plots and gallery of evaluated runs into out/; returns {"written": paths, "skipped": reasons}.

    include_reported: the papers' rows, see :func:`reported_tables_for` ("auto": only beside runs on the
    dataset kind they were measured on).

    breakdown_resamples: bootstrap resamples of the per-operation intervals (fewer than the headline
    metrics': each kind rescores every metric per resample; the count is written in by_operation.csv).
    labels: row names by run folder (as given, or its name), over the runs' stored labels.
    Runs whose comparability keys differ (:mod:`cfbench.leaderboard.grouping`) are refused, naming the
    difference; ``allow_mixed``: one leaderboard per key instead, in ``out/set-K/`` (never bolded across)."""
    out = Path(out)
    if not run_dirs:
        return {"written": write_reported_tables(out), "skipped": []}
    runs = load_runs(unpack_bundles(run_dirs, out), labels)  # creates out/ only to unpack a bundle given
    groups = comparable_groups(runs)
    if len(groups) > 1:
        if not allow_mixed:
            require_comparable(runs)  # refused before anything is written
        return _write_mixed(groups, out, title, dict(
            include_reported=include_reported, bold_reported=bold_reported, plots=plots, gallery=gallery,
            gallery_samples=gallery_samples, thumbnail=thumbnail, breakdown_resamples=breakdown_resamples))
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out)  # left by an earlier write killed mid-way
    title = title or f"cfbench leaderboard {out.name}"
    written, skipped = [], []
    boards = {}
    for name, layout in LAYOUTS.items():
        board = build_leaderboard(runs, name, reported=reported_tables_for(runs, include_reported),
                                  bold_reported=bold_reported)
        if layout.optional and not any(cell.value is not None for row in board.measured_rows()
                                       for cell in row.cells.values()):
            continue
        boards[name] = board
        written += write_table_files(board, out / name)
    realism = realism_board(runs)  # realism and diversity (KID, P/R, D/C, seeds, memorisation), when measured
    if realism is not None:
        boards[REALISM_LAYOUT.name] = realism
        written += write_table_files(realism, out / REALISM_LAYOUT.name)
    atomic_write_text(out / "per_finding_auroc.csv", _per_finding_csv(runs))
    written.append(out / "per_finding_auroc.csv")
    breakdowns = {}
    for run in runs:
        try:
            breakdowns[run.label] = by_operation(run, BREAKDOWN_METRICS, breakdown_resamples)
        except Exception as error:  # no evaluation.npz, or an old one: the rest of the leaderboard still stands
            skipped.append(f"per-operation breakdown of {run.label}: {error}")
    if breakdowns:
        atomic_write_text(out / "by_operation.csv", _by_operation_csv(breakdowns, [r for r in runs if r.label in breakdowns]))
        written.append(out / "by_operation.csv")
    plot_files = []
    if plots:
        from cfbench.leaderboard import plots as plotting

        jobs = [("metric_bars", lambda stem: plotting.metric_bars(runs, stem)),
                ("tradeoff", lambda stem: plotting.tradeoff(runs, stem)),
                ("finding_heatmap", lambda stem: plotting.finding_heatmap(runs, stem)),
                ("by_operation", lambda stem: plotting.by_operation_plot(
                    breakdowns, [r for r in runs if r.label in breakdowns], stem))]
        for name, job in jobs:
            try:
                plot_files += job(out / "plots" / name)
            except ValueError as error:
                skipped.append(f"plot {name}: {error}")
        written += plot_files
    gallery_index = None
    if gallery:
        from cfbench.leaderboard.gallery import GalleryError, write_gallery

        with_images = [run for run in runs if (run.run_dir / "images").is_dir()]
        skipped += [f"gallery: {run.label} is a results bundle without images" for run in runs if run not in with_images]
        try:
            gallery_index = write_gallery(with_images, out / "gallery", gallery_samples, thumbnail,
                                          title=f"Gallery · {title}")
            written.append(gallery_index)
        except (GalleryError, FileNotFoundError, OSError, ValueError, RuntimeError) as error:
            skipped.append(f"gallery: {error}")  # DatasetError is a ValueError, EvaluationError a RuntimeError
        from cfbench.leaderboard.memorisation_gallery import write_memorisation_page

        try:
            memorisation_page = write_memorisation_page(runs, out / "gallery")
            if memorisation_page is not None:
                written.append(memorisation_page)
        except (FileNotFoundError, OSError, ValueError) as error:
            skipped.append(f"gallery memorisation page: {error}")
    from cfbench.leaderboard.site import write_site

    written.insert(0, write_site(runs, out, plot_files, gallery_index, title))
    atomic_write_text(out / "README.md", _index(title, runs, boards, plot_files, gallery_index, skipped, out))
    written.insert(0, out / "README.md")
    return {"written": written, "skipped": skipped}


def _write_mixed(groups: list[list[RunSummary]], out: Path, title: str | None, options: dict) -> dict[str, list]:
    """One leaderboard per comparability key in ``out/set-K/`` and an index naming what differs."""
    title = title or f"cfbench leaderboard {out.name}"
    written, skipped = [], []
    lines = [f"# {title}", "", f"The runs were measured in {len(groups)} settings that cannot share a table "
             f"({markdown_text(describe_groups(groups), table_cell=False)}); one leaderboard per setting, never "
             "bolded across:", ""]
    for number, members in enumerate(groups, start=1):
        folder = out / f"set-{number}"
        result = write_leaderboard([run.run_dir for run in members], folder, title=f"{title}, set {number}",
                                   labels={str(run.run_dir): run.label for run in members}, **options)
        written += result["written"]
        skipped += [f"set {number}: {reason}" for reason in result["skipped"]]
        lines.append(f"- [set {number}](set-{number}/README.md): "
                     + ", ".join(f"`{markdown_text(run.run_id, table_cell=False)}`" for run in members))
    atomic_write_text(out / "README.md", "\n".join(lines + [""]))
    return {"written": [out / "README.md", *written], "skipped": skipped}


def _index(title: str, runs: list[RunSummary], boards: dict, plot_files: list[Path], gallery_index: Path | None,
           skipped: list[str], out: Path) -> str:
    lines = [f"# {title}", "", "Written by `cfbench leaderboard`. Open [index.html](index.html) in a browser for the "
             "sortable, filterable table (no server needed). Runs:", ""]
    for run in runs:
        dataset = run.metrics.get("dataset", {})
        evaluator = (run.metrics.get("evaluator") or {}).get("evaluator", "none")
        text = functools.partial(markdown_text, table_cell=False)
        lines.append(f"- `{text(run.run_id)}`: model `{text(run.model)}`, {run.metrics.get('n_samples')} samples "
                     f"of split `{text(dataset.get('split'))}` ({text(dataset.get('kind'))}), evaluator "
                     f"`{text(evaluator)}`")
    lines.append("")
    for name, board in boards.items():
        lines += [to_markdown(board, heading_level=2),
                  f"Files: [{name}.md]({name}.md), [{name}.csv]({name}.csv), [{name}.tex]({name}.tex) (booktabs, "
                  f"full width), [{name}-narrow.tex]({name}-narrow.tex) (one column).", ""]
    lines += ["## Plots", ""]
    for png in [p for p in plot_files if p.suffix == ".png"]:
        relative = png.relative_to(out).as_posix()
        lines += [f"![{png.stem}]({relative}) ([PDF]({png.with_suffix('.pdf').relative_to(out).as_posix()}))", ""]
    lines += ["Per-finding AUROCs: [per_finding_auroc.csv](per_finding_auroc.csv); per operation kind: "
              "[by_operation.csv](by_operation.csv).", ""]
    if gallery_index is not None:
        lines += ["## Gallery", "", f"[{gallery_index.relative_to(out).as_posix()}]"
                  f"({gallery_index.relative_to(out).as_posix()}): open it in a browser (no server needed).", ""]
        if (gallery_index.parent / "memorisation.html").is_file():
            lines += ["Memorisation worst cases beside their nearest training images: "
                      "[gallery/memorisation.html](gallery/memorisation.html).", ""]
    if skipped:
        lines += ["## Not written", ""] + [f"- {reason}" for reason in skipped] + [""]
    return "\n".join(lines)
