"""Leaderboard tables from real run folders (runner + evaluator on a tiny phantom split): values, bolding,
the papers' reported rows, the three file formats, per-operation numbers, plots and the CLI verb."""

from __future__ import annotations

import copy
import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cfbench.cli import main
from cfbench.evaluation.results import load_table
from cfbench.evaluation.scoring import score
from cfbench.leaderboard.formats import notes, to_csv, to_latex, to_markdown
from cfbench.leaderboard.reported import ALL_TABLES, INSTRUCTX2X_V2_TABLE2, PROGEMU_TABLE1
from cfbench.leaderboard.table_model import (
    LAYOUTS,
    REFERENCE,
    REPORTED,
    RunSummary,
    build_leaderboard,
    by_operation,
    load_runs,
)
from cfbench.leaderboard.write import write_leaderboard
from tests.helpers.datasets import PAPER_TABLES_DIR
from tests.helpers.runs import FAST, make_evaluated_runs


@pytest.fixture(scope="module")
def evaluated_runs(tmp_path_factory) -> dict[str, Path]:
    return make_evaluated_runs(tmp_path_factory.mktemp("leaderboard"))


def metric(run: Path, name: str) -> dict:
    return json.loads((run / "metrics.json").read_text())["metrics"][name]


def summary(label: str, values: dict[str, float], template: dict) -> RunSummary:
    """A run whose metrics.json is a real one with some values replaced (intervals dropped for those)."""
    metrics = copy.deepcopy(template)
    for name, value in values.items():
        metrics["metrics"][name] = {**metrics["metrics"][name], "value": value, "ci_low": None, "ci_high": None}
    return RunSummary(Path(label), f"{label}@00000000", label, metrics)


def test_measured_cells_are_metrics_json_on_the_papers_scale(evaluated_runs):
    runs = load_runs(list(evaluated_runs.values()))
    board = build_leaderboard(runs, "instructx2x", reported=[])
    row = next(r for r in board.rows if r.label == "noisy-edit")
    noisy = evaluated_runs["tests.helpers.fake_models:NoisyEditModel"]
    patho = metric(noisy, "pathology_mean_auroc")
    assert row.cells["patho"].value == pytest.approx(100 * patho["value"])
    assert row.cells["patho"].ci_low == pytest.approx(100 * patho["ci_low"])
    assert row.cells["patho"].ci_high == pytest.approx(100 * patho["ci_high"])
    assert row.cells["patho"].text == f"{100 * patho['value']:.2f}"
    assert row.cells["age"].value == pytest.approx(100 * metric(noisy, "age_pearson")["value"])
    assert row.cells["cmig"].value == pytest.approx(metric(noisy, "cmig")["value"])
    assert row.cells["kl"].text == f"{metric(noisy, 'kl_divergence')['value']:.3f}"
    assert row.n == 30 and re.fullmatch(r"NoisyEditModel@[0-9a-f]{8}", row.source)
    truth = next(r for r in board.rows if r.label == "ground-truth")
    assert truth.kind == REFERENCE and truth.cells["kl"].text == "0.000"  # no "-0.000" from round-off
    progemu = build_leaderboard(runs, "progemu", reported=[])
    assert progemu.rows[0].cells["clip_i"].text == "–"  # not evaluated with an embedder
    assert progemu.rows[0].cells["auroc"].text == f"{metric(evaluated_runs['identity'], 'pathology_mean_auroc')['value']:.4f}"


def test_bold_only_where_the_best_is_significantly_better_than_the_runner_up(evaluated_runs):
    """The verdict of each column is `cfbench compare`'s paired test of the best against the runner-up: bold
    where the interval of the difference excludes 0 in the better direction, a tie mark otherwise."""
    from cfbench.evaluation.results import load_table
    from cfbench.evaluation.scoring import compare_tables
    from cfbench.leaderboard.table_model import run_protocol

    runs = load_runs(list(evaluated_runs.values()))
    by_label = {run.label: run for run in runs}
    checked = {True: 0, False: 0}
    for layout in ("instructx2x", "locality"):
        board = build_leaderboard(runs, layout, reported=[])
        candidates = [r for r in board.rows if r.kind == "measured"]
        assert [r.label for r in candidates] == ["identity", "noisy-edit"]
        for column in LAYOUTS[layout].columns:
            if column.higher_is_better is None:
                assert column.key not in board.verdicts
                continue
            verdict = board.verdicts[column.key]
            shown = {r.label: float(r.cells[column.key].text.removesuffix(" (clipped)")) for r in candidates
                     if r.cells[column.key].value is not None and not r.cells[column.key].degenerate}
            n_values = sum(r.cells[column.key].value is not None for r in candidates)
            if n_values < 2:
                assert verdict.best is None
                continue
            if len(shown) < 2:  # a degenerate cell (identity makes no edit) is never the best: the other one is
                assert verdict.best == (next(iter(shown)) if shown else None)
                if shown:
                    assert next(r for r in candidates if r.label == verdict.best).cells[column.key].bold
                continue
            best = (max if column.higher_is_better else min)(shown, key=shown.get)
            if len(set(shown.values())) == 1:
                assert verdict.difference is None and all(r.cells[column.key].tie for r in candidates)
                continue
            assert verdict.best == best
            other = next(label for label in shown if label != best)
            reference = compare_tables(load_table(by_label[best].run_dir), load_table(by_label[other].run_dir),
                                       run_protocol(by_label[best]))["differences"][column.metric]
            assert verdict.difference == pytest.approx((reference["value"], reference["ci_low"], reference["ci_high"]))
            significant = reference["ci_low"] > 0 if column.higher_is_better else reference["ci_high"] < 0
            cells = {r.label: r.cells[column.key] for r in candidates}
            assert cells[best].bold == significant and not cells[other].bold
            assert cells[best].tie == cells[other].tie == (not significant)
            checked[significant] += 1
    assert checked[True] >= 1 and checked[False] >= 1  # both outcomes occur on these runs
    assert not any(cell.bold for cell in next(r for r in board.rows if r.label == "ground-truth").cells.values())
    board = build_leaderboard(runs, "instructx2x", reported=[])
    identity = next(r for r in board.rows if r.label == "identity")  # makes no edit: trivially best at retention
    assert {k for k, cell in identity.cells.items() if cell.degenerate} == {"race", "age", "fid"}
    assert not any(cell.bold for cell in identity.cells.values() if cell.degenerate)

    # rows without per-sample tables (and equal rows) are never bolded; the note says why
    template = next(r for r in runs if r.label == "noisy-edit").metrics  # an edit: nothing degenerate
    a = summary("a", {"pathology_mean_auroc": 0.80, "kl_divergence": 0.10, "fid": 5.0, "cmig": 70.004}, template)
    b = summary("b", {"pathology_mean_auroc": 0.90, "kl_divergence": 0.20, "fid": 3.0, "cmig": 69.998}, template)
    untested = build_leaderboard([a, b], "instructx2x", reported=[])
    assert not any(cell.bold for row in untested.rows for cell in row.cells.values())
    assert untested.verdicts["kl"].best == "a" and untested.verdicts["fid"].best == "b"  # direction-aware
    assert untested.verdicts["patho"].best == "b" and "not tested" in untested.verdicts["patho"].reason
    assert untested.verdicts["cmig"].reason == "equal at the displayed precision"
    assert any("KL ≈ a vs b, no bold (not tested:" in note.replace(": ≈", " ≈") for note in notes(untested))
    single = build_leaderboard([a], "instructx2x", reported=[])
    assert not any(cell.bold or cell.tie for cell in single.rows[0].cells.values())  # nothing to compare against


def test_reported_rows_are_marked_and_not_bolded_against_measured_rows(evaluated_runs):
    runs = load_runs(list(evaluated_runs.values()))
    board = build_leaderboard(runs, "instructx2x")
    reported = [r for r in board.rows if r.kind == REPORTED]
    assert {r.source for r in reported} == {"InstructX2X v1, Table 1", "InstructX2X v2, Table 2"}
    assert not any(cell.bold for r in reported for cell in r.cells.values())
    v2 = {r.label: r for r in reported if r.source == "InstructX2X v2, Table 2"}
    assert v2["InstructX2X"].cells["cmig"].text == "89.35" and v2["LLM-CXR"].cells["age"].text == "0.10"
    assert v2["Real Images (GT)"].cells["kl"].value is None and v2["Real Images (GT)"].cells["kl"].text == "–"
    assert all(r.citation and "arXiv:2603.00423v1" in r.citation for r in v2.values())

    # on request, reported generated rows compete: RoentGen's printed Patho 84.53 beats these measured rows
    assert all(r.cells["patho"].value < 84.53 for r in board.measured_rows())
    competing = build_leaderboard(runs, "instructx2x", reported=[INSTRUCTX2X_V2_TABLE2], bold_reported=True)
    assert [r.label for r in competing.rows if r.cells["patho"].bold] == ["RoentGen"]
    assert not any(c.bold for c in next(r for r in competing.rows if r.label == "Real Images (GT)").cells.values())


def test_reported_values_are_the_numbers_printed_in_the_papers():
    """Every reported row's numbers appear, in order, as one line of the paper's table (the tables are kept
    verbatim in tests/data/paper-tables, with their captions)."""
    papers = {path.name: path.read_text(encoding="utf-8") for path in PAPER_TABLES_DIR.glob("*.txt")}
    assert len(papers) == len(ALL_TABLES)

    def numbers(line: str) -> list[str]:
        return re.findall(r"\d+\.\d+", re.sub(r"<[^>]+>", " ", line))

    for table in ALL_TABLES:
        opening = " ".join(table.caption.split()[:8])
        matches = [text for text in papers.values() if opening in " ".join(text.split())]
        assert matches, f"caption of {table.key} not found in the papers"
        lines = {tuple(numbers(line)) for text in matches for line in text.splitlines()}
        for row in table.rows:
            printed = tuple(v for v in row.values.values() if v is not None)
            assert printed in lines, f"{table.key} / {row.model}: {printed} not printed in the paper"


def test_markdown_csv_and_latex_files(evaluated_runs, tmp_path):
    result = write_leaderboard(list(evaluated_runs.values()), tmp_path / "board", plots=False, gallery=False,
                               include_reported=True)  # asked for: the papers' MIMIC rows beside phantom runs
    out = tmp_path / "board"
    assert out / "README.md" in result["written"] and result["skipped"] == []
    table = pd.read_csv(out / "instructx2x.csv", dtype={"source": str})
    noisy = table[table["model"] == "noisy-edit"].iloc[0]
    cmig = metric(evaluated_runs["tests.helpers.fake_models:NoisyEditModel"], "cmig")
    assert noisy["cmig"] == pytest.approx(cmig["value"], rel=1e-12)
    assert noisy["cmig_ci_low"] == pytest.approx(cmig["ci_low"]) and noisy["kind"] == "measured"
    assert set(table["kind"]) == {"measured", "oracle", "reported"}
    reported = table[table["kind"] == "reported"]
    assert len(reported) == 6 + 7 and reported["best"].isna().all()
    assert (table[table["model"] == "ground-truth"]["best"]).isna().all()
    v2_instructx2x = reported[(reported["model"] == "InstructX2X") & reported["source"].str.contains("v2")].iloc[0]
    assert v2_instructx2x["kl"] == pytest.approx(7.88) and v2_instructx2x["fid"] == pytest.approx(2.64)
    progemu = pd.read_csv(out / "progemu.csv")
    assert list(progemu[progemu["kind"] == "reported"]["model"]) == [r.model for r in PROGEMU_TABLE1.rows]

    runs = load_runs(list(evaluated_runs.values()))
    board = build_leaderboard(runs, "instructx2x")
    markdown = (out / "instructx2x.md").read_text()
    assert markdown == to_markdown(board)
    for row in board.rows:
        for cell in row.cells.values():
            if cell.bold:
                assert f"**{cell.text}**" in markdown
    assert "| *InstructX2X* | reported | InstructX2X v2, Table 2 |  | 83.33 | 97.65 | 82.84 | 89.35 | 7.88 | 2.64 |" in markdown
    latex = (out / "instructx2x.tex").read_text()
    assert latex == to_latex(board, "tab:instructx2x")
    for command in (r"\toprule", r"\midrule", r"\bottomrule", r"\cmidrule(lr){2-4}", r"\multicolumn{3}{c}{CMIG terms}"):
        assert command in latex  # the spanning header covers CMIG's terms, not CMIG itself
    assert "noisy-edit" in latex  # the default row name: the registry name of the module:Class given
    labelled = build_leaderboard(load_runs(list(evaluated_runs.values()),
                                           {evaluated_runs["identity"].name: "no_edit 100%"}), "instructx2x")
    assert r"no\_edit 100\%" in to_latex(labelled, "tab:x")
    assert latex.count("{") == latex.count("}") - latex.count(r"\}") + latex.count(r"\{")
    assert r"\textit{InstructX2X (wo RSE)}$^\dagger$" in latex
    n_bold = sum(cell.bold for row in board.rows for cell in row.cells.values())
    n_tie = sum(cell.tie for row in board.rows for cell in row.cells.values())
    assert latex.count(r"\textbf{") == n_bold and latex.count(r"$^{\approx}$") == n_tie and n_bold + n_tie > 0
    assert to_csv(board) == (out / "instructx2x.csv").read_text()


def test_reported_tables_alone(tmp_path):
    assert main(["leaderboard", "--out", str(tmp_path / "reported")]) == 0
    files = sorted(p.name for p in (tmp_path / "reported").iterdir())
    assert files == sorted(["README.md"] + [f"{t.key}{ext}" for t in ALL_TABLES
                                            for ext in (".md", ".csv", ".tex", "-narrow.tex")])
    table = pd.read_csv(tmp_path / "reported" / "instructx2x-v2-table2.csv")
    assert list(table["model"]) == [r.model for r in INSTRUCTX2X_V2_TABLE2.rows]
    best = dict(zip(table["model"], table["best"].fillna("")))
    # alone, a paper's table is bolded among its generated rows (the real-images row never)
    assert best["InstructX2X"] == "race;age;cmig;kl" and best["InstructX2X (wo RSE)"] == "fid"
    assert best["RoentGen"] == "patho" and best["Real Images (GT)"] == ""


def test_by_operation_is_scored_from_the_per_sample_table(evaluated_runs):
    run = load_runs([evaluated_runs["tests.helpers.fake_models:NoisyEditModel"]])[0]
    breakdown = by_operation(run, n_resamples=50)
    table = load_table(run.run_dir)
    predictions = pd.read_csv(run.run_dir / "predictions.csv")
    stored = run.metrics["by_operation"]
    for kind in ("add", "remove", "change"):
        n = int(predictions["operations"].fillna("").str.split(",").apply(lambda ops: kind in ops).sum())
        assert breakdown[kind]["n"] == n == stored[kind]["n"]
        if n < 2:
            continue
        rows = np.array([i for i, ops in enumerate(table.operations) if kind in ops])
        expected = score(table.subset(rows), FAST, breakdown=False, fid=False)["metrics"]["pathology_mean_auroc"]
        got = breakdown[kind]["pathology_mean_auroc"]
        if expected["value"] is None:
            assert got is None
            continue
        assert got["value"] == pytest.approx(expected["value"]) == pytest.approx(stored[kind]["pathology_mean_auroc"])
        assert got["ci_low"] <= got["value"] <= got["ci_high"]
    assert breakdown["add"]["n"] >= 2


def test_plots_are_valid_png_and_pdf_files(evaluated_runs, tmp_path):
    result = write_leaderboard(list(evaluated_runs.values()), tmp_path / "board", gallery=False)
    assert result["skipped"] == []
    for name in ("metric_bars", "tradeoff", "finding_heatmap", "by_operation"):
        png, pdf = tmp_path / "board" / "plots" / f"{name}.png", tmp_path / "board" / "plots" / f"{name}.pdf"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
        with Image.open(png) as image:
            image.verify()
        with Image.open(png) as image:
            assert image.width > 400 and image.height > 300
            pixels = np.asarray(image.convert("L"))
            assert pixels.std() > 10  # drawn, not blank
        data = pdf.read_bytes()
        assert data.startswith(b"%PDF-") and b"%%EOF" in data[-64:] and len(data) > 5_000
        assert f"plots/{name}.png" in (tmp_path / "board" / "README.md").read_text()


def test_cli_leaderboard_and_its_errors(evaluated_runs, tmp_path, capsys):
    runs = [str(evaluated_runs[m]) for m in ("identity", "tests.helpers.fake_models:NoisyEditModel")]
    assert main(["leaderboard", *runs, "--out", str(tmp_path / "lb"), "--no-plots", "--no-gallery",
                 "--no-reported"]) == 0
    table = pd.read_csv(tmp_path / "lb" / "instructx2x.csv")
    assert list(table["model"]) == ["identity", "noisy-edit"]
    assert "wrote" in capsys.readouterr().out
    not_a_run = tmp_path / "empty"
    not_a_run.mkdir()
    assert main(["leaderboard", str(not_a_run), "--out", str(tmp_path / "lb2")]) == 2
    assert "is not a run folder" in capsys.readouterr().err


def test_locality_table_ranks_only_directional_columns_and_is_skipped_without_values(evaluated_runs, tmp_path):
    runs = load_runs(list(evaluated_runs.values()))
    board = build_leaderboard(runs, "locality", reported=[])
    noisy = next(r for r in board.rows if r.label == "noisy-edit")
    outside = metric(evaluated_runs["tests.helpers.fake_models:NoisyEditModel"], "change_outside_lesion")
    assert noisy.cells["outside"].value == pytest.approx(outside["value"])
    identity = next(r for r in board.rows if r.label == "identity")
    # identity changes nothing: 0, degenerate (never bolded), and the noisy edit is the best real edit
    assert identity.cells["outside"].degenerate and not identity.cells["outside"].bold and noisy.cells["outside"].bold
    assert "outside" in to_csv(board).splitlines()[2 if board.rows[1] is identity else 1].split(",")[-3]
    assert not any(row.cells["inside"].bold or row.cells["mae_target"].bold for row in board.rows)
    assert "| Change inside lesion |" in to_markdown(board)

    write_leaderboard(list(evaluated_runs.values()), tmp_path / "with", plots=False, gallery=False)
    assert (tmp_path / "with" / "locality.md").is_file()
    # runs without any locality measure (real data scored without pseudo masks) get no locality table
    for run in evaluated_runs.values():
        data = json.loads((run / "metrics.json").read_text())
        for name in ("change_outside_lesion", "change_inside_lesion", "mae_to_true_counterfactual", "mae_to_target",
                     "guidance_auroc"):
            data["metrics"].pop(name, None)
        copy_dir = tmp_path / "stripped" / run.name
        copy_dir.mkdir(parents=True)
        for item in run.iterdir():
            if item.is_file():
                (copy_dir / item.name).write_bytes(item.read_bytes())
        (copy_dir / "metrics.json").write_text(json.dumps(data))
    write_leaderboard(sorted((tmp_path / "stripped").iterdir()), tmp_path / "without", plots=False, gallery=False)
    assert not (tmp_path / "without" / "locality.md").exists() and (tmp_path / "without" / "instructx2x.md").is_file()


def test_latex_escapes_superscripts_and_marks_oracle_rows(evaluated_runs):
    from cfbench.leaderboard.formats import latex_escape

    assert latex_escape("ProgEmu^2 (cascade)") == r"ProgEmu$^{2}$ (cascade)"
    assert latex_escape("a^b & 50% #1_x ~") == r"a\textasciicircum{}b \& 50\% \#1\_x \textasciitilde{}"
    runs = load_runs(list(evaluated_runs.values()))
    latex = to_latex(build_leaderboard(runs, "progemu"))
    assert r"ProgEmu$^{2}$ (cascade)" in latex and "textasciicircum" not in latex
    board = to_latex(build_leaderboard(runs, "instructx2x", reported=[]))
    assert r"ground-truth$^\ddagger$" in board and r"$^\ddagger$oracle row" in board
    # one name for oracle rows in every format
    csv_kinds = set(pd.read_csv(io.StringIO(to_csv(build_leaderboard(runs, "locality", reported=[]))))["kind"])
    assert "oracle" in csv_kinds and "reference" not in csv_kinds
    assert "| oracle |" in to_markdown(build_leaderboard(runs, "locality", reported=[]))


def test_gallery_title_is_not_doubled(evaluated_runs, tmp_path):
    write_leaderboard(list(evaluated_runs.values()), tmp_path / "lb", plots=False, gallery_samples=2)
    page = (tmp_path / "lb" / "gallery" / "index.html").read_text()
    assert "<h1>Gallery · cfbench leaderboard lb</h1>" in page and "lb: gallery" not in page


def test_reported_rows_only_beside_runs_on_the_dataset_they_were_measured_on(evaluated_runs, tmp_path):
    from cfbench.leaderboard.write import reported_tables_for

    runs = load_runs(list(evaluated_runs.values()))
    assert reported_tables_for(runs) == []  # phantom runs: no MIMIC rows unless asked
    assert main(["leaderboard", *map(str, evaluated_runs.values()), "--out", str(tmp_path / "auto"), "--no-plots",
                 "--no-gallery"]) == 0
    assert "reported" not in set(pd.read_csv(tmp_path / "auto" / "instructx2x.csv")["kind"])
    assert main(["leaderboard", *map(str, evaluated_runs.values()), "--out", str(tmp_path / "all"), "--no-plots",
                 "--no-gallery", "--all-reported"]) == 0
    assert "reported" in set(pd.read_csv(tmp_path / "all" / "instructx2x.csv")["kind"])
    runs[0].metrics["dataset"]["kind"] = "mimic-edit-instruction"
    assert [table.key for table in reported_tables_for(runs)] == ["instructx2x-v1-table1", "instructx2x-v2-table2"]


TEX_ENGINE = shutil.which("pdflatex")


@pytest.mark.skipif(TEX_ENGINE is None, reason="no TeX engine (pdflatex) installed; Debian: apt-get install "
                    "texlive-latex-base texlive-latex-recommended")
def test_latex_tables_compile_and_fit_a_two_column_paper(evaluated_runs, tmp_path):
    """Every .tex the leaderboard writes compiles, the full-width tables within the text width and the narrow
    ones within one column of a two-column paper (IEEE-like: 7.2 in text, 3.47 in columns), no overfull box."""
    import subprocess

    out = tmp_path / "board"
    write_leaderboard(list(evaluated_runs.values()), out, plots=False, gallery=False, include_reported=True)
    tables = sorted(out.glob("*.tex"))
    assert {p.name for p in tables} >= {"instructx2x.tex", "instructx2x-narrow.tex", "progemu-narrow.tex"}
    for table in tables:
        document = tmp_path / f"paper-{table.stem}.tex"
        document.write_text("\\documentclass[twocolumn]{article}\n\\usepackage[T1]{fontenc}\n"
                            "\\usepackage{booktabs}\n\\usepackage{array}\n"
                            "\\usepackage[margin=0.65in,columnsep=0.25in]{geometry}\n"
                            f"\\begin{{document}}\n\\input{{{table}}}\nSome text.\n\\end{{document}}\n")
        result = subprocess.run([TEX_ENGINE, "-interaction=nonstopmode", "-halt-on-error", document.name],
                                cwd=tmp_path, capture_output=True, text=True, timeout=120)
        log = (tmp_path / f"paper-{table.stem}.log").read_text(errors="replace")
        assert result.returncode == 0, f"{table.name} does not compile:\n{result.stdout[-2000:]}"
        assert "Overfull \\hbox" not in log, f"{table.name} is wider than its space"
        environment = "table" if table.stem.endswith("-narrow") else "table*"
        assert f"\\begin{{{environment}}}" in table.read_text()


def test_summary_is_ranked_by_the_score_and_a_clipped_cmig_is_flagged(evaluated_runs):
    runs = load_runs(list(evaluated_runs.values()))
    template = next(r for r in runs if r.label == "noisy-edit").metrics
    low = summary("low", {"cfbench_score": 40.0, "cmig": 0.0}, template)
    low.metrics["components"]["cmig"] = {**low.metrics["components"]["cmig"], "value": 0.0,
                                         "clipped": {"age_pearson": -0.2}}
    high = summary("high", {"cfbench_score": 70.0, "cmig": 50.0}, template)
    board = build_leaderboard([low, high], "summary", reported=[])
    assert [(row.rank, row.label) for row in board.rows] == [(1, "high"), (2, "low")]
    table = pd.read_csv(io.StringIO(to_csv(board)))
    assert list(table["rank"]) == [1, 2] and list(table["model"]) == ["high", "low"]
    papers = build_leaderboard([low, high], "instructx2x", reported=[])
    cell = next(r for r in papers.rows if r.label == "low").cells["cmig"]
    assert cell.text == "0.00 (clipped)" and not cell.bold
    markdown = to_markdown(papers)
    assert "CMIG (clipped): 0 only because a negative term" in markdown
    assert "blind spots found by `cfbench validate`" in markdown and "Race: saturates" in markdown
    assert "The papers' protocol (InstructX2X)" in markdown
