"""Rules for MIMIC-CXR-JPG and MIMIC-IV files (schemas in REFERENCE.md §1), as pure table functions.

Used by the MIMIC-EDIT-INSTRUCTION builder: demographics per subject, age at a study, PA images per
study, the split of a subject, and the time order of two studies. Every function takes and returns
pandas tables with the real column names; ids are kept as strings.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

RACE_GROUPS: tuple[str, ...] = ("Asian", "Black", "White")
HOLDOUT_FOLDER = "p19"
OFFICIAL_SPLIT_TO_OURS = {"test": "test", "validate": "val", "train": "train"}


def read_csv(path: str | Path, required: tuple[str, ...]) -> pd.DataFrame:
    """Read a (possibly .gz) CSV with ids as strings; ValueError naming the file and missing columns."""
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [column for column in required if column not in table.columns]
    if missing:
        raise ValueError(f"{path} is missing column(s) {missing}; found {list(table.columns)}")
    return table


def race_group(value: str) -> str | None:
    """The three-group rule of the race-classifier papers: substring BLACK / WHITE / ASIAN, else None."""
    upper = value.upper()
    for group in ("BLACK", "WHITE", "ASIAN"):
        if group in upper:
            return group.capitalize()
    return None


def subject_race(admissions: pd.DataFrame) -> pd.Series:
    """subject_id -> Asian/Black/White from MIMIC-IV admissions (column ``race`` from v2, ``ethnicity``
    in v1.0). Subjects with more than one distinct recorded value, or a value outside the three groups
    (OTHER, UNKNOWN, HISPANIC/LATINO, ...), are left out."""
    column = "race" if "race" in admissions.columns else "ethnicity"
    if column not in admissions.columns:
        raise ValueError("admissions table has neither a 'race' (v2) nor an 'ethnicity' (v1.0) column")
    values = admissions[["subject_id", column]].drop_duplicates()
    single = values.groupby("subject_id")[column].nunique() == 1
    values = values[values["subject_id"].isin(single[single].index)].set_index("subject_id")[column]
    groups = values.map(race_group)
    return groups.dropna()


def age_at_study(anchor_age: str | int, anchor_year: str | int, study_date: str | int) -> float | None:
    """anchor_age + (StudyDate // 10000) - anchor_year, in years (StudyDate as YYYYMMDD); None when a
    value is blank."""
    if "" in (str(anchor_age).strip(), str(anchor_year).strip(), str(study_date).strip()):
        return None
    return float(int(float(anchor_age)) + int(float(study_date)) // 10000 - int(float(anchor_year)))


def study_time_key(study_date: str, study_time: str) -> float:
    """A sortable time of a study: YYYYMMDD and HHMMSS.fff (StudyTime may lack zero padding: 80556.875)."""
    return float(study_date) * 1e6 + float(study_time or 0.0)


def pa_images(metadata: pd.DataFrame) -> pd.DataFrame:
    """Rows of ``mimic-cxr-2.0.0-metadata.csv`` whose ViewPosition is PA (blank and other views dropped)."""
    return metadata[metadata["ViewPosition"].str.strip().str.upper() == "PA"]


def subject_folder(subject_id: str) -> str:
    """``p`` + the first two digits of the subject id: the top folder of ``files/`` (p10 ... p19)."""
    return f"p{subject_id[:2]}"


def image_path(root: str | Path, subject_id: str, study_id: str, dicom_id: str) -> Path:
    """files/p{first two digits}/p{subject_id}/s{study_id}/{dicom_id}.jpg under the MIMIC-CXR-JPG root."""
    return Path(root) / "files" / subject_folder(subject_id) / f"p{subject_id}" / f"s{study_id}" / f"{dicom_id}.jpg"


def report_path(root: str | Path, subject_id: str, study_id: str) -> Path:
    """files/p{first two digits}/p{subject_id}/s{study_id}.txt under the MIMIC-CXR reports root."""
    return Path(root) / "files" / subject_folder(subject_id) / f"p{subject_id}" / f"s{study_id}.txt"


_SECTION = re.compile(r"^\s*([A-Z][A-Z /&()-]{2,}):", re.MULTILINE)


def report_sections(text: str) -> dict[str, str]:
    """The sections of a free-text MIMIC-CXR report: upper-case ``NAME:`` headers at a line start (FINAL
    REPORT, EXAMINATION, INDICATION, COMPARISON, FINDINGS, IMPRESSION, ...) -> their text, whitespace
    collapsed. Text before the first header is under ""."""
    sections: dict[str, str] = {}
    headers = list(_SECTION.finditer(text))
    starts = [(match.group(1).strip(), match.end()) for match in headers]
    ends = [match.start() for match in headers[1:]] + [len(text)]
    if headers:
        sections[""] = " ".join(text[: headers[0].start()].split())
    for (name, start), end in zip(starts, ends):
        sections[name] = " ".join(text[start:end].split())
    return sections


def report_impression(text: str) -> str | None:
    """The IMPRESSION of a report, else its FINDINGS (some reports have only one), else None."""
    sections = report_sections(text)
    for name in ("IMPRESSION", "FINDINGS"):
        if sections.get(name):
            return sections[name]
    return None


def our_split(subject_id: str, official_split: str) -> str:
    """Patients in folder p19 -> holdout; otherwise the official split (validate -> val)."""
    if subject_folder(subject_id) == HOLDOUT_FOLDER:
        return "holdout"
    try:
        return OFFICIAL_SPLIT_TO_OURS[official_split]
    except KeyError:
        raise ValueError(f"unknown official split {official_split!r} for subject {subject_id}") from None
