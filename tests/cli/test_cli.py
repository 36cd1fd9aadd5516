import json
import re

import pytest

from cfbench.cli import main


def test_run_generates_and_evaluates(random_dataset, tmp_path, capsys):
    out = tmp_path / "run"
    status = main(["--quiet", "run", "--model", "identity", "--split", "holdout", "--data", str(random_dataset),
                   "--resolution", "32", "--out", str(out), "--limit", "4", "--evaluator", "none"])
    printed = capsys.readouterr().out
    assert status == 0
    assert "samples: 4 in scope, 0 already done, 4 generated now, 0 failed" in printed
    assert "mae_to_target" in printed
    assert json.loads((out / "metrics.json").read_text())["n_samples"] == 4


def test_default_run_folder_and_data_dir_from_config(random_dataset, isolated_settings, capsys):
    assert main(["config", "set", "data_dir", str(random_dataset)]) == 0
    assert main(["--quiet", "generate", "--model", "identity", "--split", "holdout", "--resolution", "32"]) == 0
    expected = isolated_settings / "runs" / "identity-holdout-seed0"
    assert (expected / "manifest.json").is_file()
    shown = capsys.readouterr().out
    assert f"run folder: {expected}" in shown
    main(["config"])
    table = capsys.readouterr().out
    assert re.search(rf"^data_dir +{re.escape(str(random_dataset))} +from file", table, re.M)
    assert f"from file {isolated_settings / 'config.toml'}" in table and "from env CFBENCH_RUNS_DIR" in table
    rows = [line for line in table.splitlines()[1:] if not line.startswith(" ")]
    assert len({line.index(" from ") for line in rows}) == 1  # one column for the sources, however long a key
    assert len({len(line) - len(line.lstrip()) for line in table.splitlines()[1:] if line.startswith(" ")}) == 1


def test_user_errors_are_one_line_messages(random_dataset, tmp_path, capsys):
    assert main(["generate", "--model", "identity", "--split", "holdout"]) == 2
    assert "no dataset folder: pass --data DIR" in capsys.readouterr().err
    assert main(["generate", "--model", "nope", "--split", "holdout", "--data", str(random_dataset)]) == 2
    assert "unknown model 'nope'" in capsys.readouterr().err
    out = str(tmp_path / "run")
    base = ["--quiet", "generate", "--model", "identity", "--split", "holdout", "--data", str(random_dataset),
            "--resolution", "32", "--out", out]
    assert main(base) == 0
    assert main(base[:-2] + ["--out", out, "--seed", "3"]) == 2
    assert "was made with a different config (seed: 0 -> 3)" in capsys.readouterr().err
    assert main(["eval", "--run", str(tmp_path / "nothing")]) == 2
    assert "is not a run folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["generate", "--model", "identity", "--split", "validation"])


def test_failures_give_exit_status_1(random_dataset, tmp_path, capsys):
    status = main(["--quiet", "generate", "--model", "tests.helpers.fake_models:NaNModel", "--split", "holdout",
                   "--data", str(random_dataset), "--resolution", "32", "--out", str(tmp_path / "run")])
    assert status == 1
    assert "failed: model 'tests.helpers.fake_models:NaNModel', sample 's001'" in capsys.readouterr().err


def test_models_json_lists_capabilities(capsys):
    assert main(["models", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows["identity"]["weights"] is None and rows["identity"]["origin"] == "built-in"
    assert rows["ground-truth"]["input"] == "does not edit the input"


def test_weights_listing_and_missing_weights_at_evaluation(random_dataset, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert main(["weights", "--json"]) == 0
    rows = {row["key"]: row for row in json.loads(capsys.readouterr().out)}
    assert set(rows) == {"xrv-densenet121-all", "xrv-race", "xrv-age"}
    assert not rows["xrv-race"]["present"]
    assert rows["xrv-race"]["path"].startswith(str(tmp_path / "home" / ".torchxrayvision" / "models_data"))
    assert main(["weights", "fetch", "nope"]) == 2
    assert "unknown weights 'nope'" in capsys.readouterr().err
    # `run` stops before generating (the preflight, tests/evaluation/test_preflight.py); evaluating a generated
    # real-data run without the torchxrayvision weights: one clear error, generation kept
    assert main(["--quiet", "generate", "--model", "identity", "--split", "holdout", "--data", str(random_dataset),
                 "--resolution", "32", "--out", str(tmp_path / "run")]) == 0
    status = main(["--quiet", "eval", "--run", str(tmp_path / "run")])
    error = capsys.readouterr().err
    assert status == 2 and "resnet_race_detection_val-loss_0.157_mimic_public.pt" in error
    assert "cfbench weights fetch" in error
    assert (tmp_path / "run" / "images" / "s000.png").is_file()


def _parsers():
    import argparse

    from cfbench.cli import build_parser

    def walk(parser, path):
        yield path, parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    yield from walk(child, path + [name])

    return list(walk(build_parser(), ["cfbench"]))


def test_every_option_has_help_and_shows_its_default():
    import argparse

    for path, parser in _parsers():
        where = " ".join(path)
        if len(path) > 1:
            assert parser.description, f"`{where}` has no description"
        page = parser.format_help()
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            assert action.help, f"`{where}` {action.option_strings or action.dest} has no help text"
            if action.option_strings and action.default not in (None, False):
                shown = ",".join(action.default) if isinstance(action.default, (list, tuple)) else str(action.default)
                written = "(default" in action.help  # written by hand ("learning rate (default 1e-4)")
                assert written or shown in " ".join(page.split()), f"`{where}` {action.option_strings} hides its default"
    pages = {" ".join(path): parser for path, parser in _parsers()}
    for verb in ("config", "weights", "models", "compare"):
        assert len(pages[f"cfbench {verb}"].description) > 80  # a real description, not the one-line help
    help_text = pages["cfbench eval"].format_help()
    for option in ("--eval-batch-size", "--confidence", "--f1-threshold", "--kl", "--age-reference", "--clip-i"):
        assert option in help_text


def test_models_columns_align_and_weights_show_expected_digest(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    starts = {line.index("[") for line in lines if "[" in line and not line.startswith(" ")}
    assert len(starts) == 1  # long names (instructx2x-relevance-only) do not push their row out of line
    assert main(["weights"]) == 0
    table = capsys.readouterr().out
    assert "expected sha256" in table and "unknown (trust on first use)" in table and " - " not in table


def test_nonexistent_data_folder_and_unset_data_with_missing_weights(isolated_settings, tmp_path, capsys):
    for verb in ("run", "generate"):
        assert main(["--quiet", verb, "--model", "identity", "--split", "holdout", "--data", "/nonexistent",
                     "--resolution", "32", "--out", str(tmp_path / verb)]) == 2
        assert "no such dataset folder: /nonexistent" in capsys.readouterr().err
    assert main(["--quiet", "run", "--model", "instructx2x", "--split", "holdout"]) == 2
    error = capsys.readouterr().err
    assert "weights for model 'instructx2x' not found" in error and "no dataset folder" in error
    for source in ("PhysioNet", "MIMIC-CXR-JPG", "Medical-Diff-VQA", "MIMIC-IV", "credentialed",
                   "cfbench data build mimic"):
        assert source in error


def test_quiet_silences_the_libraries_bars_for_the_command_only(monkeypatch, capsys):
    import io
    import os

    from tqdm.auto import tqdm

    from cfbench.cli.common import quiet_libraries

    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    stream = io.StringIO()
    with quiet_libraries(True):
        list(tqdm(range(3), file=stream))  # a library's bar: no disable= of its own (diffusers' sampling loops)
    assert stream.getvalue() == "" and "TQDM_DISABLE" not in os.environ
    list(tqdm(range(3), file=stream))
    assert "3/3" in stream.getvalue()
