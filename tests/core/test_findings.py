import pytest

from cfbench.core.findings import Operation, parse_instruction, render_instruction


@pytest.mark.parametrize(
    "operations, text",
    [
        ([Operation("add", "pleural effusion", "left", None, "small")], "Add the finding of small left pleural effusion"),
        ([Operation("remove", "edema")], "Remove the finding of edema"),
        ([Operation("change", "cardiomegaly", None, "mild", "moderate")],
         "Change the level of cardiomegaly from mild to moderate"),
        ([Operation("remove", "pneumothorax", "right"), Operation("add", "atelectasis", "left base")],
         "Remove the finding of right pneumothorax. Add the finding of left base atelectasis"),
        ([Operation("add", "edema", None, None, "moderate to large")], "Add the finding of moderate to large edema"),
        ([Operation("change", "pleural effusion", "bilateral", "small", "large")],
         "Change the level of bilateral pleural effusion from small to large"),
    ],
)
def test_render_and_parse_round_trip(operations, text):
    assert render_instruction(operations) == text
    assert parse_instruction(text) == operations
    assert parse_instruction(text + ".") == operations  # a final period is tolerated


def test_chexpert_column_mapping():
    assert Operation("add", "pleural effusion").chexpert_column == "Pleural Effusion"
    assert Operation("add", "vascular congestion").chexpert_column is None


def test_bad_input_is_rejected_with_the_sentence():
    with pytest.raises(ValueError, match="does not follow the grammar: 'Make it worse'"):
        parse_instruction("Add the finding of edema. Make it worse")
    with pytest.raises(ValueError, match="operation kind"):
        Operation("grow", "edema")
    with pytest.raises(ValueError, match="needs level_from and level_to"):
        render_instruction([Operation("change", "edema")])
