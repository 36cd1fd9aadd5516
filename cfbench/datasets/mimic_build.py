"""Rebuild MIMIC-EDIT-INSTRUCTION from PhysioNet downloads (REFERENCE.md §2).

Inputs (the real releases, unchanged):

- MIMIC-CXR-JPG root: ``files/p1x/p.../s.../*.jpg`` and ``mimic-cxr-2.0.0-{metadata,split,chexpert}.csv(.gz)``
- Medical-Diff-VQA ``mimic_pair_questions.csv``
- MIMIC-IV folder holding ``patients.csv(.gz)`` and ``admissions.csv(.gz)`` (directly, or in ``hosp/`` for
  v2+, or ``core/`` for v1.0)
- optionally the MIMIC-CXR free-text reports (``files/p1x/p.../s....txt``): the later study's impression
  becomes ``target_report``, the prompt of text-to-image baselines

Planning (:func:`plan_mimic_pairs`) is pure table work: each Diff-VQA difference pair that changed becomes
one sample; both studies need a PA image; the pair is put in time order by StudyDate/StudyTime (the given
order is never trusted: a reversed pair gets its operations inverted); the target labels are the CheXpert
labels of the later study; age at that study (and MIMIC-IV's anchor_age), sex, and the three-group race; the split by patient (p19 ->
holdout). Every dropped pair is counted by reason. :func:`build_mimic_dataset` then reads, resizes and
registers the images through :mod:`cfbench.datasets.pair_engine` (parallel, resumable) and writes the dataset layout
of :mod:`cfbench.datasets.edit_dataset` plus a dataset card.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from cfbench.core.findings import CHEXPERT_COLUMNS, render_instruction
from cfbench.datasets import mimic_tables as mimic
from cfbench.datasets.diffvqa import DifferenceReport, read_difference_pairs
from cfbench.datasets.edit_dataset import Sample
from cfbench.datasets.layout import BENCHMARK_SETTINGS_KEY
from cfbench.datasets.pair_engine import PairJob, PairSettings, process_pairs, write_dataset

METADATA = "mimic-cxr-2.0.0-metadata.csv"
SPLIT = "mimic-cxr-2.0.0-split.csv"
CHEXPERT = "mimic-cxr-2.0.0-chexpert.csv"
METADATA_COLUMNS = ("dicom_id", "subject_id", "study_id", "ViewPosition", "StudyDate", "StudyTime")
SPLIT_COLUMNS = ("dicom_id", "study_id", "subject_id", "split")
CHEXPERT_FILE_COLUMNS = ("subject_id", "study_id", *CHEXPERT_COLUMNS)
PATIENT_COLUMNS = ("subject_id", "gender", "anchor_age", "anchor_year")


def find_file(folder: str | Path, name: str, subfolders: tuple[str, ...] = ("",)) -> Path:
    """``name`` or ``name.gz`` in ``folder`` (or one of its ``subfolders``); FileNotFoundError listing
    every path tried."""
    tried = []
    for sub in subfolders:
        for candidate in (name + ".gz", name):
            path = Path(folder) / sub / candidate
            if path.is_file():
                return path
            tried.append(str(path))
    raise FileNotFoundError(f"{name}(.gz) not found; looked for: {', '.join(tried)}")


@dataclass(frozen=True)
class MimicSources:
    """The three PhysioNet downloads, and optionally the MIMIC-CXR reports root."""

    mimic_cxr: Path
    diff_vqa: Path
    mimic_iv: Path
    reports: Path | None = None

    def table(self, name: str, required: tuple[str, ...]) -> pd.DataFrame:
        if name.startswith("mimic-cxr"):
            path = find_file(self.mimic_cxr, name)
        else:
            path = find_file(self.mimic_iv, name, ("", "hosp", "core"))
        return mimic.read_csv(path, required)


@dataclass
class MimicPlan:
    """Samples to build, their image jobs (same order), and why other pairs were left out."""

    samples: list[Sample]
    jobs: list[PairJob]
    funnel: Counter = field(default_factory=Counter)   # reason -> number of pairs
    differences: DifferenceReport | None = None


def _labels(row: dict | None) -> dict[str, float | None]:
    if row is None:
        return {}
    return {column: (float(row[column]) if row[column] != "" else None) for column in CHEXPERT_COLUMNS}


def _first_pa_per_study(metadata: pd.DataFrame) -> dict[str, str]:
    """study_id -> the PA dicom_id of that study (the smallest dicom_id when a study has several)."""
    pa = mimic.pa_images(metadata).sort_values("dicom_id")
    return dict(pa.groupby("study_id")["dicom_id"].first())


def plan_mimic_pairs(sources: MimicSources, differences: DifferenceReport | None = None) -> MimicPlan:
    """Every Diff-VQA difference pair -> a sample and a job, or a counted reason why not."""
    differences = differences or read_difference_pairs(sources.diff_vqa)
    metadata = sources.table(METADATA, METADATA_COLUMNS)
    splits = sources.table(SPLIT, SPLIT_COLUMNS)
    chexpert = sources.table(CHEXPERT, CHEXPERT_FILE_COLUMNS)
    patients = {row["subject_id"]: row for row in sources.table("patients.csv", PATIENT_COLUMNS).to_dict("records")}
    admissions = sources.table("admissions.csv", ("subject_id",))
    race = mimic.subject_race(admissions).to_dict()

    pa_of_study = _first_pa_per_study(metadata)
    study_rows = {row["study_id"]: row for row in metadata.drop_duplicates("study_id").to_dict("records")}
    official_split = dict(zip(splits["dicom_id"], splits["split"]))
    labels_of_study = {row["study_id"]: row for row in chexpert.to_dict("records")}

    plan = MimicPlan([], [], Counter(), differences)
    plan.funnel["difference pairs in Diff-VQA"] = len(differences.pairs)
    used_current: set[str] = set()
    for pair in differences.pairs:
        if pair.nothing_changed:
            plan.funnel["dropped: nothing has changed"] += 1
            continue
        if not pair.operations:
            plan.funnel["dropped: no operation parsed from the answer"] += 1
            continue
        if pair.study_id == pair.ref_id:
            plan.funnel["dropped: reference is the main study"] += 1
            continue
        if pair.ref_id not in pa_of_study or pair.study_id not in pa_of_study:
            plan.funnel["dropped: a study has no PA image"] += 1
            continue
        past_study, current_study, operations = pair.ref_id, pair.study_id, pair.operations
        past_row, current_row = study_rows[past_study], study_rows[current_study]
        past_time = mimic.study_time_key(past_row["StudyDate"], past_row["StudyTime"])
        current_time = mimic.study_time_key(current_row["StudyDate"], current_row["StudyTime"])
        if past_time > current_time:  # the given order is wrong: the main study is the earlier one
            past_study, current_study = current_study, past_study
            past_row, current_row = current_row, past_row
            operations = sorted((operation.inverted() for operation in operations), key=_clause_order)
            plan.funnel["reordered by study date (operations inverted)"] += 1
        past_dicom, current_dicom = pa_of_study[past_study], pa_of_study[current_study]
        if current_dicom in used_current:
            plan.funnel["dropped: follow-up image already used by another pair"] += 1
            continue
        split_name = official_split.get(current_dicom)
        if split_name is None:
            plan.funnel["dropped: image not in the official split file"] += 1
            continue
        used_current.add(current_dicom)
        subject = pair.subject_id
        sample = Sample(
            sample_id=f"{past_dicom}_{current_dicom}",
            split=mimic.our_split(subject, split_name),
            instruction=render_instruction(operations),
            operations=operations,
            past_dicom_id=past_dicom,
            current_dicom_id=current_dicom,
            row=len(plan.samples) + 1,
            subject_id=subject,
            past_study_id=past_study,
            current_study_id=current_study,
            labels=_labels(labels_of_study.get(current_study)),
            past_labels=_labels(labels_of_study.get(past_study)),
            **_demographics(subject, current_row["StudyDate"], patients, race),
        )
        if not sample.labels:
            plan.funnel["kept without CheXpert labels (study not in the chexpert file)"] += 1
        if sources.reports is not None:
            sample.target_report = _impression(sources.reports, subject, current_study)
            if sample.target_report is None:
                plan.funnel["kept without a target report (no report file or no impression)"] += 1
        plan.samples.append(sample)
        plan.jobs.append(PairJob(
            sample.sample_id,
            str(mimic.image_path(sources.mimic_cxr, subject, past_study, past_dicom)),
            str(mimic.image_path(sources.mimic_cxr, subject, current_study, current_dicom)),
            past_dicom, current_dicom))
    plan.funnel["planned pairs"] = len(plan.samples)
    return plan


def _impression(reports: Path, subject: str, study: str) -> str | None:
    path = mimic.report_path(reports, subject, study)
    try:
        return mimic.report_impression(path.read_text(encoding="utf-8", errors="replace"))
    except FileNotFoundError:
        return None


def _clause_order(operation) -> int:
    """Diff-VQA's clause order: level changes, then additions, then removals."""
    return ("change", "add", "remove").index(operation.op)


def _demographics(subject: str, study_date: str, patients: dict[str, dict], race: dict[str, str]) -> dict:
    patient = patients.get(subject)
    if patient is None:
        return {"age": None, "anchor_age": None, "sex": None, "race": race.get(subject)}
    anchor_age = str(patient["anchor_age"]).strip()
    return {"age": mimic.age_at_study(patient["anchor_age"], patient["anchor_year"], study_date),
            "anchor_age": float(anchor_age) if anchor_age else None,
            "sex": patient["gender"] or None, "race": race.get(subject)}


def build_mimic_dataset(sources: MimicSources, out: str | Path, settings: PairSettings = PairSettings(),
                        workers: int = 1, limit: int | None = None, ms_cxr: str | Path | None = None,
                        progress: bool = True) -> dict:
    """Plan, process (parallel, resumable) and write the dataset; returns the build summary."""
    out = Path(out)
    plan = plan_mimic_pairs(sources)
    samples, jobs = plan.samples[:limit], plan.jobs[:limit]
    outcomes = process_pairs(jobs, out, settings, workers=workers, progress=progress)
    funnel = dict(plan.funnel)
    if limit:
        funnel["left out by --limit"] = len(plan.samples) - len(samples)
    if ms_cxr:
        from cfbench.datasets.pseudo_masks import DATASET_MASKS, ms_cxr_pseudo_masks

        ms_cxr_pseudo_masks(ms_cxr, find_file(sources.mimic_cxr, METADATA), settings.resolution).save(out / DATASET_MASKS)
    paths = {name: None if value is None else str(value) for name, value in vars(sources).items()}
    info = {"kind": "mimic-edit-instruction", "sources": paths,
            BENCHMARK_SETTINGS_KEY: {"resolution": settings.resolution},  # the papers' 512 px by default
            "funnel": funnel, "unknown_phrases": dict(plan.differences.unknown.most_common()),
            "unparsed_sentences": dict(plan.differences.unparsed.most_common()),
            "ambiguous_level_splits": dict(plan.differences.ambiguous.most_common())}
    return write_dataset(out, samples, outcomes, settings, info, "MIMIC-EDIT-INSTRUCTION (rebuilt)")
