"""A miniature PhysioNet download in the exact real schemas (REFERENCE.md §1), with phantom X-rays as JPEGs.

``write_mimic_release(root)`` writes

- ``mimic-cxr-jpg/``: ``mimic-cxr-2.0.0-{metadata,split,chexpert}.csv.gz`` and ``files/p1x/p.../s.../*.jpg``
  (portrait 96x80 8-bit JPEGs, like the real release's non-square images)
- ``mimic-iv/hosp/{patients,admissions}.csv.gz`` (v2: ``race``) or ``mimic-iv/core/...`` (v1.0: ``ethnicity``)
- ``medical-diff-vqa/mimic_pair_questions.csv`` (difference questions plus other question types)
- ``ms-cxr/MS_CXR_Local_Alignment_v1.1.0.csv``
- ``mimic-cxr-reports/files/p1x/p.../s....txt`` (free-text reports; one study has none, one only FINDINGS)

and returns the paths. The subjects cover every rule of the builder (see ``SUBJECTS``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from cfbench.core.findings import CHEXPERT_COLUMNS
from cfbench.phantom.render import render_pair
from cfbench.phantom.scenario import sample_pair

ADD_ONE = "the main image has an additional finding of {} than the reference image. "
ADD_MANY = "the main image has additional findings of {} than the reference image. "
MISSING = "the main image is missing the finding of {} than the reference image. "
LEVEL = "the level of {} has changed from {} to {}. "
WHOLE = "what has changed compared to the reference image?"


@dataclass(frozen=True)
class Study:
    study_id: str
    date: int          # YYYYMMDD
    time: str          # StudyTime as written (no zero padding)
    views: tuple[str, ...]
    labels: dict


@dataclass(frozen=True)
class Subject:
    subject_id: str
    official_split: str
    gender: str
    anchor_age: int
    anchor_year: int
    races: tuple[str, ...]            # one admission per value
    studies: tuple[Study, ...]
    questions: tuple[tuple[str, str, str, str], ...]   # (main study, ref study, question, answer)
    note: str


def _labels(**values) -> dict:
    return {column: values.get(column.replace(" ", "_"), "") for column in CHEXPERT_COLUMNS}


SUBJECTS: tuple[Subject, ...] = (
    Subject("10000032", "train", "F", 52, 2180, ("WHITE", "WHITE"), (
        Study("50414267", 21800506, "213014.531", ("PA", "LATERAL"), _labels(No_Finding="1.0")),
        Study("53189527", 21800626, "165500.312", ("PA", "LATERAL"), _labels(Pleural_Effusion="1.0", Edema="0.0")),
    ), (("53189527", "50414267", WHOLE, ADD_ONE.format("pleural effusion")),
        ("53189527", "50414267", "what has changed in the left lung area?", ADD_ONE.format("pleural effusion"))),
        "add with its side from an area question; train"),
    Subject("19000001", "train", "M", 70, 2150, ("BLACK/AFRICAN AMERICAN",), (
        Study("51000001", 21520101, "80556.875", ("PA",), _labels(Cardiomegaly="1.0", Edema="1.0")),
        Study("51000002", 21520101, "101010", ("PA", "LATERAL"), _labels(Cardiomegaly="1.0", Edema="")),
    ), (("51000002", "51000001", WHOLE, LEVEL.format("cardiomegaly", "mild", "moderate") + MISSING.format("edema")),),
        "p19 -> holdout; same day, ordered by an unpadded StudyTime; change + remove"),
    Subject("11000002", "test", "F", 40, 2160, ("ASIAN - CHINESE",), (
        Study("52000001", 21610301, "120000", ("PA",), _labels(No_Finding="1.0")),
        Study("52000002", 21610405, "93000.5", ("PA",), _labels(Consolidation="1.0", Pneumonia="-1.0")),
    ), (("52000002", "52000001", WHOLE, ADD_MANY.format("consolidation, and pneumonia")),),
        "official test -> test; two-item list"),
    Subject("12000003", "validate", "M", 61, 2170, ("WHITE - OTHER EUROPEAN",), (
        Study("53000001", 21720801, "150000", ("PA",), _labels(Atelectasis="0.0")),
        Study("53000002", 21720702, "150000", ("PA",), _labels(Atelectasis="1.0")),
    ), (("53000002", "53000001", WHOLE, ADD_ONE.format("atelectasis")),),
        "validate -> val; main study is EARLIER than the reference: reordered, add -> remove"),
    Subject("13000004", "train", "F", 33, 2175, ("HISPANIC/LATINO",), (
        Study("54000001", 21760101, "100000", ("PA",), _labels(No_Finding="1.0")),
        Study("54000002", 21760201, "100000", ("PA",), _labels(No_Finding="1.0")),
    ), (("54000002", "54000001", WHOLE, "nothing has changed."),), "nothing has changed: dropped"),
    Subject("14000005", "train", "M", 80, 2165, ("UNKNOWN",), (
        Study("55000001", 21660101, "100000", ("PA",), _labels()),
        Study("55000002", 21660301, "100000", ("AP",), _labels(Edema="1.0")),
    ), (("55000002", "55000001", WHOLE, ADD_ONE.format("edema")),), "follow-up is AP only: dropped"),
    Subject("15000006", "train", "F", 45, 2190, ("ASIAN",), (
        Study("56000001", 21900101, "100000", ("PA",), _labels()),
        Study("56000002", 21900601, "100000", ("PA",), _labels(Pneumothorax="1.0")),
    ), (("56000002", "56000001", WHOLE, ADD_ONE.format("pneumothorax")),),
        "follow-up JPEG missing on disk: logged, build goes on"),
    Subject("16000007", "train", "M", 58, 2185, ("WHITE", "BLACK/AFRICAN AMERICAN"), (
        Study("57000001", 21860101, "100000", ("PA",), _labels()),
        Study("57000002", 21860901, "100000", ("PA",), _labels(Lung_Opacity="1.0")),
    ), (("57000002", "57000001", WHOLE, ADD_ONE.format("foo opacity") + "the patient looks better. "),),
        "two race values -> no race; unknown phrase and an unparsed sentence reported"),
)
MISSING_IMAGE_STUDY = "56000002"
NO_REPORT_STUDY = "52000002"
FINDINGS_ONLY_STUDY = "53000001"
REPORT = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)
 
 INDICATION:  ___ with shortness of breath
 
 COMPARISON:  ___
 
 FINDINGS: 
 
 Heart size is normal.  There is a new
 {finding}.
 {impression}"""


def dicom_id(study_id: str, view: str) -> str:
    """A dicom id in the real format (five dash-separated hex groups), derived from study and view."""
    digest = f"{int(study_id):08x}{sum(map(ord, view)):04x}".ljust(40, "0")
    return "-".join(digest[i:i + 8] for i in range(0, 40, 8))


@dataclass
class MimicRelease:
    mimic_cxr: Path
    mimic_iv: Path
    diff_vqa: Path
    ms_cxr: Path
    reports: Path


def write_mimic_release(root: Path, mimic_iv_version: int = 2) -> MimicRelease:
    """Write the miniature release under ``root`` (see the module docstring)."""
    cxr, iv = root / "mimic-cxr-jpg", root / "mimic-iv" / ("hosp" if mimic_iv_version >= 2 else "core")
    vqa, ms, reports = root / "medical-diff-vqa", root / "ms-cxr", root / "mimic-cxr-reports"
    for folder in (cxr, iv, vqa, ms, reports):
        folder.mkdir(parents=True, exist_ok=True)
    metadata, splits, chexpert, patients, admissions, questions = [], [], [], [], [], []
    for index, subject in enumerate(SUBJECTS):
        rendered = render_pair(sample_pair(100 + index), 96)
        frames = [rendered.past, rendered.current]
        patients.append({"subject_id": subject.subject_id, "gender": subject.gender, "anchor_age": subject.anchor_age,
                         "anchor_year": subject.anchor_year, "anchor_year_group": "2014 - 2016", "dod": ""})
        for number, race in enumerate(subject.races):
            admissions.append({"subject_id": subject.subject_id, "hadm_id": f"2{index:03d}{number:04d}",
                               "admittime": "2180-05-06 19:00:00", "admission_type": "EW EMER.",
                               "race" if mimic_iv_version >= 2 else "ethnicity": race, "insurance": "Other"})
        for frame, study in zip(frames, subject.studies):
            if study.study_id != NO_REPORT_STUDY:
                impression = "" if study.study_id == FINDINGS_ONLY_STUDY else (
                    f"\n IMPRESSION: \n \n Findings of study {study.study_id}.\n")
                report = reports / "files" / f"p{subject.subject_id[:2]}" / f"p{subject.subject_id}" / f"s{study.study_id}.txt"
                report.parent.mkdir(parents=True, exist_ok=True)
                report.write_text(REPORT.format(finding=f"opacity in study {study.study_id}", impression=impression))
            chexpert.append({"subject_id": subject.subject_id, "study_id": study.study_id, **study.labels})
            for view in study.views:
                dicom = dicom_id(study.study_id, view)
                metadata.append({
                    "dicom_id": dicom, "subject_id": subject.subject_id, "study_id": study.study_id,
                    "PerformedProcedureStepDescription": "CHEST (PA AND LAT)", "ViewPosition": view,
                    "Rows": 96, "Columns": 80, "StudyDate": study.date, "StudyTime": study.time,
                    "ProcedureCodeSequence_CodeMeaning": "CHEST (PA AND LAT)",
                    "ViewCodeSequence_CodeMeaning": "postero-anterior" if view == "PA" else "lateral",
                    "PatientOrientationCodeSequence_CodeMeaning": "Erect" if view == "PA" else ""})
                splits.append({"dicom_id": dicom, "study_id": study.study_id, "subject_id": subject.subject_id,
                               "split": subject.official_split})
                folder = cxr / "files" / f"p{subject.subject_id[:2]}" / f"p{subject.subject_id}" / f"s{study.study_id}"
                folder.mkdir(parents=True, exist_ok=True)
                if study.study_id == MISSING_IMAGE_STUDY:
                    continue
                pixels = frame if view == "PA" else frame.T
                Image.fromarray((pixels[:, 8:88] * 255).round().astype(np.uint8)).save(folder / f"{dicom}.jpg",
                                                                                     quality=95)
        for main, ref, question, answer in subject.questions:
            questions.append({"study_id": main, "subject_id": subject.subject_id, "ref_id": ref,
                              "question_type": "difference", "question": question, "answer": answer,
                              "split": "train"})
            questions.append({"study_id": main, "subject_id": subject.subject_id, "ref_id": ref,
                              "question_type": "view", "question": "which view is this image taken?",
                              "answer": "PA view", "split": "train"})
    pd.DataFrame(metadata).to_csv(cxr / "mimic-cxr-2.0.0-metadata.csv.gz", index=False)
    pd.DataFrame(splits).to_csv(cxr / "mimic-cxr-2.0.0-split.csv.gz", index=False)
    pd.DataFrame(chexpert, columns=["subject_id", "study_id", *CHEXPERT_COLUMNS]).to_csv(
        cxr / "mimic-cxr-2.0.0-chexpert.csv.gz", index=False)
    pd.DataFrame(patients).to_csv(iv / "patients.csv.gz", index=False)
    pd.DataFrame(admissions).to_csv(iv / "admissions.csv.gz", index=False)
    pd.DataFrame(questions).to_csv(vqa / "mimic_pair_questions.csv", index=False)
    first_pa = dicom_id(SUBJECTS[0].studies[1].study_id, "PA")
    pd.DataFrame([
        {"dicom_id": first_pa, "category_name": "Pleural Effusion", "label_text": "left pleural effusion",
         "path": f"files/p10/p10000032/s53189527/{first_pa}.jpg", "x": 10, "y": 50, "w": 30, "h": 30,
         "image_width": 80, "image_height": 96, "split": "test"},
    ]).to_csv(ms / "MS_CXR_Local_Alignment_v1.1.0.csv", index=False)
    return MimicRelease(cxr, root / "mimic-iv", vqa / "mimic_pair_questions.csv",
                        ms / "MS_CXR_Local_Alignment_v1.1.0.csv", reports)
