"""metrics.json is strict JSON: a number that is not finite is null, with the reason beside it."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from cfbench.evaluation.results import write_metrics


def _strict_load(path):
    def refuse(token):
        raise ValueError(f"not JSON: {token}")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_non_finite_numbers_become_null_with_their_reason(tmp_path):
    report = {"metrics": {"fid": {"value": math.nan, "ci_low": 1.5, "ci_high": math.inf, "n": 3},
                          "kl_divergence": {"value": np.float32(0.25), "per_finding": [0.1, np.nan, 0.3]}},
              "undefined": {"fid": "singular covariance at n=3"}, "n_samples": np.int64(3)}
    write_metrics(tmp_path, report)
    text = (tmp_path / "metrics.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    data = _strict_load(tmp_path / "metrics.json")
    fid = data["metrics"]["fid"]
    assert fid["value"] is None and fid["ci_high"] is None and fid["ci_low"] == 1.5
    assert fid["undefined"] == {"value": "not a finite number (nan)", "ci_high": "not a finite number (inf)"}
    kl = data["metrics"]["kl_divergence"]
    assert kl["value"] == pytest.approx(0.25) and kl["per_finding"] == [0.1, None, 0.3]
    assert kl["undefined"] == {"per_finding[1]": "not a finite number (nan)"}
    assert data["undefined"] == {"fid": "singular covariance at n=3"} and data["n_samples"] == 3


def test_an_object_json_cannot_hold_is_refused_not_written(tmp_path):
    with pytest.raises(TypeError):
        write_metrics(tmp_path, {"metrics": {"x": {"value": object()}}})
    assert not (tmp_path / "metrics.json").exists()
