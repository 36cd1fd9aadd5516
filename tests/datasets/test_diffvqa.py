"""Every difference-answer form listed in REFERENCE.md §1 (Medical-Diff-VQA), parsed into operations."""

import pytest

from cfbench.core.findings import DIFF_VQA_LEVEL_WORDS, LEVEL_WORDS, Operation, parse_instruction
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


def test_the_level_vocabulary_is_diff_vqa_complete_list():
    """All 18 level entries of Diff-VQA's generator (code/libs/level_lib.csv), plus the two phrases seen only in
    MIMIC-EDIT-INSTRUCTION; each parses on both sides of a change, alone and joined with another by a space."""
    assert set(DIFF_VQA_LEVEL_WORDS) == {
        "moderately", "moderate", "acute", "mildly", "mild", "small", "severe", "moderate to large",
        "moderate to severe", "mild to moderate", "minimal", "subtle", "massive", "minimally", "increasing",
        "decreasing", "minor", "trace"}
    assert set(LEVEL_WORDS) == set(DIFF_VQA_LEVEL_WORDS) | {"large", "small to moderate"} and len(LEVEL_WORDS) == 20
    assert [len(w) for w in LEVEL_WORDS] == sorted((len(w) for w in LEVEL_WORDS), reverse=True)
    for word in LEVEL_WORDS:
        for source, target in ((word, "severe"), ("trace", word), (f"minimal {word}", "massive")):
            parsed = parse_difference_answer(f"the level of edema has changed from {source} to {target}. ")
            if " to " not in word:  # one-word phrases have a single reading
                assert parsed.operations == [Operation("change", "edema", None, source, target)], (source, target)
                assert parsed.ambiguous == []
            assert parsed.unknown == [], (source, target)
        assert parse_instruction(f"Add the finding of {word} left pleural effusion")[0].level_to == word


@pytest.mark.parametrize("levels, taken, other", [
    ("small to mild to moderate", ("small", "mild to moderate"), "'small to mild' -> 'moderate'"),
    ("small to moderate to large", ("small", "moderate to large"), "'small to moderate' -> 'large'"),
    ("mild to moderate to severe", ("mild", "moderate to severe"), "'mild to moderate' -> 'severe'"),
])
def test_ambiguous_level_splits_are_recorded(levels, taken, other):
    parsed = parse_difference_answer(f"the level of edema has changed from {levels}. ")
    assert parsed.operations == [Operation("change", "edema", None, *taken)]
    assert len(parsed.ambiguous) == 1 and other in parsed.ambiguous[0]
    assert f"read as {taken[0]!r} -> {taken[1]!r}" in parsed.ambiguous[0]
    assert parse_difference_answer("the level of edema has changed from mild to moderate. ").ambiguous == []


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


def test_the_dataset_card_lists_ambiguous_level_splits(tmp_path):
    import pandas as pd

    from cfbench.datasets.card import write_dataset_card
    from cfbench.datasets.diffvqa import read_difference_pairs

    rows = [{"study_id": "2", "subject_id": "1", "ref_id": "1", "question_type": "difference",
             "question": "what has changed compared to the reference image?",
             "answer": "the level of edema has changed from small to mild to moderate. ", "split": "train"}]
    pd.DataFrame(rows).to_csv(tmp_path / "q.csv", index=False)
    report = read_difference_pairs(tmp_path / "q.csv")
    assert sum(report.ambiguous.values()) == 1
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "instructions.csv").write_text("instruction,past_dicom_id,current_dicom_id,split\n")
    card = write_dataset_card(tmp_path / "out", "t", {"ambiguous_level_splits": dict(report.ambiguous)}).read_text()
    assert "Ambiguous level changes" in card
    assert "'small to mild to moderate': read as 'small' -> 'mild to moderate'; also 'small to mild' -> 'moderate' (1)" in card
