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
from cfbench.leaderboard.table_model import (
    BLIND_SPOTS,
    CLIPPED_MARK,
    MEASURED,
    NO_EDIT_CHANGE,
    REFERENCE,
    REPORTED,
    SETTING_NAMES,
    Cell,
    Column,
    Leaderboard,
    Row,
    format_value,
)

DEGENERATE_MARK = "°"

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
    return (f"Bold: the best value of a column (↑ higher is better, ↓ lower is better; columns without an arrow "
            "are descriptive and not ranked), only where it is significantly better than the runner-up (paired "
            "bootstrap over the samples both runs share, as `cfbench compare`); "
            f"{TIE_MARK} marks a best and runner-up that are not (or are equal as shown). Candidates: {among}. Oracle rows "
            "(ground truth, true counterfactual, the papers' real images) are not bolded, nor are cells marked "
            f"degenerate ({DEGENERATE_MARK}), and a column is bolded only when at least two candidate rows have a value.")


TIE_MARK = "≈"


def tie_notes(board: Leaderboard) -> list[str]:
    """One line per column whose best is not bolded, saying why (the paired interval, or what was missing)."""
    lines = []
    titles = {column.key: board.title(column) for column in board.layout.columns}
    for key, verdict in board.verdicts.items():
        if verdict.best is None or verdict.significant:
            continue
        if verdict.difference is not None:
            value, low, high = verdict.difference
            scale = next(c.scale for c in board.layout.columns if c.key == key)
            decimals = next(c.decimals for c in board.layout.columns if c.key == key)
            detail = (f"{verdict.best} - {verdict.runner_up} = {format_value(value * scale, decimals)} "
                      f"[{format_value(low * scale, decimals)}, {format_value(high * scale, decimals)}]")
        else:
            detail = verdict.reason
        lines.append(f"{titles[key]}: {TIE_MARK} {verdict.best} vs {verdict.runner_up}, no bold ({detail}).")
    return lines


def _level_text(board: Leaderboard) -> str:
    level = board.confidence_level
    return f"{round(100 * level)}%" if level else ""


def notes(board: Leaderboard) -> list[str]:
    """The table's footnotes: bold rule, intervals, scales, and each reported table's citation."""
    lines = [bold_rule(board), *tie_notes(board)]
    if board.varying_settings:
        lines.append("Settings differ between the runs: " + "; ".join(
            f"{name}: " + ", ".join(f"{row.label} {row.settings.get(name, '?')}" for row in board.measured_rows())
            for name in board.varying_settings) + ". Compare such rows with care.")
    if board.measured_rows():
        lines.append(f"Brackets: {_level_text(board)} percentile bootstrap interval over samples (FID: over "
                     "fewer resamples, shifted down by the bootstrap bias estimate, see metrics.json). Source of a measured row: run folder name @ first 8 hex digits of the SHA-256 of its config.")
    if any(row.kind == REFERENCE for row in board.rows):
        lines.append("Oracle: measured rows of the reference models (ground-truth = the real target image, "
                     "true-counterfactual = the exact answer on phantoms); they bound the scale and are never bolded.")
    lines += list(board.layout.notes)
    lines += degenerate_and_blind_spot_notes(board)
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


def degenerate_and_blind_spot_notes(board: Leaderboard) -> list[str]:
    """The degenerate-cell footnote (when a cell is marked) and, on a paper's table, each column's blind spots
    as the validity suite found them."""
    lines = []
    if any(cell.degenerate for row in board.rows for cell in row.cells.values()):
        lines.append(f"{DEGENERATE_MARK} degenerate for this column: the run makes no edit (mean change inside the "
                     f"edit region < {NO_EDIT_CHANGE}), so its preservation, minimality or realism is trivially good; "
                     "shown, never bolded.")
    if any(cell.text.endswith(CLIPPED_MARK) for row in board.rows for cell in row.cells.values()):
        lines.append("CMIG (clipped): 0 only because a negative term (e.g. age r < 0) was clipped to 0; the terms' "
                     "values before clipping are in metrics.json (components.cmig.clipped).")
    if board.layout.papers_protocol:
        spots = [f"{board.title(c)}: {BLIND_SPOTS[c.metric]}" for c in board.layout.columns if c.metric in BLIND_SPOTS]
        if spots:
            lines.append("The papers' protocol, measured exactly; blind spots found by `cfbench validate` on phantoms "
                         "(validity.md): " + "; ".join(spots) + ". The cfbench summary table ranks by cfbench_score.")
    return lines


# ---------------------------------------------------------------- Markdown

def _md_cell(cell: Cell, column: Column) -> str:
    text = f"**{cell.text}**" if cell.bold else f"{cell.text} {TIE_MARK}" if cell.tie else cell.text
    if cell.degenerate:
        text += DEGENERATE_MARK
    interval = _interval(cell, column)
    return f"{text} {interval}" if interval else text


def to_markdown(board: Leaderboard, heading_level: int = 3) -> str:
    columns = board.layout.columns
    ranked = board.layout.ranked_by is not None
    settings = board.varying_settings  # shown only where the runs differ in them
    header = ((["Rank"] if ranked else []) + ["Model", "Kind", "Source", "n"] + settings
              + [f"{board.title(c)} {c.arrow}".strip() for c in columns])
    lines = [f"{'#' * heading_level} {board.layout.title}", "",
             "| " + " | ".join(header) + " |",
             ("|---:" if ranked else "") + "|---|---|---|---:|" + "---|" * len(settings) + "---:|" * len(columns)]
    for row in board.rows:
        label = f"*{markdown_text(row.label)}*" if row.kind == REPORTED else markdown_text(row.label)
        source = f"`{markdown_text(row.source)}`" if row.kind != REPORTED else markdown_text(row.source)
        cells = [_md_cell(row.cells[c.key], c) for c in columns]
        rank = ["" if row.rank is None else str(row.rank)] if ranked else []
        lines.append("| " + " | ".join(rank + [label, KIND_TITLES[row.kind], source, "" if row.n is None else str(row.n)]
                                       + [row.settings.get(name, "") for name in settings] + cells) + " |")
    lines.append("")
    lines += [f"- {markdown_text(note, table_cell=False)}" for note in notes(board)]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- CSV

def to_csv(board: Leaderboard) -> str:
    """Wide CSV: one row per table row; per column <key>, <key>_ci_low, <key>_ci_high (layout scale).

    Measured values at full precision, reported values as printed; ``best`` lists the bolded keys."""
    columns = board.layout.columns
    ranked = board.layout.ranked_by is not None
    fields = (["rank"] if ranked else []) + ["model", "kind", "source", "n", *SETTING_NAMES]
    for column in columns:
        fields += [column.key, f"{column.key}_ci_low", f"{column.key}_ci_high"]
    fields += ["best", "tie", "degenerate", "run_dir", "citation"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in board.rows:
        record: dict = {"model": csv_text(row.label), "kind": row.kind, "source": csv_text(row.source),
                        "n": "" if row.n is None else row.n, "run_dir": csv_text(row.run_dir),
                        "citation": csv_text(row.citation),
                        **{name: csv_text(row.settings.get(name, "")) for name in SETTING_NAMES}}
        for column in columns:
            cell = row.cells[column.key]
            if row.kind == REPORTED:
                record[column.key] = "" if cell.value is None else cell.text
            else:
                record[column.key] = "" if cell.value is None else repr(cell.value)
            record[f"{column.key}_ci_low"] = "" if cell.ci_low is None else repr(cell.ci_low)
            record[f"{column.key}_ci_high"] = "" if cell.ci_high is None else repr(cell.ci_high)
        record["best"] = ";".join(c.key for c in columns if row.cells[c.key].bold)
        record["tie"] = ";".join(c.key for c in columns if row.cells[c.key].tie)
        record["degenerate"] = ";".join(c.key for c in columns if row.cells[c.key].degenerate)
        if ranked:
            record["rank"] = "" if row.rank is None else row.rank
        writer.writerow(record)
    return buffer.getvalue()


# ---------------------------------------------------------------- LaTeX

_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                  "<": r"\textless{}", ">": r"\textgreater{}", "–": "--", "↑": r"$\uparrow$", "↓": r"$\downarrow$",
                  "≈": r"$\approx$", "−": "-", "°": r"$^\circ$"}


def latex_escape(text: str) -> str:
    """Plain text -> LaTeX; "^" followed by digits is a superscript ("ProgEmu^2" -> ProgEmu$^{2}$)."""
    parts = re.split(r"\^(\d+)", text)
    out = []
    for index, part in enumerate(parts):
        out.append(rf"$^{{{part}}}$" if index % 2 else "".join(_LATEX_ESCAPES.get(char, char) for char in part))
    return "".join(out)


def _latex_value(cell: Cell) -> str:
    clipped = cell.text.endswith(CLIPPED_MARK)  # a superscript, not " (clipped)": the narrow table must fit
    text = latex_escape(cell.text.removesuffix(CLIPPED_MARK)) + (r"\textsuperscript{clip}" if clipped else "")
    if cell.bold:
        text = rf"\textbf{{{text}}}"
    elif cell.tie:
        text += r"$^{\approx}$"
    return text + r"$^\circ$" if cell.degenerate else text


def _latex_label(row: Row, narrow: bool = False) -> str:
    label = latex_escape(row.label)
    if narrow:  # a long plugin name ("pkg.adapter:Model") may break after '.', ':' and '_' in the narrow column
        label = re.sub(r"(\.|:|\\_)", lambda match: match.group(1) + r"\allowbreak{}", label)
    if row.kind == REPORTED:
        return rf"\textit{{{label}}}$^\dagger$"
    return rf"{label}$^\ddagger$" if row.kind == REFERENCE else label


def _latex_row(row: Row, columns: tuple[Column, ...], narrow: bool = False) -> str:
    """One table row; in the full-width variant a measured row has a second line: its run id under the model,
    each interval under its value (so the table is as wide as its values, not values plus intervals)."""
    first = " & ".join([_latex_label(row, narrow)] + [_latex_value(row.cells[c.key]) for c in columns]) + r" \\"
    if narrow or row.kind == REPORTED:
        return first
    intervals = [_interval(row.cells[c.key], c) for c in columns]
    second = " & ".join([rf"{{\tiny\texttt{{{latex_escape(row.source)}}}}}"]
                        + [rf"{{\tiny {interval}}}" if interval else "" for interval in intervals]) + r" \\"
    return first + "\n" + second


def _stacked(text: str, width: int = 10) -> str:
    """A header on as many lines as it needs at about ``width`` characters each (LaTeX, escaped), so a long
    title does not widen its column."""
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    lines.append(line)
    if len(lines) == 1:
        return latex_escape(text)
    return r"\begin{tabular}[b]{@{}c@{}}" + r"\\".join(latex_escape(part) for part in lines) + r"\end{tabular}"


def _group_header(columns: tuple[Column, ...]) -> tuple[str, str]:
    """The spanning header line (e.g. "CMIG terms" over Patho, Race, Age) and its cmidrules; column offset 1
    (the model column)."""
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
            cells.append(rf"\multicolumn{{{width}}}{{c}}{{{_stacked(group, 7 * width)}}}")
            rules.append(rf"\cmidrule(lr){{{first + 2}-{last + 2}}}")
        else:
            cells += [""] * width
    return " & ".join([""] + cells) + r" \\", " ".join(rules)


def to_latex(board: Leaderboard, label: str | None = None, narrow: bool = False) -> str:
    """A booktabs table (needs \\usepackage{booktabs}); reported rows in their own block, marked with a dagger.

    Full width (default): a ``table*`` spanning both columns of a two-column paper, each measured row with its
    run id and intervals on a second line. ``narrow``: a one-column ``table`` of the values only (intervals
    and run ids are in the full table and the CSV), model names wrapped in a fixed-width first column."""
    columns = board.layout.columns
    environment = "table" if narrow else "table*"
    many = len(columns) > 6
    size = (r"\tiny" if (narrow and many) or len(columns) > 8 else r"\scriptsize" if narrow or many
            else r"\footnotesize")
    # raggedright, and \hspace{0pt} so that TeX may hyphenate a long first word (a model name)
    name_width = 0.11 if len(columns) > 8 else 0.2 if many else 0.24  # of \linewidth; names wrap, values do not
    separation = (0.5 if len(columns) > 8 else 1) if narrow and many else 2 if len(columns) > 8 else 3  # pt
    first_column = (rf">{{\raggedright\arraybackslash\hspace{{0pt}}}}p{{{name_width}\linewidth}}"
                    if narrow else "l")
    lines = ["% generated by `cfbench leaderboard`; needs \\usepackage{booktabs} and \\usepackage{array}",
             rf"\begin{{{environment}}}[t]", r"\centering", size,
             rf"\setlength{{\tabcolsep}}{{{separation}pt}}",
             rf"\caption{{{latex_escape(board.layout.title)}. {latex_escape(bold_rule(board))}}}",
             rf"\label{{{(label or 'tab:cfbench-' + board.layout.name) + ('-narrow' if narrow else '')}}}",
             r"\begin{tabular}{" + first_column + "r" * len(columns) + "}", r"\toprule"]
    group_line, rules = _group_header(columns)
    if rules:
        lines += [group_line, rules]
    model_title = "Model" if narrow else r"Model / {\tiny run id}"
    lines.append(" & ".join([model_title] + [_stacked(f"{board.title(c)} {c.arrow}".strip(), 6 if narrow else 16) for c in columns]) + r" \\")
    lines.append(r"\midrule")
    measured = board.measured_rows()
    lines += [_latex_row(row, columns, narrow) for row in measured]
    for table in board.reported_tables:
        if measured or table is not board.reported_tables[0]:
            lines.append(r"\midrule")
        heading = latex_escape(f"Reported in {table.short}" if narrow else
                               f"Reported in {table.short}; not measured by cfbench (test set in the notes)")
        lines.append(rf"\multicolumn{{{len(columns) + 1}}}{{l}}{{\textit{{{heading}}}}} \\")
        lines += [_latex_row(row, columns, narrow) for row in board.reported_rows() if row.source == table.short]
    lines += [r"\bottomrule", r"\end{tabular}"]
    footnotes = [note for note in notes(board) if not note.startswith("Bold:")]
    if narrow:
        footnotes = [note for note in footnotes if not note.startswith("Brackets:")]
        footnotes.insert(0, "Values only; intervals and run ids in the full-width table and the CSV.")
    markers = (r" $^\ddagger$oracle row (measured, never bolded)." if any(r.kind == REFERENCE for r in board.rows)
               else "") + (r" $^\dagger$reported value." if board.reported_tables else "")
    lines.append(r"\par\smallskip\parbox{\linewidth}{\tiny " + latex_escape(" ".join(footnotes)) + markers + "}")
    lines.append(rf"\end{{{environment}}}")
    return "\n".join(lines) + "\n"
