"""MIMIC-CXR / MIMIC-IV rules on fixtures in the real schemas (REFERENCE.md §1)."""

import pandas as pd
import pytest

from cfbench.datasets.mimic_tables import (
    age_at_study,
    image_path,
    our_split,
    pa_images,
    race_group,
    read_csv,
    study_time_key,
    subject_race,
)


def test_race_three_group_rule_v1_and_v2():
    v1 = pd.DataFrame({"subject_id": ["1", "1", "2", "3", "4", "4", "5"],
                       "ethnicity": ["WHITE", "WHITE", "BLACK/AFRICAN AMERICAN", "HISPANIC/LATINO", "ASIAN", "WHITE",
                                     "UNABLE TO OBTAIN"]})
    assert subject_race(v1).to_dict() == {"1": "White", "2": "Black"}  # 4 has two values; 3 and 5 not mapped
    v2 = pd.DataFrame({"subject_id": ["6", "7", "8"],
                       "race": ["ASIAN - CHINESE", "WHITE - OTHER EUROPEAN", "BLACK/CAPE VERDEAN"]})
    assert subject_race(v2).to_dict() == {"6": "Asian", "7": "White", "8": "Black"}
    assert race_group("AMERICAN INDIAN/ALASKA NATIVE") is None
    with pytest.raises(ValueError, match="neither a 'race'"):
        subject_race(pd.DataFrame({"subject_id": ["1"], "language": ["ENGLISH"]}))


def test_age_at_study_and_time_order():
    assert age_at_study("52", "2180", "21830412") == 55.0 and age_at_study(70, 2150, 21491231) == 69.0
    assert age_at_study("", "2180", "21830412") is None
    # StudyTime without zero padding: 80556.875 is 08:05:56.875, earlier than 101010
    assert study_time_key("21800101", "80556.875") < study_time_key("21800101", "101010")
    assert study_time_key("21791231", "235959") < study_time_key("21800101", "0")


def test_pa_filter_paths_and_splits(tmp_path):
    metadata = pd.DataFrame({
        "dicom_id": ["a", "b", "c", "d"], "subject_id": ["10000032"] * 4, "study_id": ["50414267"] * 4,
        "PerformedProcedureStepDescription": ["CHEST (PA AND LAT)"] * 4, "ViewPosition": ["PA", "LATERAL", "", "AP"],
        "Rows": ["3056"] * 4, "Columns": ["2544"] * 4, "StudyDate": ["21800506"] * 4, "StudyTime": ["213014.531"] * 4,
        "ProcedureCodeSequence_CodeMeaning": ["CHEST (PA AND LAT)"] * 4, "ViewCodeSequence_CodeMeaning": ["postero-anterior"] * 4,
        "PatientOrientationCodeSequence_CodeMeaning": ["Erect", "Erect", "", ""]})
    metadata.to_csv(tmp_path / "mimic-cxr-2.0.0-metadata.csv.gz", index=False)
    table = read_csv(tmp_path / "mimic-cxr-2.0.0-metadata.csv.gz", ("dicom_id", "ViewPosition", "StudyDate"))
    assert pa_images(table)["dicom_id"].tolist() == ["a"]
    assert image_path("/m", "10000032", "50414267", "a").as_posix() == "/m/files/p10/p10000032/s50414267/a.jpg"
    assert our_split("19000123", "train") == "holdout" and our_split("10000032", "validate") == "val"
    assert our_split("11000000", "test") == "test"
    with pytest.raises(ValueError, match="unknown official split"):
        our_split("10000032", "dev")
    with pytest.raises(ValueError, match=r"missing column\(s\) \['split'\]"):
        read_csv(tmp_path / "mimic-cxr-2.0.0-metadata.csv.gz", ("split",))
