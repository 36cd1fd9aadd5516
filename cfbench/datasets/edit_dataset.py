"""Reading splits of a dataset in the MIMIC-EDIT-INSTRUCTION layout (:mod:`cfbench.datasets.layout`), and
writing new datasets in it."""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from cfbench.core.findings import CHEXPERT_COLUMNS, Operation, parse_instruction
from cfbench.core.images import ImageReadError, find_image, load_image, load_mask, save_mask_png, save_png16
from cfbench.core.storage import atomic_write_json, atomic_write_text, remove_stale_temporaries
from cfbench.datasets.layout import CSV_NAME, LABEL_VALUES, REQUIRED_COLUMNS, SPLITS, DatasetError

_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]+$")
logger = logging.getLogger(__name__)


@dataclass
class Sample:
    """One row of a split. Labels are the target (current) study's CheXpert labels: 1.0, 0.0, -1.0 or
    None (not mentioned). ``row`` is the 1-based data row in instructions.csv (the header is row 0)."""

    sample_id: str
    split: str
    instruction: str
    operations: list[Operation]
    past_dicom_id: str
    current_dicom_id: str
    row: int
    subject_id: str | None = None
    past_study_id: str | None = None
    current_study_id: str | None = None
    labels: dict[str, float | None] = field(default_factory=dict)
    past_labels: dict[str, float | None] = field(default_factory=dict)
    age: float | None = None
    sex: str | None = None
    anchor_age: float | None = None  # MIMIC-IV anchor_age (the paper's "anchor age"), when the dataset has it
    race: str | None = None
    target_report: str | None = None
    progression: str | None = None
    reference_explanation: str | None = None


def _text(value) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value)
    return text if text != "" else None


@dataclass(frozen=True)
class SkippedRow:
    """A row of instructions.csv left out of the split, and why (``row``: 1-based data row)."""

    row: int
    sample_id: str | None
    reason: str

    def __str__(self) -> str:
        return f"row {self.row}" + (f" ({self.sample_id})" if self.sample_id else "") + f": {self.reason}"


class EditDataset:
    """One split of a dataset folder.

    Images are read lazily: ``past_image(sample)`` etc. return float32 HxW in [0, 1] at ``resolution``.

    A row that breaks the layout (a blank required column, an unknown split, a label that is not 1/0/-1,
    an instruction that does not parse, a duplicate id, an id that is not a plain file name) is left out
    and listed in :attr:`skipped_rows` with its reason; with ``strict=True`` it refuses the dataset.
    A file or column problem (no CSV, a missing required column, undecodable bytes) always refuses it.
    """

    def __init__(self, root: str | Path, split: str, resolution: int = 512, strict: bool = False):
        self.root = Path(root)
        self.split = split
        self.resolution = resolution
        if split not in SPLITS:
            raise DatasetError(f"unknown split {split!r}; splits are {', '.join(SPLITS)}")
        if not self.root.is_dir():
            raise DatasetError(f"no such dataset folder: {self.root}")
        csv_path = self.root / CSV_NAME
        if not csv_path.is_file():
            raise DatasetError(
                f"no {CSV_NAME} in {self.root}: a dataset folder needs {CSV_NAME}, past/ and current/ "
                "(build one with `cfbench data phantom` or `cfbench data build`)"
            )
        self.csv_path = csv_path
        table = _read_table(csv_path)
        self.samples: list[Sample] = []
        self.skipped_rows: list[SkippedRow] = []
        seen: set[str] = set()
        for index, row in enumerate(table.to_dict("records")):  # plain dicts: 30x faster than table.at
            try:
                sample = _row_to_sample(row, index, csv_path)
                if sample.sample_id in seen:
                    raise DatasetError(f"{csv_path} row {index + 1}: duplicate sample id {sample.sample_id!r}")
                seen.add(sample.sample_id)
            except DatasetError as error:
                if strict:
                    raise
                self.skipped_rows.append(SkippedRow(index + 1, _text(row["sample_id"]),
                                                    str(error).removeprefix(f"{csv_path} row {index + 1}: ")))
                continue
            if sample.split == split:
                self.samples.append(sample)
        if self.skipped_rows:
            logger.warning("%s: %d row(s) skipped (first: %s); pass strict=True / --strict to refuse the dataset",
                           csv_path, len(self.skipped_rows), self.skipped_rows[0])
        if not self.samples:
            present = sorted(table["split"].dropna().unique())
            raise DatasetError(f"{csv_path}: split {split!r} has no usable rows (splits present: {present}; "
                               f"{len(self.skipped_rows)} row(s) skipped)")
        self._by_id = {sample.sample_id: sample for sample in self.samples}
        info_path = self.root / "dataset.json"
        self.info: dict = json.loads(info_path.read_text()) if info_path.is_file() else {}

    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self) -> Iterator[Sample]:
        return iter(self.samples)

    def __getitem__(self, sample_id: str) -> Sample:
        try:
            return self._by_id[sample_id]
        except KeyError:
            raise KeyError(f"sample {sample_id!r} is not in split {self.split!r} of {self.root}") from None

    @property
    def label_columns(self) -> list[str]:
        return list(self.samples[0].labels)

    def image_path(self, folder: str, stem: str, sample: Sample) -> Path:
        """The file of an image of ``sample`` (``folder/stem.png|.jpg``); ImageReadError naming it if absent.
        ``stem`` is a plain file name (checked when the row was read), so the path stays inside the folder."""
        path = find_image(self.root / folder, stem)
        if path is None:
            raise ImageReadError(
                f"sample {sample.sample_id!r} (row {sample.row} of {self.csv_path}): image not found: "
                f"{self.root / folder / stem}.png (or .jpg)"
            )
        return path

    def current_path(self, sample: Sample) -> Path:
        return self.image_path("current", sample.current_dicom_id, sample)

    def _load(self, folder: str, stem: str, sample: Sample, mask: bool = False) -> np.ndarray:
        path = self.image_path(folder, stem, sample)
        try:
            return load_mask(path, self.resolution) if mask else load_image(path, self.resolution)
        except ImageReadError as error:
            raise ImageReadError(f"sample {sample.sample_id!r} (row {sample.row}): {error}") from error

    def past_image(self, sample: Sample) -> np.ndarray:
        return self._load("past", sample.past_dicom_id, sample)

    def current_image(self, sample: Sample) -> np.ndarray:
        return self._load("current", sample.current_dicom_id, sample)

    def has_folder(self, folder: str) -> bool:
        return (self.root / folder).is_dir()

    def counterfactual_image(self, sample: Sample) -> np.ndarray:
        """The exact counterfactual (phantom datasets only)."""
        return self._load("counterfactual", sample.sample_id, sample)

    def lesion_mask(self, sample: Sample) -> np.ndarray:
        """The true lesion-change mask, bool HxW (phantom datasets only)."""
        return self._load("lesion_mask", sample.sample_id, sample, mask=True)


def _line_of_byte(data: bytes, position: int) -> int:
    """1-based line number of a byte offset."""
    return data.count(b"\n", 0, position) + 1


def _read_table(csv_path: Path) -> pd.DataFrame:
    data = csv_path.read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = _line_of_byte(data, error.start)
        column = error.start - data.rfind(b"\n", 0, error.start)
        raise DatasetError(f"{csv_path} line {line} (data row {line - 1}), byte {column} of the line: "
                           f"{data[error.start:error.start + 4]!r} is not UTF-8; save the file as UTF-8") from None
    try:
        table = pd.read_csv(csv_path, dtype=str, keep_default_na=False, na_values=[""], encoding="utf-8")
    except pd.errors.ParserError as error:
        raise DatasetError(f"cannot parse {csv_path}: {error}") from error
    missing = [column for column in REQUIRED_COLUMNS if column not in table.columns]
    if missing:
        raise DatasetError(
            f"{csv_path} is missing required column(s) {', '.join(missing)}; "
            f"required: {', '.join(REQUIRED_COLUMNS)}; found: {', '.join(table.columns)}"
        )
    if "sample_id" not in table.columns:
        table["sample_id"] = table["past_dicom_id"].fillna("") + "_" + table["current_dicom_id"].fillna("")
    return table


def is_plain_name(value: str | None) -> bool:
    """Whether a value that names a file is a plain name ([A-Za-z0-9._-]: no folder, no '..', not absolute),
    so a path built from it stays inside its dataset folder."""
    return value is not None and bool(_SAFE_ID.match(value)) and value not in (".", "..")


def _check_name(value: str | None, column: str, csv_path: Path, index: int) -> str:
    if value is None:
        raise DatasetError(f"{csv_path} row {index + 1}: column {column!r} is blank")
    if not is_plain_name(value):
        raise DatasetError(f"{csv_path} row {index + 1}: {column} {value!r} is not a plain file name "
                           "([A-Za-z0-9._-], no folders)")
    return value


def _label(row: dict, index: int, column: str, csv_path: Path) -> float | None:
    text = _text(row[column])
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if value not in LABEL_VALUES:
        raise DatasetError(
            f"{csv_path} row {index + 1}: column {column!r}: label {text!r} is not 1.0, 0.0, -1.0 or blank"
        )
    return value


def _row_to_sample(row: dict, index: int, csv_path: Path) -> Sample:
    """One row of ``instructions.csv`` (column -> cell, as ``DataFrame.to_dict("records")`` gives) as a
    Sample; DatasetError naming the file, row (1-based) and column for a cell that cannot be used."""
    def get(column: str) -> str | None:
        return _text(row[column]) if column in row else None

    for column in REQUIRED_COLUMNS:
        if get(column) is None:
            raise DatasetError(f"{csv_path} row {index + 1}: column {column!r} is blank")
    if get("split") not in SPLITS:
        raise DatasetError(f"{csv_path} row {index + 1}: unknown split {get('split')!r}; allowed: {', '.join(SPLITS)}")
    for column in ("sample_id", "past_dicom_id", "current_dicom_id"):
        _check_name(get(column), column, csv_path, index)
    instruction = get("instruction")
    operations_text = get("operations")
    try:
        if operations_text is not None:
            operations = [Operation.from_dict(item) for item in json.loads(operations_text)]
        else:
            operations = parse_instruction(instruction)
    except (ValueError, KeyError, TypeError) as error:
        raise DatasetError(f"{csv_path} row {index + 1}: cannot read the operations: {error}") from error
    labels = {c: _label(row, index, c, csv_path) for c in CHEXPERT_COLUMNS if c in row}
    past_labels = {c: _label(row, index, f"past_{c}", csv_path) for c in CHEXPERT_COLUMNS if f"past_{c}" in row}
    age_text = get("age")
    try:
        age = float(age_text) if age_text is not None else None
    except ValueError:
        raise DatasetError(f"{csv_path} row {index + 1}: age {age_text!r} is not a number") from None
    if age is not None and not math.isfinite(age):
        age = None  # unknown: the age metric reports how many samples it excluded
    anchor_text = get("anchor_age")
    try:
        anchor_age = float(anchor_text) if anchor_text is not None else None
    except ValueError:
        raise DatasetError(f"{csv_path} row {index + 1}: anchor_age {anchor_text!r} is not a number") from None
    if anchor_age is not None and not math.isfinite(anchor_age):
        anchor_age = None
    return Sample(
        sample_id=get("sample_id"),
        split=get("split"),
        instruction=instruction,
        operations=operations,
        past_dicom_id=get("past_dicom_id"),
        current_dicom_id=get("current_dicom_id"),
        row=index + 1,
        subject_id=get("subject_id"),
        past_study_id=get("past_study_id"),
        current_study_id=get("current_study_id"),
        labels=labels,
        past_labels=past_labels,
        age=age,
        anchor_age=anchor_age,
        sex=get("sex"),
        race=get("race"),
        target_report=get("target_report"),
        progression=get("progression"),
        reference_explanation=get("reference_explanation"),
    )


class DatasetWriter:
    """Write a dataset folder in the layout above. Images are written as they come (atomically);
    ``instructions.csv`` and ``dataset.json`` are written by :meth:`close`."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(self.root)  # left by a build killed mid-write
        self._rows: list[dict] = []

    def add(
        self,
        sample: Sample,
        past: np.ndarray,
        current: np.ndarray,
        counterfactual: np.ndarray | None = None,
        lesion_mask: np.ndarray | None = None,
    ) -> None:
        """Write the images of a sample (DatasetError, nothing written, when an id is not a plain file name)."""
        self._check_names(sample)
        save_png16(self.root / "past" / f"{sample.past_dicom_id}.png", past)
        save_png16(self.root / "current" / f"{sample.current_dicom_id}.png", current)
        if counterfactual is not None:
            save_png16(self.root / "counterfactual" / f"{sample.sample_id}.png", counterfactual)
        if lesion_mask is not None:
            save_mask_png(self.root / "lesion_mask" / f"{sample.sample_id}.png", lesion_mask)
        self.add_row(sample)

    def _check_names(self, sample: Sample) -> None:
        for what in ("sample_id", "past_dicom_id", "current_dicom_id"):
            if not is_plain_name(getattr(sample, what)):
                raise DatasetError(f"{what} {getattr(sample, what)!r} of sample {sample.sample_id!r} is not a plain "
                                   f"file name ([A-Za-z0-9._-], no folders): refused, nothing written outside {self.root}")

    def add_row(self, sample: Sample, extra: dict | None = None) -> None:
        """Record a sample whose images are already in ``past/`` and ``current/``; ``extra`` adds columns."""
        self._check_names(sample)
        self._rows.append({**sample_to_row(sample), **(extra or {})})

    def close(self, info: dict | None = None) -> Path:
        table = pd.DataFrame(self._rows, columns=None if self._rows else list(REQUIRED_COLUMNS))
        atomic_write_text(self.root / CSV_NAME, table.to_csv(index=False))
        if info is not None:
            atomic_write_json(self.root / "dataset.json", info)
        return self.root / CSV_NAME


def sample_to_row(sample: Sample) -> dict:
    """A sample as one CSV row (official columns first)."""
    row = {
        "instruction": sample.instruction,
        "past_dicom_id": sample.past_dicom_id,
        "current_dicom_id": sample.current_dicom_id,
        "split": sample.split,
        "sample_id": sample.sample_id,
        "subject_id": sample.subject_id,
        "past_study_id": sample.past_study_id,
        "current_study_id": sample.current_study_id,
        "operations": json.dumps([op.to_dict() for op in sample.operations]),
        "age": sample.age,
        "sex": sample.sex,
        "race": sample.race,
        "target_report": sample.target_report,
        "progression": sample.progression,
        "reference_explanation": sample.reference_explanation,
    }
    if sample.anchor_age is not None:  # only datasets that know it (MIMIC) carry the column
        row["anchor_age"] = sample.anchor_age
    row.update(sample.labels)
    row.update({f"past_{column}": value for column, value in sample.past_labels.items()})
    return row
