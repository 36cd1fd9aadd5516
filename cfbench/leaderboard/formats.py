"""Leaderboard table model -> Markdown, CSV and LaTeX (booktabs) text.

All three show the same rows in the same order: measured rows (run id in the Source column, bootstrap
interval in brackets after the value), then the papers' reported rows (values as printed, source = paper
and table; never bolded against measured rows unless the leaderboard was built with bold_reported).
Bold = the best value per column (see :mod:`cfbench.leaderboard.table_model`).
"""

from __future__ import annotations

import csv
import io
import re

from cfbench.core.safe_text import csv_text, markdown_text
from cfbench.leaderboard.table_model import MEASURED, REFERENCE, REPORTED, Cell, Column, Leaderboard, Row, format_value

KIND_TITLES = {MEASURED: "measured", REFERENCE: "oracle", REPORTED: "reported"}  # the CSV's kind column too


def _interval(cell: Cell, column: Column) -> str:
    if cell.ci_low is None or cell.ci_high is None:
        return ""
    return f"[{format_value(cell.ci_low, column.decimals)}, {format_value(cell.ci_high, column.decimals)}]"


def bold_rule(board: Leaderboard) -> str:
    if not board.measured_rows():
        among = "the paper's generated rows (cfbench's rule; the paper's own bolding may differ)"
    elif board.bold_reported:
        among = "measured rows and the reported generated rows (different test sets: use with care)"
    else:
        among = "measured rows; reported rows are never bolded against measured ones"
    return (f"Bold: best value per column (↑ higher is better, ↓ lower is better; columns without an arrow are "
            f"descriptive and not ranked) among {among}; oracle rows "
            "(ground truth, true counterfactual, the papers' real images) are not bolded, and a column is bolded "
            "only when at least two candidate rows have a value.")


def _level_text(board: Leaderboard) -> str:
    level = board.confidence_level
    return f"{round(100 * level)}%" if level else ""


def notes(board: Leaderboard) -> list[str]:
    """The table's footnotes: bold rule, intervals, scales, and each reported table's citation."""
    lines = [bold_rule(board)]
    if board.measured_rows():
        lines.append(f"Brackets: {_level_text(board)} percentile bootstrap interval over samples (FID: over "
                     "fewer resamples, shifted down by the bootstrap bias estimate, see metrics.json). Source of a measured row: run folder name @ first 8 hex digits of the SHA-256 of its config.")
    if any(row.kind == REFERENCE for row in board.rows):
        lines.append("Oracle: measured rows of the reference models (ground-truth = the real target image, "
                     "true-counterfactual = the exact answer on phantoms); they bound the scale and are never bolded.")
    lines += list(board.layout.notes)
    lines += list(board.protocol_notes)
    if board.small_n_rows:
        from cfbench.evaluation.protocol import SMALL_N

        rows = ", ".join(f"{label} (n={n})" for label, n in board.small_n_rows)
        lines.append(f"Small n: {rows} computed on fewer than {SMALL_N} samples: intervals are wide and values "
                     "unstable (FID especially, which is biased upwards at small n).")
    for table in board.reported_tables:
        lines.append(f"Reported ({table.short}): {table.citation}, {table.table}: \"{table.caption}\" "
                     f"Test set: {table.test_set}. Values as printed in the paper; not measured by cfbench.")
    return lines


# ---------------------------------------------------------------- Markdown

def _md_cell(cell: Cell, column: Column) -> str:
    text = f"**{cell.text}**" if cell.bold else cell.text
    interval = _interval(cell, column)
    return f"{text} {interval}" if interval else text


def to_markdown(board: Leaderboard, heading_level: int = 3) -> str:
    columns = board.layout.columns
    header = ["Model", "Kind", "Source", "n"] + [f"{board.title(c)} {c.arrow}".strip() for c in columns]
    lines = [f"{'#' * heading_level} {board.layout.title}", "",
             "| " + " | ".join(header) + " |",
             "|---|---|---|---:|" + "---:|" * len(columns)]
    for row in board.rows:
        label = f"*{markdown_text(row.label)}*" if row.kind == REPORTED else markdown_text(row.label)
        source = f"`{markdown_text(row.source)}`" if row.kind != REPORTED else markdown_text(row.source)
        cells = [_md_cell(row.cells[c.key], c) for c in columns]
        lines.append("| " + " | ".join([label, KIND_TITLES[row.kind], source, "" if row.n is None else str(row.n)]
                                       + cells) + " |")
    lines.append("")
    lines += [f"- {markdown_text(note, table_cell=False)}" for note in notes(board)]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- CSV

def to_csv(board: Leaderboard) -> str:
    """Wide CSV: one row per table row; per column <key>, <key>_ci_low, <key>_ci_high (layout scale).

    Measured values at full precision, reported values as printed; ``best`` lists the bolded keys."""
    columns = board.layout.columns
    fields = ["model", "kind", "source", "n"]
    for column in columns:
        fields += [column.key, f"{column.key}_ci_low", f"{column.key}_ci_high"]
    fields += ["best", "run_dir", "citation"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in board.rows:
        record: dict = {"model": csv_text(row.label), "kind": row.kind, "source": csv_text(row.source),
                        "n": "" if row.n is None else row.n, "run_dir": csv_text(row.run_dir),
                        "citation": csv_text(row.citation)}
        for column in columns:
            cell = row.cells[column.key]
            if row.kind == REPORTED:
                record[column.key] = "" if cell.value is None else cell.text
            else:
                record[column.key] = "" if cell.value is None else repr(cell.value)
            record[f"{column.key}_ci_low"] = "" if cell.ci_low is None else repr(cell.ci_low)
            record[f"{column.key}_ci_high"] = "" if cell.ci_high is None else repr(cell.ci_high)
        record["best"] = ";".join(c.key for c in columns if row.cells[c.key].bold)
        writer.writerow(record)
    return buffer.getvalue()


# ---------------------------------------------------------------- LaTeX

_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                  "<": r"\textless{}", ">": r"\textgreater{}", "–": "--", "↑": r"$\uparrow$", "↓": r"$\downarrow$"}


def latex_escape(text: str) -> str:
    """Plain text -> LaTeX; "^" followed by digits is a superscript ("ProgEmu^2" -> ProgEmu$^{2}$)."""
    parts = re.split(r"\^(\d+)", text)
    out = []
    for index, part in enumerate(parts):
        out.append(rf"$^{{{part}}}$" if index % 2 else "".join(_LATEX_ESCAPES.get(char, char) for char in part))
    return "".join(out)


def _latex_cell(cell: Cell, column: Column) -> str:
    text = latex_escape(cell.text)
    if cell.bold:
        text = rf"\textbf{{{text}}}"
    interval = _interval(cell, column)
    return rf"{text}\,{{\scriptsize {interval}}}" if interval else text


def _latex_row(row: Row, columns: tuple[Column, ...]) -> str:
    label = latex_escape(row.label)
    if row.kind == REPORTED:
        label = rf"\textit{{{label}}}$^\dagger$"
    elif row.kind == REFERENCE:
        label = rf"{label}$^\ddagger$"
    source = "" if row.kind == REPORTED else rf"{{\scriptsize\texttt{{{latex_escape(row.source)}}}}}"
    return " & ".join([label, source] + [_latex_cell(row.cells[c.key], c) for c in columns]) + r" \\"


def _group_header(columns: tuple[Column, ...]) -> tuple[str, str]:
    """The spanning header line (e.g. CMIG over Patho..CMIG) and its cmidrules; column offset 2."""
    spans, start = [], 0
    while start < len(columns):
        end = start
        while end + 1 < len(columns) and columns[end + 1].group == columns[start].group:
            end += 1
        spans.append((columns[start].group, start, end))
        start = end + 1
    cells, rules = [], []
    for group, first, last in spans:
        width = last - first + 1
        if group and width > 1:
            cells.append(rf"\multicolumn{{{width}}}{{c}}{{{latex_escape(group)}}}")
            rules.append(rf"\cmidrule(lr){{{first + 3}-{last + 3}}}")
        else:
            cells += [""] * width
    return " & ".join(["", ""] + cells) + r" \\", " ".join(rules)


def to_latex(board: Leaderboard, label: str | None = None) -> str:
    """A booktabs table (needs \\usepackage{booktabs}); reported rows in their own block, marked with a dagger."""
    columns = board.layout.columns
    lines = ["% generated by `cfbench leaderboard`; needs \\usepackage{booktabs}",
             r"\begin{table}[t]", r"\centering", r"\scriptsize" if len(columns) > 6 else r"\small",
             rf"\caption{{{latex_escape(board.layout.title)}. {latex_escape(bold_rule(board))}}}",
             rf"\label{{{label or 'tab:cfbench-' + board.layout.name}}}",
             r"\begin{tabular}{ll" + "c" * len(columns) + "}", r"\toprule"]
    group_line, rules = _group_header(columns)
    if rules:
        lines += [group_line, rules]
    lines.append(" & ".join(["Model", "Source"] + [latex_escape(f"{board.title(c)} {c.arrow}".strip()) for c in columns]) + r" \\")
    lines.append(r"\midrule")
    measured = board.measured_rows()
    lines += [_latex_row(row, columns) for row in measured]
    for table in board.reported_tables:
        if measured or table is not board.reported_tables[0]:
            lines.append(r"\midrule")
        heading = latex_escape(f"Reported in {table.short} ({table.test_set}); not measured by cfbench")
        lines.append(rf"\multicolumn{{{len(columns) + 2}}}{{l}}{{\textit{{{heading}}}}} \\")
        lines += [_latex_row(row, columns) for row in board.reported_rows() if row.source == table.short]
    lines += [r"\bottomrule", r"\end{tabular}"]
    footnotes = [note for note in notes(board) if not note.startswith("Bold:")]
    markers = (r" $^\ddagger$oracle row (measured, never bolded)." if any(r.kind == REFERENCE for r in board.rows)
               else "") + (r" $^\dagger$reported value." if board.reported_tables else "")
    lines.append(r"\par\smallskip\parbox{\linewidth}{\tiny " + latex_escape(" ".join(footnotes)) + markers + "}")
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"
