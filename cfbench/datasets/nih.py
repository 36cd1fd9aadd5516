"""The public variant: edit pairs from NIH ChestX-ray14, which anyone can download.

Consecutive PA images of a patient (ordered by ``Follow-up #``, never by file name) whose label sets
differ become samples: findings that appear are "add" operations, findings that disappear "remove".
The metadata (``Data_Entry_2017_v2020.csv.gz``) ships inside the torchxrayvision wheel; the images come
from the NIH release (``images/*.png``, 1024 px). NIH has age and sex but no race, so the retention
terms for this variant are age and sex. Splits are patient-wise, by a hash of the patient id.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from cfbench.core.findings import CHEXPERT_COLUMNS, Operation, render_instruction
from cfbench.datasets.edit_dataset import Sample
from cfbench.datasets.pair_engine import PairJob, PairSettings, process_pairs, write_dataset
from cfbench.datasets.pseudo_masks import torchxrayvision_data_file

DATA_ENTRY_COLUMNS = ("Image Index", "Finding Labels", "Follow-up #", "Patient ID", "Patient Age",
                      "Patient Gender", "View Position")
# NIH label -> finding as instructions spell it
NIH_FINDINGS: dict[str, str] = {
    "Atelectasis": "atelectasis", "Cardiomegaly": "cardiomegaly", "Consolidation": "consolidation",
    "Edema": "edema", "Effusion": "pleural effusion", "Emphysema": "emphysema", "Fibrosis": "fibrosis",
    "Hernia": "hernia", "Infiltration": "infiltration", "Mass": "mass", "Nodule": "nodule",
    "Pleural_Thickening": "pleural thickening", "Pneumonia": "pneumonia", "Pneumothorax": "pneumothorax",
}
# NIH label -> CheXpert column of the label files (the ones with a counterpart)
NIH_TO_CHEXPERT: dict[str, str] = {"Atelectasis": "Atelectasis", "Cardiomegaly": "Cardiomegaly",
                                   "Consolidation": "Consolidation", "Edema": "Edema", "Effusion": "Pleural Effusion",
                                   "Pneumonia": "Pneumonia", "Pneumothorax": "Pneumothorax"}
SPLIT_PERCENT = (("holdout", 10), ("test", 5), ("val", 5), ("train", 80))


@dataclass(frozen=True)
class NIHPair:
    patient_id: str
    past: str       # Image Index of the earlier image
    current: str
    past_labels: frozenset[str]
    current_labels: frozenset[str]
    age: float      # at the current image
    sex: str        # M / F


def labels_of(text: str) -> frozenset[str]:
    return frozenset(label for label in text.split("|") if label and label != "No Finding")


def patient_split(patient_id: str) -> str:
    bucket = int(hashlib.sha256(f"nih-{patient_id}".encode()).hexdigest(), 16) % 100
    for name, percent in SPLIT_PERCENT:
        if bucket < percent:
            return name
        bucket -= percent
    return "train"


def consecutive_pairs(entries: pd.DataFrame) -> list[NIHPair]:
    """Consecutive PA images of each patient with different label sets, ordered by Follow-up #."""
    missing = [c for c in DATA_ENTRY_COLUMNS if c not in entries.columns]
    if missing:
        raise ValueError(f"NIH Data_Entry table is missing column(s) {missing}")
    pa = entries[entries["View Position"] == "PA"].copy()
    pa["follow_up"] = pd.to_numeric(pa["Follow-up #"])
    pairs = []
    for patient, images in pa.sort_values(["Patient ID", "follow_up"]).groupby("Patient ID", sort=True):
        rows = images.to_dict("records")
        for before, after in zip(rows, rows[1:]):
            past_labels, current_labels = labels_of(before["Finding Labels"]), labels_of(after["Finding Labels"])
            if past_labels != current_labels:
                pairs.append(NIHPair(str(patient), before["Image Index"], after["Image Index"], past_labels,
                                     current_labels, float(after["Patient Age"]), after["Patient Gender"]))
    return pairs


def pair_operations(pair: NIHPair) -> list[Operation]:
    """Removes, then adds, each in alphabetical order of the NIH label."""
    removed = sorted(pair.past_labels - pair.current_labels)
    added = sorted(pair.current_labels - pair.past_labels)
    return ([Operation("remove", NIH_FINDINGS.get(label, label.lower())) for label in removed]
            + [Operation("add", NIH_FINDINGS.get(label, label.lower())) for label in added])


def _chexpert_labels(labels: frozenset[str]) -> dict[str, float]:
    present = {NIH_TO_CHEXPERT[label] for label in labels if label in NIH_TO_CHEXPERT}
    return {column: (1.0 if column in present else 0.0) for column in CHEXPERT_COLUMNS
            if column in NIH_TO_CHEXPERT.values()}


def pair_sample(pair: NIHPair, row: int) -> Sample:
    operations = pair_operations(pair)
    past_id, current_id = Path(pair.past).stem, Path(pair.current).stem
    return Sample(sample_id=f"{past_id}_{current_id}", split=patient_split(pair.patient_id),
                  instruction=render_instruction(operations), operations=operations, past_dicom_id=past_id,
                  current_dicom_id=current_id, row=row, subject_id=pair.patient_id,
                  labels=_chexpert_labels(pair.current_labels), past_labels=_chexpert_labels(pair.past_labels),
                  age=pair.age, sex=pair.sex)


def build_nih_dataset(images_dir: str | Path, out: str | Path, data_entry: str | Path | None = None,
                      settings: PairSettings = PairSettings(), workers: int = 1, limit: int | None = None,
                      progress: bool = True) -> dict:
    """Write the NIH edit dataset (parallel over ``workers`` processes, resumable); returns the build info.
    A missing or unreadable image is logged with its path and the build goes on."""
    images_dir = Path(images_dir)
    data_entry = Path(data_entry) if data_entry else torchxrayvision_data_file("Data_Entry_2017_v2020.csv.gz")
    pairs = consecutive_pairs(pd.read_csv(data_entry, dtype={"Patient ID": str}))
    funnel = {"consecutive PA pairs with different labels": len(pairs)}
    if limit:
        funnel["left out by --limit"] = max(0, len(pairs) - limit)
        pairs = pairs[:limit]
    samples = [pair_sample(pair, index + 1) for index, pair in enumerate(pairs)]
    jobs = [PairJob(sample.sample_id, str(images_dir / pair.past), str(images_dir / pair.current),
                    sample.past_dicom_id, sample.current_dicom_id) for pair, sample in zip(pairs, samples)]
    outcomes = process_pairs(jobs, out, settings, workers=workers, progress=progress)
    info = {"kind": "nih-chestxray14", "data_entry": str(data_entry), "images": str(images_dir), "funnel": funnel}
    return write_dataset(out, samples, outcomes, settings, info, "NIH ChestX-ray14 edit pairs (public variant)")
