"""ICG-CXR (ProgEmu's dataset) converted into the MIMIC-EDIT-INSTRUCTION layout.

ICG-CXR keeps one folder per pair: a JSON file and two registered 512 px images, ``*-ref-reg.png`` (the
prior) and ``*-flu-reg.png`` (the follow-up). JSON keys used: ``progression-description`` (the prompt),
``changes-of-findings`` (the interpretation text), ``reference-report`` / ``followup-report``
(``findings``, ``impression``), ``reference-dicom-id``, ``followup-dicom-id``, ``age``, ``sex``, ``race``,
``split``, ``reference-diseases`` / ``followup-diseases`` (the 14 CheXpert labels, -100 = missing; a list
in CheXpert column order or a mapping by column name).

In our layout the progression prompt becomes both ``instruction`` and ``progression``, the interpretation
``reference_explanation`` (for BLEU-3 / METEOR / ROUGE-L), the follow-up impression ``target_report``;
operations come from the label differences (add where a finding appears, remove where it disappears).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from tqdm.auto import tqdm

from cfbench.core.findings import CHEXPERT_COLUMNS, Operation
from cfbench.core.images import ImageReadError, load_image
from cfbench.datasets.edit_dataset import DatasetWriter, Sample
from cfbench.datasets.layout import DatasetError

log = logging.getLogger(__name__)

MISSING_LABEL = -100
SPLIT_NAMES = {"train": "train", "test": "test", "val": "val", "valid": "val", "validation": "val",
               "validate": "val", "holdout": "holdout"}
COLUMN_TO_FINDING = {column: column.lower() for column in CHEXPERT_COLUMNS if column != "No Finding"}


class ICGError(ValueError):
    pass


def _labels(value, where: str) -> dict[str, float | None]:
    if isinstance(value, dict):
        raw = {column: value.get(column, MISSING_LABEL) for column in CHEXPERT_COLUMNS}
    elif isinstance(value, list) and len(value) == len(CHEXPERT_COLUMNS):
        raw = dict(zip(CHEXPERT_COLUMNS, value))
    else:
        raise ICGError(f"{where}: expected 14 CheXpert labels (list or mapping), got {value!r}")
    return {column: None if label is None or float(label) == MISSING_LABEL else float(label)
            for column, label in raw.items()}


def label_operations(past: dict[str, float | None], current: dict[str, float | None]) -> list[Operation]:
    """Removes then adds, in CheXpert column order, for findings whose label goes 1 -> 0 or 0 -> 1."""
    removes = [Operation("remove", COLUMN_TO_FINDING[c]) for c in COLUMN_TO_FINDING if past[c] == 1.0 and current[c] == 0.0]
    adds = [Operation("add", COLUMN_TO_FINDING[c]) for c in COLUMN_TO_FINDING if past[c] == 0.0 and current[c] == 1.0]
    return removes + adds


def read_pair(folder: Path, row: int) -> tuple[Sample, Path, Path]:
    """One ICG-CXR pair folder -> (sample, prior image path, follow-up image path)."""
    documents = sorted(folder.glob("*.json"))
    priors, follow_ups = sorted(folder.glob("*-ref-reg.png")), sorted(folder.glob("*-flu-reg.png"))
    if len(documents) != 1 or len(priors) != 1 or len(follow_ups) != 1:
        raise ICGError(f"{folder}: expected one .json, one *-ref-reg.png and one *-flu-reg.png")
    try:
        data = json.loads(documents[0].read_text())
        split = SPLIT_NAMES[str(data["split"]).lower()]
        past_labels = _labels(data["reference-diseases"], f"{documents[0]} reference-diseases")
        labels = _labels(data["followup-diseases"], f"{documents[0]} followup-diseases")
        progression = data["progression-description"]
        sample = Sample(
            sample_id=folder.name, split=split, instruction=progression,
            operations=label_operations(past_labels, labels),
            past_dicom_id=str(data["reference-dicom-id"]), current_dicom_id=str(data["followup-dicom-id"]),
            row=row, labels=labels, past_labels=past_labels,
            age=float(data["age"]) if data.get("age") is not None else None, sex=data.get("sex"),
            race=data.get("race"), target_report=(data.get("followup-report") or {}).get("impression"),
            progression=progression, reference_explanation=data.get("changes-of-findings"),
        )
    except (KeyError, json.JSONDecodeError) as error:
        raise ICGError(f"{documents[0]}: missing or unreadable field {error}") from error
    return sample, priors[0], follow_ups[0]


def build_icg_dataset(root: str | Path, out: str | Path, resolution: int = 512, progress: bool = True) -> dict:
    """Convert every pair folder under ``root``; a bad folder is logged with its path and skipped."""
    folders = sorted(p for p in Path(root).iterdir() if p.is_dir())
    writer = DatasetWriter(out)
    skipped: list[str] = []
    for row, folder in enumerate(tqdm(folders, desc="ICG-CXR pairs", unit="pair", disable=not progress), start=1):
        try:
            sample, prior, follow_up = read_pair(folder, row)
            writer.add(sample, load_image(prior, resolution), load_image(follow_up, resolution))
        except (ICGError, ImageReadError, DatasetError) as error:
            log.warning("skipping %s: %s", folder, error)
            skipped.append(str(error))
    info = {"kind": "icg-cxr", "resolution": resolution, "pairs": len(folders), "written": len(folders) - len(skipped),
            "failed": skipped}
    writer.close(info=info)
    return info
