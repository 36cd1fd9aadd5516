"""The preflight (`cfbench check`, and the first step of run/generate/eval): blockers are found before any
work, one line per item."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cfbench.cli import main
from cfbench.evaluation import weights as weights_manager
from cfbench.evaluation.preflight import PreflightRequest, preflight, trust_state


@pytest.fixture
def empty_home(tmp_path, monkeypatch):
    """A $HOME without torchxrayvision's weights cache."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    return home


def _place_weights(key: str) -> None:
    path = weights_manager.path_for(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not really weights, " + key.encode())


def test_missing_evaluator_weights_stop_run_before_generation(random_dataset, tmp_path, empty_home, capsys):
    out = tmp_path / "run"
    status = main(["--quiet", "run", "--model", "identity", "--split", "holdout", "--data", str(random_dataset),
                   "--out", str(out), "--resolution", "32"])
    assert status == 2
    error = capsys.readouterr().err
    for key in ("xrv-densenet121-all", "xrv-race", "xrv-age"):  # the data records race: no sex model
        assert f"BLOCKER  evaluator {key}" in error and f"cfbench weights fetch {key}" in error
    assert "xrv-sex" not in error
    assert not out.exists()  # nothing generated, no folder made


def test_check_lists_one_line_per_item_and_exits_non_zero_on_a_blocker(random_dataset, tmp_path, empty_home,
                                                                       capsys):
    for key in ("xrv-densenet121-all", "xrv-race"):
        _place_weights(key)
    weights_manager_path = weights_manager.path_for("xrv-race")
    from cfbench.evaluation.weights_trust import trust

    trust(weights_manager_path)
    args = ["check", "--model", "identity", "--split", "holdout", "--data", str(random_dataset),
            "--out", str(tmp_path / "run"), "--resolution", "32"]
    assert main(args) == 1
    lines = capsys.readouterr().out.splitlines()
    by_name = {line[9:39].strip(): line[:8].strip() for line in lines[:-1]}
    assert by_name == {"dataset": "OK", "split holdout": "OK", "model": "OK", "model weights": "OK",
                       "evaluator xrv-densenet121-all": "WARN", "evaluator xrv-race": "OK",
                       "evaluator xrv-age": "BLOCKER", "disk": "OK", "device": "OK"}
    assert lines[-1].startswith("1 blocker(s), 1 warning(s)")
    _place_weights("xrv-age")
    assert main(args) == 0
    assert capsys.readouterr().out.splitlines()[-1].endswith("ready to run")
    # a trusted file replaced afterwards is a blocker, as it would be when the evaluator loads it
    weights_manager_path.write_bytes(b"something else")
    item = trust_state("xrv-race")
    assert item.status == "blocker" and "cfbench weights trust xrv-race" in item.detail


def test_check_names_skipped_rows_missing_model_weights_and_a_broken_plugin(random_dataset, tmp_path, empty_home):
    csv = random_dataset / "instructions.csv"
    lines = csv.read_text().splitlines()
    header = lines[0].split(",")
    bad = lines[1].split(",")
    bad[header.index("sample_id")] = "s001"  # a duplicate id
    csv.write_text("\n".join(lines + [",".join(bad)]) + "\n")
    items = preflight(PreflightRequest(model="instructx2x", split="holdout", data_dir=random_dataset,
                                       out=tmp_path / "run", resolution=32, evaluator="none"))
    found = {item.name: item for item in items}
    assert found["split holdout"].detail == "6 rows"
    assert found["skipped rows"].status == "warn" and "duplicate sample id 's001'" in found["skipped rows"].detail
    assert found["model weights"].status == "blocker" and "instructx2x" in found["model weights"].detail
    assert found["evaluator"].status == "ok"
    missing = preflight(PreflightRequest(model="identity", split="holdout", data_dir=tmp_path / "nowhere"))
    assert missing[0].status == "blocker" and "nowhere" in missing[0].detail


def test_suite_member_keys_agree_with_the_evaluator_classes():
    from cfbench.evaluation.xrv import DEFAULT_DENSENET_WEIGHTS, MEMBER_CLASSES

    for member, cls in MEMBER_CLASSES.items():
        key = getattr(cls, "weights_key", None)
        expected = weights_manager.key_for_xrv_weights(DEFAULT_DENSENET_WEIGHTS) if member == "pathology" else key
        assert weights_manager.SUITE_MEMBER_KEYS[member] == expected


def test_check_verb_imports_no_torch_scipy_or_pandas():
    code = ("import sys; import cfbench.cli.check, cfbench.evaluation.preflight;"
            "print(sorted(m for m in ('torch', 'scipy', 'pandas') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
