import numpy as np
import pytest

from cfbench.api.model import EditRequest, EditResult, ResultValidationError, validate_result


def request(shape=(16, 16)):
    return EditRequest(sample_id="s001", image=np.full(shape, 0.5, dtype=np.float32), instruction="Remove the finding of edema")


def test_valid_result_passes():
    good = EditResult(image=np.zeros((16, 16), np.float32), guidance_map=np.ones((16, 16), np.float32),
                      explanation="less fluid")
    assert validate_result(good, request(), "m") is good


@pytest.mark.parametrize(
    "result, message",
    [
        (EditResult(image=np.zeros((16, 8), np.float32)), "shape (16, 8), expected (16, 16)"),
        (EditResult(image=np.zeros((16, 16, 1), np.float32)), "shape (16, 16, 1)"),
        (EditResult(image=np.zeros((16, 16), np.float64)), "must be float32, got float64"),
        (EditResult(image=np.full((16, 16), np.nan, np.float32)), "256 non-finite values"),
        (EditResult(image=np.full((16, 16), np.inf, np.float32)), "non-finite"),
        (EditResult(image=np.full((16, 16), 1.5, np.float32)), "must lie in [0, 1], got [1.5, 1.5]"),
        (EditResult(image=np.full((16, 16), -0.01, np.float32)), "must lie in [0, 1]"),
        (EditResult(image=np.zeros((16, 16), np.float32), guidance_map=np.full((16, 16), 2.0, np.float32)),
         "guidance_map values must lie in [0, 1]"),
        (EditResult(image=np.zeros((16, 16), np.float32), guidance_map=np.zeros((8, 8), np.float32)),
         "guidance_map has shape (8, 8)"),
        (EditResult(image=np.zeros((16, 16), np.float32), explanation=3), "explanation must be str"),
        (np.zeros((16, 16), np.float32), "must return EditResult objects, got ndarray"),
        (EditResult(image=[[0.0]]), "image must be a numpy array, got list"),
    ],
)
def test_invalid_results_name_model_and_sample(result, message):
    with pytest.raises(ResultValidationError) as raised:
        validate_result(result, request(), "my-model")
    text = str(raised.value)
    assert "model 'my-model'" in text and "sample 's001'" in text
    assert message in text
