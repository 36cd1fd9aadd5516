"""A dataset card for a built edit dataset: Table-1 statistics and how the build got there.

:func:`dataset_statistics` computes, per split, the samples, patients, operations by type, age
(mean and SD, years), sex and race counts from ``instructions.csv``; :func:`write_dataset_card` writes
them with the build funnel (pairs dropped at each step, by reason), the registration quality (Mattes MI
quantiles) and the phrases the instruction rules did not recognise, as ``DATASET_CARD.md`` and
``dataset_stats.json``.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from cfbench.core.storage import atomic_write_json, atomic_write_text
from cfbench.datasets.edit_dataset import CSV_NAME, SPLITS
from cfbench.datasets.registration import CALIBRATED_MI_THRESHOLD, MI_THRESHOLD

OPERATION_TYPES = ("add", "remove", "change")


def dataset_statistics(table: pd.DataFrame) -> dict:
    """Per split (in the canonical split order) and in total: samples, patients, operations by type,
    operations by finding, age mean/SD, sex and race counts."""
    order = [split for split in SPLITS if split in set(table["split"])]
    stats = {split: _group_statistics(table[table["split"] == split]) for split in order}
    stats["total"] = _group_statistics(table)
    return stats


def _group_statistics(rows: pd.DataFrame) -> dict:
    operations = [op for text in rows.get("operations", pd.Series(dtype=str)).dropna() for op in json.loads(text)]
    by_type = Counter(op["op"] for op in operations)
    ages = pd.to_numeric(rows["age"], errors="coerce").dropna() if "age" in rows else pd.Series(dtype=float)
    return {
        "samples": int(len(rows)),
        "patients": int(rows["subject_id"].nunique()) if "subject_id" in rows else None,
        "operations": int(len(operations)),
        **{f"operations_{kind}": int(by_type.get(kind, 0)) for kind in OPERATION_TYPES},
        "operations_by_finding": dict(Counter(op["finding"] for op in operations).most_common()),
        "age_mean": float(ages.mean()) if len(ages) else None,
        "age_sd": float(ages.std(ddof=1)) if len(ages) > 1 else None,
        "sex": _counts(rows, "sex"),
        "race": _counts(rows, "race"),
    }


def _counts(rows: pd.DataFrame, column: str) -> dict[str, int]:
    if column not in rows:
        return {}
    return {str(k): int(v) for k, v in rows[column].dropna().value_counts().sort_index().items()}


def _fmt(value) -> str:
    if value is None:
        return "–"
    return f"{value:.1f}" if isinstance(value, float) else str(value)


def table_one(stats: dict) -> str:
    """The Table-1 style Markdown table: one column per split plus the total."""
    columns = list(stats)
    lines = ["| | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    rows = [("samples", "samples"), ("patients", "patients"), ("operations", "operations")]
    rows += [(f"– {kind}", f"operations_{kind}") for kind in OPERATION_TYPES]
    for label, key in rows:
        lines.append(f"| {label} | " + " | ".join(_fmt(stats[c][key]) for c in columns) + " |")
    lines.append("| age, mean ± SD (years) | " + " | ".join(
        "–" if stats[c]["age_mean"] is None else f"{stats[c]['age_mean']:.1f} ± {_fmt(stats[c]['age_sd'])}"
        for c in columns) + " |")
    for attribute in ("sex", "race"):
        values = sorted({value for c in columns for value in stats[c][attribute]})
        for value in values:
            lines.append(f"| {attribute}: {value} | " + " | ".join(
                str(stats[c][attribute].get(value, 0)) for c in columns) + " |")
    return "\n".join(lines)


def _mi_section(outcomes: dict, threshold: float | None) -> list[str]:
    values = np.array([o.mutual_information for o in outcomes.values() if o.mutual_information is not None])
    if not len(values):
        return []
    quantiles = np.quantile(values, [0.0, 0.05, 0.5, 0.95, 1.0])
    lines = ["## Registration quality", "",
             f"Mattes mutual information of {len(values)} registered pairs (lower is better aligned): "
             + ", ".join(f"{name} {q:.3f}" for name, q in zip(("min", "5 %", "median", "95 %", "max"), quantiles))
             + "."]
    if threshold is not None:
        lines.append(f"Pairs with MI > {threshold} are discarded: {int((values > threshold).sum())} of {len(values)}.")
    calibrated = int((values > CALIBRATED_MI_THRESHOLD).sum())
    lines += ["", f"Calibration: with cfbench's registration settings two *different* patients still reach about "
              f"-0.9 after registration, so the paper's {MI_THRESHOLD} does not reject them by itself; "
              f"{CALIBRATED_MI_THRESHOLD} separates them from same-patient pairs (see `cfbench/datasets/registration.py`). "
              f"At {CALIBRATED_MI_THRESHOLD}, {calibrated} of these {len(values)} pairs would be discarded.", ""]
    return lines


def write_dataset_card(out: str | Path, title: str, info: dict, registration_outcomes: dict | None = None) -> Path:
    """Write ``DATASET_CARD.md`` and ``dataset_stats.json`` into the dataset folder ``out``."""
    out = Path(out)
    table = pd.read_csv(out / CSV_NAME, dtype=str, keep_default_na=False, na_values=[""])
    stats = dataset_statistics(table) if len(table) else {}
    atomic_write_json(out / "dataset_stats.json", stats)
    lines = [f"# {title}", "", f"Built by cfbench ({info.get('kind', 'edit dataset')}); "
             f"images {info.get('resolution', info.get('size', '?'))} px, registered: {info.get('registered')}.", ""]
    if stats:
        lines += ["## Samples (Table 1)", "", table_one(stats), ""]
        findings = stats["total"]["operations_by_finding"]
        lines += ["## Operations by finding", "", "| finding | operations |", "|---|---|"]
        lines += [f"| {finding} | {count} |" for finding, count in findings.items()] + [""]
    funnel = info.get("funnel", {})
    if funnel:
        lines += ["## Build funnel", "", "| step | pairs |", "|---|---|"]
        lines += [f"| {step} | {count} |" for step, count in funnel.items()] + [""]
    if registration_outcomes:
        lines += _mi_section(registration_outcomes, info.get("mi_threshold"))
    for key, heading in (("unknown_phrases", "Phrases outside the vocabulary"),
                         ("unparsed_sentences", "Answer sentences outside the grammar"),
                         ("ambiguous_level_splits", "Ambiguous level changes (\"A to B to C\"): the reading taken, "
                                                    "and the other possible ones"),
                         ("failed", "Pairs that failed (missing or unreadable images)")):
        items = info.get(key)
        if items:
            lines += [f"## {heading}", ""]
            entries = list(items.items() if isinstance(items, dict) else ((item, None) for item in items))
            lines += [f"- {item}" + (f" ({count})" if count is not None else "") for item, count in entries[:50]]
            if len(entries) > 50:
                lines.append(f"- ... and {len(entries) - 50} more (all in dataset.json)")
            lines.append("")
    path = out / "DATASET_CARD.md"
    atomic_write_text(path, "\n".join(lines))
    return path
