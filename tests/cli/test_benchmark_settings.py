"""A split carries its benchmark settings (dataset.json benchmark_settings): `run` uses them unless the
command line overrides them, and the leaderboard shows the settings in which runs differ."""

from __future__ import annotations

import json

from cfbench.cli import build_parser
from cfbench.cli.run import apply_benchmark_settings


def _args(*argv):
    return build_parser().parse_args(list(argv))


def test_run_takes_the_splits_resolution_and_steps_unless_overridden(random_dataset):
    info = json.loads((random_dataset / "dataset.json").read_text()) if (random_dataset / "dataset.json").is_file() else {}
    info["benchmark_settings"] = {"resolution": 48, "steps": 7}
    (random_dataset / "dataset.json").write_text(json.dumps(info))
    base = ["run", "--split", "holdout", "--data", str(random_dataset)]
    args = _args(*base, "--model", "instructx2x")
    lines = apply_benchmark_settings(args)
    assert args.resolution == 48 and args.option == ["steps=7"]
    assert lines == ["split holdout: resolution 48 px, steps 7 (the split's benchmark settings; --resolution / "
                     "--option steps=N override them)"]
    overridden = _args(*base, "--model", "instructx2x", "--resolution", "32", "--option", "steps=3")
    apply_benchmark_settings(overridden)
    assert overridden.resolution == 32 and overridden.option == ["steps=3"]
    identity = _args(*base, "--model", "identity")  # no steps option: nothing added
    apply_benchmark_settings(identity)
    assert identity.resolution == 48 and identity.option is None
    info["benchmark_settings"] = {"holdout": {"resolution": 40}, "test": {"resolution": 512}}  # per split
    (random_dataset / "dataset.json").write_text(json.dumps(info))
    per_split = _args(*base, "--model", "identity")
    apply_benchmark_settings(per_split)
    assert per_split.resolution == 40


def test_the_demo_split_defaults_to_the_demo_protocol():
    args = _args("run", "--split", "demo", "--model", "instructpix2pix")
    apply_benchmark_settings(args)
    assert args.resolution == 128 and args.option == ["steps=20"]
    unknown = _args("run", "--split", "holdout", "--model", "identity")  # no data folder: the default
    apply_benchmark_settings(unknown)
    assert unknown.resolution == 512


def test_leaderboard_shows_the_settings_runs_differ_in(random_dataset, tmp_path):
    from cfbench.evaluation.evaluate import evaluate_run
    from cfbench.leaderboard.formats import to_csv, to_markdown
    from cfbench.leaderboard.table_model import build_leaderboard, load_runs
    from cfbench.runs.generate import RunSettings, generate

    folders = []
    for seed in (0, 1):
        settings = RunSettings(model="identity", split="holdout", data_dir=random_dataset,
                               out=tmp_path / f"seed{seed}", resolution=32, seed=seed)
        generate(settings, progress=False)
        evaluate_run(settings.out, evaluator="none", progress=False)
        folders.append(settings.out)
    board = build_leaderboard(load_runs(folders), "locality", reported=[])
    assert board.varying_settings == ["seed"]
    markdown = to_markdown(board)
    assert "| Model | Kind | Source | n | seed |" in markdown and "Settings differ between the runs: seed" in markdown
    assert to_csv(board).splitlines()[0].startswith("model,kind,source,n,resolution,steps,precision,seed,")
    same = build_leaderboard(load_runs(folders[:1]), "locality", reported=[])
    assert same.varying_settings == [] and "| seed |" not in to_markdown(same)
