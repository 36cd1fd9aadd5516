"""The sample boundary (issue 22, mechanism 1): whatever one model call returns or changes, only that sample
can fail, the writer thread lives on, every write lands in the run folder, and the evaluation still runs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import pytest
import torch

from cfbench.api.model import CounterfactualModel, EditRequest, EditResult, LoadContext
from cfbench.core.storage import json_safe
from cfbench.evaluation.evaluate import evaluate_run
from cfbench.phantom.dataset import build_phantom_dataset
from cfbench.runs.generate import RunSettings, generate
from cfbench.runs.store import read_failures, read_results
from tests.helpers.datasets import write_random_dataset


def settings(data: Path, out: Path, model: str, **values) -> RunSettings:
    return RunSettings(model=model, split="holdout", data_dir=data, out=out, resolution=32, **values)


def deep(levels: int) -> list:
    value: list = []
    for _ in range(levels):
        value = [value]
    return value


def cyclic() -> dict:
    value: dict = {"a": 1}
    value["self"] = value
    return value


HOSTILE_INFO = {  # sample id -> what its info holds
    "s000": {"deep": deep(5000)},
    "s001": cyclic(),
    "s002": {"huge": 10 ** 5000},
    "s003": {"many": list(range(200_000))},
}


class HostileInfoModel(CounterfactualModel):
    """s000-s003: info that cannot be stored (see HOSTILE_INFO); s004: a lone surrogate in the explanation and
    the info; s005: raises with a lone surrogate in the message; the rest: the input."""

    name = "hostile-info"

    @classmethod
    def load(cls, context: LoadContext) -> "HostileInfoModel":
        return cls()

    def edit(self, requests: Sequence[EditRequest]) -> list[EditResult]:
        results = []
        for request in requests:
            if request.sample_id == "s005":
                raise RuntimeError("a message with a lone \udc80 surrogate")
            info = HOSTILE_INFO.get(request.sample_id, {"ok": 1})
            explanation = "bad \udc80 text" if request.sample_id == "s004" else None
            if request.sample_id == "s004":
                info = {"note\ud800": "x\udfff", "inf": float("inf"), "big": 2 ** 62}
            results.append(EditResult(image=request.image, explanation=explanation, info=info))
        return results


def test_unstorable_info_fails_only_its_sample_and_every_rerun_finishes(tmp_path):
    data = write_random_dataset(tmp_path / "data", n=7)
    run = tmp_path / "run"
    for attempt in range(2):
        report = generate(settings(data, run, "tests.torture.test_sample_boundary:HostileInfoModel", batch_size=3),
                          progress=False)
        assert len(report.failed) == 5
    results = {record["sample_id"]: record for record in read_results(run)}
    assert set(results) == {"s004", "s006"}  # the writer thread lived on after every bad record
    errors = {failure["sample_id"]: failure["error"] for failure in read_failures(run)}
    assert "nested more than 32 levels deep" in errors["s000"]
    assert "info.self contains itself (a cycle)" in errors["s001"]
    assert "info.huge is an integer of 16610 bits" in errors["s002"]
    assert "more than 100000 items" in errors["s003"]
    assert "a message with a lone \ufffd surrogate" in errors["s005"]
    assert all("model 'tests.torture.test_sample_boundary:HostileInfoModel'" in error for error in errors.values())
    stored = results["s004"]
    assert stored["explanation"] == "bad \ufffd text"
    assert stored["info"] == {"note\ufffd": "x\ufffd", "inf": None, "big": 2 ** 62}
    (run / "results.jsonl").read_bytes().decode("utf-8")  # valid UTF-8 throughout
    (run / "failures.jsonl").read_bytes().decode("utf-8")


def test_a_lone_surrogate_explanation_does_not_stop_eval(tmp_path):
    data = build_phantom_dataset(tmp_path / "data", 6, seed=5, resolution=32, fractions={"holdout": 1.0},
                          progress=False)
    run = tmp_path / "run"
    generate(settings(data, run, "tests.torture.test_sample_boundary:SurrogateModel"), progress=False)
    report = evaluate_run(run, evaluator="none", progress=False)
    assert report["n_samples"] == 6


class SurrogateModel(CounterfactualModel):
    name = "surrogate"

    @classmethod
    def load(cls, context):
        return cls()

    def edit(self, requests):
        return [EditResult(image=r.image, explanation="\ud83d alone") for r in requests]


def test_json_safe_pairs_valid_surrogates_and_keeps_ordinary_values():
    assert json_safe({"a": [1, 2.5, "\ud83d\ude00", None, True]}) == {"a": [1, 2.5, "\U0001f600", None, True]}
    assert json_safe(deep(31)) == deep(31)
    shared = [1]
    assert json_safe({"x": shared, "y": shared}) == {"x": [1], "y": [1]}  # shared, not cyclic
    with pytest.raises(TypeError, match="value is a set"):
        json_safe({1, 2})


class WanderingModel(CounterfactualModel):
    """Changes the working directory in load and in every edit, and torch's default dtype, grad mode and threads."""

    name = "wandering"

    @classmethod
    def load(cls, context):
        os.chdir(context.options["elsewhere"])
        return cls()

    def edit(self, requests):
        os.chdir(self.elsewhere)
        torch.set_default_dtype(torch.float64)
        torch.set_grad_enabled(True)
        torch.set_num_threads(1)
        return [EditResult(image=r.image, sample_id=r.sample_id) for r in requests]

    @property
    def elsewhere(self) -> str:
        return os.environ["CFBENCH_TEST_ELSEWHERE"]


def test_a_model_that_changes_process_state_cannot_divert_writes_or_break_eval(tmp_path, monkeypatch, caplog):
    build_phantom_dataset(tmp_path / "data", 6, seed=6, resolution=32, fractions={"holdout": 1.0},
                          progress=False)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.setenv("CFBENCH_TEST_ELSEWHERE", str(elsewhere))
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    torch.set_grad_enabled(False)
    try:
        generate(RunSettings(model="tests.torture.test_sample_boundary:WanderingModel", split="holdout",
                             data_dir=Path("data"), out=Path("run"), resolution=32, batch_size=2,
                             options={"elsewhere": str(elsewhere)}), progress=False)
        assert Path.cwd() == tmp_path
        assert torch.get_default_dtype() == torch.float32 and not torch.is_grad_enabled()
        assert torch.get_num_threads() == threads
    finally:
        torch.set_default_dtype(torch.float32)
        torch.set_grad_enabled(True)
    assert list(elsewhere.iterdir()) == []
    assert len(read_results(tmp_path / "run")) == 6 and len(list((tmp_path / "run" / "images").iterdir())) == 6
    assert "changed the process's working directory; cfbench put it back" in caplog.text
    assert "torch default dtype" in caplog.text


def test_evaluation_runs_in_float32_whatever_the_default_dtype(tmp_path):

    data = build_phantom_dataset(tmp_path / "data", 6, seed=7, resolution=32, fractions={"holdout": 1.0},
                          progress=False)
    run = tmp_path / "run"
    generate(settings(data, run, "identity"), progress=False)
    torch.set_default_dtype(torch.float64)
    try:
        report = evaluate_run(run, evaluator="auto", progress=False)
        assert torch.get_default_dtype() == torch.float64  # put back afterwards
    finally:
        torch.set_default_dtype(torch.float32)
    assert report["metrics"]["mae_to_target"]["n"] == 6


class ShuffledModel(CounterfactualModel):
    """Returns the batch reversed, each result marked with its own sample id."""

    name = "shuffled"

    @classmethod
    def load(cls, context):
        return cls()

    def edit(self, requests):
        return [EditResult(image=r.image, sample_id=r.sample_id) for r in reversed(requests)]


def test_results_returned_in_another_order_are_caught_by_their_sample_id(tmp_path):
    data = write_random_dataset(tmp_path / "data", n=4)
    report = generate(settings(data, tmp_path / "run", "tests.torture.test_sample_boundary:ShuffledModel",
                               batch_size=2), progress=False)
    assert len(report.failed) == 4 and report.generated == 0
    assert "the result is marked as sample 's001'" in report.failed[0]
    assert "in the order of the requests" in report.failed[0]


def test_every_built_in_adapter_marks_its_results_with_the_sample_id():
    import ast

    models = Path(__file__).resolve().parents[2] / "models"
    unmarked = []
    for path in sorted(models.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "EditResult":
                if "sample_id" not in {keyword.arg for keyword in node.keywords}:
                    unmarked.append(f"{path.name}:{node.lineno}")
    assert unmarked == []
