"""MIMIC-EDIT-INSTRUCTION rebuilt end to end from a miniature PhysioNet download in the real schemas."""

import json

import pandas as pd
import pytest

from cfbench.cli import main
from cfbench.core.findings import Operation
from cfbench.datasets import pair_engine as pair_build
from cfbench.datasets.edit_dataset import EditDataset
from cfbench.datasets.mimic_build import MimicSources, build_mimic_dataset, plan_mimic_pairs
from cfbench.datasets.pair_engine import PairSettings, read_outcomes
from tests.helpers.mimic_fixtures import MISSING_IMAGE_STUDY, dicom_id, write_mimic_release


def sources_of(release) -> MimicSources:
    return MimicSources(release.mimic_cxr, release.diff_vqa, release.mimic_iv)


def by_subject(plan):
    return {sample.subject_id: sample for sample in plan.samples}


@pytest.mark.parametrize("mimic_iv_version", [1, 2])
def test_plan_applies_every_rule(tmp_path, mimic_iv_version):
    plan = plan_mimic_pairs(sources_of(write_mimic_release(tmp_path, mimic_iv_version)))
    assert plan.funnel["difference pairs in Diff-VQA"] == 8
    assert plan.funnel["dropped: nothing has changed"] == 1
    assert plan.funnel["dropped: a study has no PA image"] == 1
    assert plan.funnel["reordered by study date (operations inverted)"] == 1
    samples = by_subject(plan)
    assert set(samples) == {"10000032", "19000001", "11000002", "12000003", "15000006", "16000007"}

    effusion = samples["10000032"]
    assert effusion.instruction == "Add the finding of left pleural effusion"  # side from the area question
    assert (effusion.past_study_id, effusion.current_study_id) == ("50414267", "53189527")
    assert effusion.past_dicom_id == dicom_id("50414267", "PA")  # the PA image, not the lateral
    assert effusion.labels["Pleural Effusion"] == 1.0 and effusion.labels["Atelectasis"] is None
    assert effusion.past_labels["No Finding"] == 1.0
    assert (effusion.age, effusion.sex, effusion.race, effusion.split) == (52.0, "F", "White", "train")

    holdout = samples["19000001"]  # p19; same day, 80556.875 (08:05) before 101010 (10:10)
    assert holdout.split == "holdout" and holdout.current_study_id == "51000002"
    assert holdout.operations == [Operation("change", "cardiomegaly", None, "mild", "moderate"),
                                  Operation("remove", "edema")]
    assert holdout.instruction == "Change the level of cardiomegaly from mild to moderate. Remove the finding of edema"
    assert (holdout.age, holdout.race) == (72.0, "Black")
    assert holdout.anchor_age == 70.0  # MIMIC-IV's anchor_age as is, for --age-reference anchor (age: at the study)

    assert samples["11000002"].split == "test" and samples["11000002"].race == "Asian"
    assert [op.finding for op in samples["11000002"].operations] == ["consolidation", "pneumonia"]

    reordered = samples["12000003"]  # Diff-VQA's "main" study is the earlier one: swapped, add -> remove
    assert (reordered.past_study_id, reordered.current_study_id) == ("53000002", "53000001")
    assert reordered.instruction == "Remove the finding of atelectasis"
    assert reordered.labels["Atelectasis"] == 0.0 and reordered.past_labels["Atelectasis"] == 1.0
    assert reordered.split == "val" and reordered.age == 63.0

    assert samples["16000007"].race is None  # two different recorded races
    assert plan.differences.unknown["foo opacity"] == 1
    assert plan.differences.unparsed["the patient looks better"] == 1


def test_target_report_is_the_later_studys_impression(tmp_path):
    release = write_mimic_release(tmp_path)
    plan = plan_mimic_pairs(MimicSources(release.mimic_cxr, release.diff_vqa, release.mimic_iv, release.reports))
    samples = by_subject(plan)
    assert samples["10000032"].target_report == "Findings of study 53189527."
    assert samples["12000003"].target_report == "Heart size is normal. There is a new opacity in study 53000001."
    assert samples["11000002"].target_report is None  # no report file
    assert plan.funnel["kept without a target report (no report file or no impression)"] == 1
    assert plan_mimic_pairs(sources_of(release)).samples[0].target_report is None  # reports not given


def test_missing_table_names_every_path_tried(tmp_path):
    release = write_mimic_release(tmp_path)
    (release.mimic_iv / "hosp" / "patients.csv.gz").unlink()
    with pytest.raises(FileNotFoundError, match=r"patients.csv\(.gz\) not found; looked for: .*hosp/patients.csv.gz"):
        plan_mimic_pairs(sources_of(release))


def test_cli_build_then_run(tmp_path, capsys):
    release = write_mimic_release(tmp_path)
    out = tmp_path / "dataset"
    status = main(["--quiet", "data", "build", "mimic", "--mimic-cxr", str(release.mimic_cxr),
                   "--diff-vqa", str(release.diff_vqa), "--mimic-iv", str(release.mimic_iv),
                   "--ms-cxr", str(release.ms_cxr), "--reports", str(release.reports), "--out", str(out),
                   "--resolution", "64", "--workers", "2"])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert "wrote 5 of 6 MIMIC-EDIT-INSTRUCTION pairs" in captured.out
    missing = release.mimic_cxr / "files" / "p15" / "p15000006" / f"s{MISSING_IMAGE_STUDY}"
    assert str(missing / f"{dicom_id(MISSING_IMAGE_STUDY, 'PA')}.jpg") in captured.err  # logged with its path

    table = pd.read_csv(out / "instructions.csv", dtype=str)
    assert list(table.columns[:4]) == ["instruction", "past_dicom_id", "current_dicom_id", "split"]
    assert sorted(table["split"]) == ["holdout", "test", "train", "train", "val"]
    assert (pd.to_numeric(table["registration_mi"]) < -0.88).all()
    assert "anchor_age" in table.columns and table["anchor_age"].notna().all()
    info = json.loads((out / "dataset.json").read_text())
    assert info["funnel"]["written"] == 5 and info["funnel"]["failed: missing or unreadable image"] == 1
    card = (out / "DATASET_CARD.md").read_text()
    assert f"images {info['resolution']} px" in card and "None px" not in card
    assert "| samples | 2 | 1 | 1 | 1 | 5 |" in card and "| – change | 0 | 1 | 0 | 0 | 1 |" in card
    assert "foo opacity (1)" in card and "Mattes mutual information of 5 registered pairs" in card
    stats = json.loads((out / "dataset_stats.json").read_text())
    assert stats["total"]["operations_add"] == 4 and stats["total"]["operations_remove"] == 2
    assert (out / "pseudo_masks.npz").is_file()

    holdout = EditDataset(out, "holdout", resolution=64)
    assert len(holdout) == 1 and holdout.past_image(holdout.samples[0]).shape == (64, 64)
    assert holdout.samples[0].target_report == "Findings of study 51000002."
    status = main(["--quiet", "run", "--model", "identity", "--split", "holdout", "--data", str(out),
                   "--resolution", "64", "--out", str(tmp_path / "run"), "--evaluator", "none", "--bootstrap", "10"])
    assert status == 0, capsys.readouterr().err
    assert len(list((tmp_path / "run").rglob("*.png"))) >= 1


def count_processed(monkeypatch) -> list[str]:
    processed = []
    original = pair_build.process_pair

    def counting(job, out, settings):
        processed.append(job.pair_id)
        return original(job, out, settings)

    monkeypatch.setattr(pair_build, "process_pair", counting)
    return processed


def test_build_resumes_and_retries_failures(tmp_path, monkeypatch):
    release = write_mimic_release(tmp_path)
    out, settings = tmp_path / "dataset", PairSettings(resolution=48)
    build_mimic_dataset(sources_of(release), out, settings, progress=False)
    ledger = out / "build" / "pairs.jsonl"
    lines = ledger.read_text().splitlines(keepends=True)
    assert len(lines) == 6
    # a crash after two pairs: the ledger holds two records (and a torn third line)
    ledger.write_text("".join(lines[:2]) + lines[2][:15])
    processed = count_processed(monkeypatch)
    info = build_mimic_dataset(sources_of(release), out, settings, progress=False)
    assert len(processed) == 4 and info["written"] == 5
    assert len(read_outcomes(out)) == 6

    # nothing left but the failed pair, which is retried; once its image exists it is written
    processed.clear()
    build_mimic_dataset(sources_of(release), out, settings, progress=False)
    assert len(processed) == 1
    source = release.mimic_cxr / "files" / "p10" / "p10000032" / "s53189527" / f"{dicom_id('53189527', 'PA')}.jpg"
    target = release.mimic_cxr / "files" / "p15" / "p15000006" / f"s{MISSING_IMAGE_STUDY}"
    (target / f"{dicom_id(MISSING_IMAGE_STUDY, 'PA')}.jpg").write_bytes(source.read_bytes())
    info = build_mimic_dataset(sources_of(release), out, settings, progress=False)
    assert info["written"] == 6 and not info["failed"]

    with pytest.raises(ValueError, match="resolution: 48 before, 64 now"):
        build_mimic_dataset(sources_of(release), out, PairSettings(resolution=64), progress=False)


def test_mi_threshold_discards_and_a_looser_one_redoes_only_those(tmp_path, monkeypatch):
    release = write_mimic_release(tmp_path)
    out = tmp_path / "dataset"
    strict = build_mimic_dataset(sources_of(release), out, PairSettings(resolution=48, mi_threshold=-5.0), progress=False)
    assert strict["written"] == 0 and strict["funnel"]["discarded: registration MI > -5.0"] == 5
    assert not (out / "current").exists() or not any((out / "current").iterdir())
    recorded = read_outcomes(out)
    assert all(o.mutual_information < -0.88 for o in recorded.values() if o.status == "discarded")
    processed = count_processed(monkeypatch)
    loose = build_mimic_dataset(sources_of(release), out, PairSettings(resolution=48), progress=False)
    assert loose["written"] == 5 and len(processed) == 6  # the 5 discarded ones + the failed one
    processed.clear()
    # a stricter threshold later needs no new work: written pairs above it are simply left out
    median = sorted(o.mutual_information for o in read_outcomes(out).values() if o.mutual_information)[2]
    stricter = build_mimic_dataset(sources_of(release), out, PairSettings(resolution=48, mi_threshold=median), progress=False)
    assert processed == [pair for pair in processed if "03567e" in pair]  # only the failed pair is retried
    assert stricter["written"] == 3
    assert len(pd.read_csv(out / "instructions.csv")) == 3
