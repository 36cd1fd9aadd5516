"""Every difference-answer form listed in REFERENCE.md §1 (Medical-Diff-VQA), parsed into operations."""

import pytest

from cfbench.core.findings import Operation
from cfbench.datasets.diffvqa import area_location, parse_difference_answer, split_items


def test_single_addition_with_trailing_space():
    parsed = parse_difference_answer("the main image has an additional finding of pleural effusion than the reference image. ")
    assert parsed.operations == [Operation("add", "pleural effusion")]
    assert parsed.unknown == [] and parsed.unparsed == [] and not parsed.nothing_changed


def test_multiple_additions_with_oxford_and_two_items():
    three = parse_difference_answer(
        "the main image has additional findings of edema, atelectasis, and pneumonia than the reference image. ")
    assert [op.finding for op in three.operations] == ["edema", "atelectasis", "pneumonia"]
    two = parse_difference_answer(
        "the main image has additional findings of consolidation, and pneumonia than the reference image. ")
    assert two.operations == [Operation("add", "consolidation"), Operation("add", "pneumonia")]


def test_missing_findings_singular_and_plural():
    one = parse_difference_answer("the main image is missing the finding of edema than the reference image. ")
    assert one.operations == [Operation("remove", "edema")]
    many = parse_difference_answer(
        "the main image is missing the findings of cardiomegaly, and vascular congestion than the reference image. ")
    assert many.operations == [Operation("remove", "cardiomegaly"), Operation("remove", "vascular congestion")]


@pytest.mark.parametrize("levels, expected", [
    ("mild to moderate", ("mild", "moderate")),
    ("small to moderate to large", ("small", "moderate to large")),
    ("moderate to large to small", ("moderate to large", "small")),
])
def test_level_changes_including_several_level_words(levels, expected):
    parsed = parse_difference_answer(f"the level of pleural effusion has changed from {levels}. ")
    assert parsed.operations == [Operation("change", "pleural effusion", None, *expected)]
    assert parsed.unknown == []


def test_all_clauses_in_order_and_area_question():
    answer = ("the level of edema has changed from mild to moderate. "
              "the main image has an additional finding of pneumothorax than the reference image. "
              "the main image is missing the finding of atelectasis than the reference image. ")
    parsed = parse_difference_answer(answer, "what has changed in the left lung area?")
    assert parsed.operations == [Operation("change", "edema", "left", "mild", "moderate"),
                                 Operation("add", "pneumothorax", "left"),
                                 Operation("remove", "atelectasis", "left")]
    assert area_location("what has changed compared to the reference image?") is None
    assert area_location("what has changed in the bibasilar area?") == "bibasilar"


def test_nothing_changed_and_unknown_phrases_are_reported():
    nothing = parse_difference_answer("nothing has changed.")
    assert nothing.nothing_changed and nothing.operations == []
    odd = parse_difference_answer("the main image has an additional finding of flux capacitor than the reference image. "
                                  "the patient looks happier. the level of edema has changed from sort of to mild. ")
    assert odd.operations[0] == Operation("add", "flux capacitor")  # kept, and reported
    assert "flux capacitor" in odd.unknown and "sort of" in odd.unknown
    assert odd.unparsed == ["the patient looks happier"]


def test_split_items():
    assert split_items("a, b, and c") == ["a", "b", "c"]
    assert split_items("a and b") == ["a", "b"]
    assert split_items("lung opacity") == ["lung opacity"]


def test_read_pairs_from_the_real_schema(tmp_path):
    import pandas as pd

    from cfbench.datasets.diffvqa import read_difference_pairs

    rows = [
        # study_id, subject_id, ref_id, question_type, question, answer, split
        ("50000002", "10000001", "50000001", "difference", "what has changed compared to the reference image?",
         "the main image has additional findings of pleural effusion, and edema than the reference image. ", "train"),
        ("50000002", "10000001", "50000001", "difference", "what has changed in the left lung area?",
         "the main image has an additional finding of pleural effusion than the reference image. ", "train"),
        ("50000002", "10000001", "50000001", "presence", "is there evidence of edema in this image?", "yes", "train"),
        ("50000004", "10000003", "50000003", "difference", "what has changed compared to the reference image?",
         "nothing has changed.", "test"),
        ("50000006", "10000005", "50000005", "difference", "what has changed compared to the reference image?",
         "the main image is missing the finding of pulmonary edema than the reference image. "
         "the main image has an additional finding of unobtainium than the reference image. ", "train"),
    ]
    path = tmp_path / "mimic_pair_questions.csv"
    pd.DataFrame(rows, columns=["study_id", "subject_id", "ref_id", "question_type", "question", "answer", "split"]).to_csv(
        path, index=False)
    report = read_difference_pairs(path)
    assert report.rows_read == 4  # difference questions only
    by_study = {pair.study_id: pair for pair in report.pairs}
    assert by_study["50000002"].operations == [Operation("add", "pleural effusion", "left"), Operation("add", "edema")]
    assert by_study["50000004"].nothing_changed and by_study["50000004"].split == "test"
    assert by_study["50000006"].operations == [Operation("remove", "edema"), Operation("add", "unobtainium")]
    assert report.unknown == {"unobtainium": 1}
    pd.DataFrame({"study_id": ["1"]}).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(ValueError, match="missing column"):
        read_difference_pairs(tmp_path / "bad.csv")
