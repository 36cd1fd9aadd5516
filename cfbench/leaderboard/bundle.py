"""Results bundles: one evaluated run as a small archive to share, which ``cfbench leaderboard`` reads like a
run folder.

``cfbench export RUN`` writes ``RUN_NAME.cfbench.tar.gz`` holding:

- ``manifest.json`` (what was run: model, weights identity, split, dataset CSV digest, settings, versions);
- ``metrics.json`` (every metric with its interval, n, protocol, evaluator identity);
- ``predictions.csv``: per sample, the evaluator's outputs on the *generated* image and the per-sample
  measures, keyed by sample id; the patient data is left out: the target labels, the true race, sex and age
  (:data:`PATIENT_COLUMNS`), and the evaluator's outputs on the real images (``real/...``);
- ``results.jsonl`` (per sample: seed, explanation text, whether a guidance map was returned);
- ``bundle.json``: what the bundle holds and what it leaves out;
- ``images/`` and ``guidance/`` only with ``images=True`` (they are derived from the dataset's images: for
  MIMIC-derived splits sharing them falls under the PhysioNet data use agreement).

So groups can publish and merge results without sharing MIMIC-derived images or labels. A bundle has no
``evaluation.npz``: the leaderboard leaves its per-operation breakdown, its paired significance tests and
(without images) its gallery out, and says so.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import tarfile
import tempfile
from pathlib import Path

from cfbench.core.storage import atomic_write_json
from cfbench.runs.manifest import RESULTS_STEM, RunFiles

BUNDLE_SUFFIX = ".cfbench.tar.gz"
BUNDLE_RECORD = "bundle.json"
PATIENT_COLUMNS_EXACT = ("race_true", "sex_male_true", "age_true", "anchor_age_true")
PATIENT_COLUMN_PREFIXES = ("label/", "real/")
PATIENT_COLUMNS = PATIENT_COLUMNS_EXACT + tuple(prefix + "*" for prefix in PATIENT_COLUMN_PREFIXES)
"""predictions.csv columns a bundle leaves out: the patient's labels and attributes, and the evaluator's
outputs on the real (patient) images."""


class BundleError(ValueError):
    """A folder that is not an evaluated run, or an archive that is not a cfbench bundle."""


def _is_patient_column(name: str) -> bool:
    return name in PATIENT_COLUMNS_EXACT or name.startswith(PATIENT_COLUMN_PREFIXES)


def shareable_predictions(text: str) -> tuple[str, list[str]]:
    """predictions.csv without the patient columns; (the CSV text, the columns left out)."""
    reader = csv.reader(io.StringIO(text))
    header = next(reader, [])
    keep = [i for i, name in enumerate(header) if not _is_patient_column(name)]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([header[i] for i in keep])
    for row in reader:
        writer.writerow([row[i] for i in keep])
    return buffer.getvalue(), [name for name in header if _is_patient_column(name)]


def export_run(run_dir: str | Path, out: str | Path | None = None, images: bool = False) -> Path:
    """Write the bundle of an evaluated run (default ``RUN_DIR.cfbench.tar.gz`` beside the folder); its path."""
    run_dir = Path(run_dir)
    files = RunFiles(run_dir)
    for required in (files.manifest, files.metrics):
        if not required.is_file():
            raise BundleError(f"{run_dir} is not an evaluated run folder: {required.name} missing "
                              "(run `cfbench eval --run DIR` first)")
    out = Path(out) if out else run_dir.parent / f"{run_dir.name}{BUNDLE_SUFFIX}"
    name = run_dir.name
    contents, left_out = ["manifest.json", "metrics.json"], []
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as staging:
        staging = Path(staging) / name
        staging.mkdir()
        shutil.copy2(files.manifest, staging / "manifest.json")
        shutil.copy2(files.metrics, staging / "metrics.json")
        if files.predictions.is_file():
            text, removed = shareable_predictions(files.predictions.read_text(encoding="utf-8"))
            (staging / files.predictions.name).write_text(text, encoding="utf-8")
            contents.append(files.predictions.name)
            left_out.append(f"{files.predictions.name} columns {', '.join(removed)} (patient data)")
        ledgers = files.all_ledgers(RESULTS_STEM)
        if ledgers:
            with open(staging / "results.jsonl", "w", encoding="utf-8") as merged:
                for ledger in ledgers:
                    merged.write(ledger.read_text(encoding="utf-8"))
            contents.append("results.jsonl")
        left_out.append("evaluation.npz (per-sample truth: labels and attributes)")
        for folder in ("images", "guidance"):
            if (run_dir / folder).is_dir():
                if images:
                    shutil.copytree(run_dir / folder, staging / folder)
                    contents.append(f"{folder}/")
                else:
                    left_out.append(f"{folder}/ (derived from the dataset's images; --images includes them)")
        atomic_write_json(staging / BUNDLE_RECORD, {"format": 1, "run": name, "contents": contents,
                                                    "left_out": left_out, "images": images})
        partial = out.with_name(f".{out.name}.partial")
        with tarfile.open(partial, "w:gz") as archive:
            archive.add(staging, arcname=name)
        partial.replace(out)
    return out


def is_bundle(path: str | Path) -> bool:
    return Path(path).is_file() and str(path).endswith(BUNDLE_SUFFIX)


def open_bundle(path: str | Path, into: str | Path) -> Path:
    """Unpack a bundle into ``into/NAME`` (replacing an earlier unpacking) and return that run folder.
    Only plain files and folders inside the archive's one top folder are accepted."""
    path, into = Path(path), Path(into)
    try:
        with tarfile.open(path, "r:gz") as archive:
            members = archive.getmembers()
            tops = {Path(member.name).parts[0] for member in members if member.name}
            if len(tops) != 1:
                raise BundleError(f"{path}: not a cfbench bundle (expected one top folder, found {sorted(tops)})")
            top = tops.pop()
            for member in members:
                if not (member.isfile() or member.isdir()) or ".." in Path(member.name).parts or member.name.startswith("/"):
                    raise BundleError(f"{path}: refusing archive member {member.name!r}")
            if f"{top}/{BUNDLE_RECORD}" not in {member.name for member in members}:
                raise BundleError(f"{path}: not a cfbench bundle (no {BUNDLE_RECORD}; make one with `cfbench export`)")
            target = into / top
            if target.exists():
                shutil.rmtree(target)
            into.mkdir(parents=True, exist_ok=True)
            archive.extractall(into, members=members, filter="data")
    except tarfile.TarError as error:
        raise BundleError(f"{path}: not a readable archive ({error})") from error
    return target


def bundle_record(run_dir: str | Path) -> dict | None:
    """The bundle.json of an unpacked bundle, or None for a run folder."""
    record = Path(run_dir) / BUNDLE_RECORD
    return json.loads(record.read_text(encoding="utf-8")) if record.is_file() else None
