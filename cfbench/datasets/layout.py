"""The MIMIC-EDIT-INSTRUCTION layout every split is read from: folder, file and column names, splits, and the
error a dataset that breaks it raises. Light to import (the command line reads its choices from here).

Layout of a dataset folder::

    instructions.csv     one row per sample (columns below)
    past/                prior images, {past_dicom_id}.png|.jpg
    current/             target images, {current_dicom_id}.png|.jpg
    counterfactual/      (phantoms only) exact counterfactuals, {sample_id}.png
    lesion_mask/         (phantoms only) true lesion-change masks, {sample_id}.png
    dataset.json         (optional) how the dataset was made

Columns of ``instructions.csv``:

- official (required): ``instruction, past_dicom_id, current_dicom_id, split``
- ours: ``sample_id`` (default ``{past_dicom_id}_{current_dicom_id}``), ``subject_id``, ``past_study_id``,
  ``current_study_id``, ``operations`` (JSON list of operations; parsed from ``instruction`` when absent),
  ``reference_explanation`` (the reference interpretation of the change, ICG-CXR style, for text metrics),
  the CheXpert label columns of the target study (``Cardiomegaly``, ``Pleural Effusion``, ...; values
  1.0 positive, 0.0 negative, -1.0 uncertain, blank not mentioned), the same for the prior study prefixed
  ``past_``, ``age`` (years at the target study), ``anchor_age`` (MIMIC-IV's, optional), ``sex`` (M/F), ``race`` (three-group rule, or a phantom
  group), ``target_report``, ``progression``.
"""

from __future__ import annotations

SPLITS: tuple[str, ...] = ("train", "holdout", "test", "val", "demo")
REQUIRED_COLUMNS: tuple[str, ...] = ("instruction", "past_dicom_id", "current_dicom_id", "split")
LABEL_VALUES = {1.0, 0.0, -1.0}
CSV_NAME = "instructions.csv"


# What the missing-data errors say about where the real splits come from.
WHERE_DATA_COMES_FROM = (
    "the real splits (holdout, test, ...) are built from PhysioNet releases that need credentialed access "
    "(a PhysioNet account, CITI human-subjects training and each release's data use agreement): MIMIC-CXR-JPG "
    "(the images), Medical-Diff-VQA (the study pairs and their differences) and MIMIC-IV (age, race); download "
    "them, then `cfbench data build mimic --mimic-cxr DIR --diff-vqa CSV --mimic-iv DIR --out DIR` writes the "
    "dataset folder (NIH ChestX-ray14 needs no credentialing: `cfbench data build nih`); "
    "`--split demo` runs on the embedded phantom set without any download")
NO_DATA_FOLDER = ("no dataset folder: pass --data DIR, set CFBENCH_DATA_DIR, or run `cfbench config set data_dir DIR`; "
                  + WHERE_DATA_COMES_FROM)


BENCHMARK_SETTINGS_KEY = "benchmark_settings"
"""dataset.json key of the settings the benchmark protocol of the data fixes: ``{"resolution": PX, "steps": N}``
(either may be absent), or per split ``{"demo": {...}, "holdout": {...}}``. ``cfbench run`` uses them unless
``--resolution`` / ``--option steps=N`` override them."""


def benchmark_settings(root, split: str) -> dict:
    """The benchmark settings a dataset folder's ``dataset.json`` fixes for ``split`` (empty when none)."""
    import json
    from pathlib import Path

    path = Path(root) / "dataset.json"
    try:
        settings = json.loads(path.read_text(encoding="utf-8")).get(BENCHMARK_SETTINGS_KEY) if path.is_file() else None
    except (OSError, ValueError):
        return {}
    if not isinstance(settings, dict):
        return {}
    if any(key in SPLITS for key in settings):
        settings = settings.get(split) or {}
    return {key: value for key, value in settings.items() if key in ("resolution", "steps") and value is not None}


class DatasetError(ValueError):
    """The dataset folder or its CSV breaks the layout; the message names the file, row or column."""


def dataset_kind(root) -> str | None:
    """The ``kind`` a dataset folder's ``dataset.json`` declares ("phantom", "nih", ...), or None."""
    import json
    from pathlib import Path

    path = Path(root) / "dataset.json"
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("kind") if path.is_file() else None
    except (OSError, ValueError):
        return None
