"""The demo reports each model as it finishes, estimates the rest, and keeps going past a failed model."""

from __future__ import annotations

from cfbench.leaderboard import demo


def test_a_failing_model_is_noted_and_the_finished_ones_are_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "demo_dataset", lambda cache_dir, resolution, progress: tmp_path / "data")
    monkeypatch.setattr(demo, "demo_models", lambda all_models: (["identity", "instructx2x", "ground-truth"], []))
    clock = iter([0.0, 2.0, 2.0, 62.0, 62.0, 63.0])
    monkeypatch.setattr(demo.time, "perf_counter", lambda: next(clock))

    def run_model(model, *rest):
        if model == "instructx2x":
            raise RuntimeError("CUDA out of memory\nmore lines")
        return {"model": model, "n": 48, "metrics": {}}

    monkeypatch.setattr(demo, "_run_model", run_model)
    done = []
    rows, notes = demo.run_demo(tmp_path, tmp_path / "runs", on_model_done=done.append)
    assert [row["model"] for row in rows] == ["identity", "ground-truth"]
    assert notes == ["instructx2x: failed (RuntimeError: CUDA out of memory); the other models' runs are kept"]
    assert [(d.index, d.model, d.error, d.seconds) for d in done] == [
        (1, "identity", None, 2.0), (2, "instructx2x", "RuntimeError: CUDA out of memory", 60.0),
        (3, "ground-truth", None, 1.0)]
    # after identity: the generator's time is not known yet; after the generator: the reference's mean
    assert done[0].seconds_left is None and done[1].seconds_left == 2.0 and done[2].seconds_left == 0.0


def test_estimate_uses_the_mean_time_of_each_kind():
    timed = {"reference": [2.0, 4.0], "generator": [100.0]}
    assert demo.estimate_seconds_left(timed, ["instructx2x", "instructpix2pix", "true-counterfactual"]) == 203.0
    assert demo.estimate_seconds_left({"reference": [1.0]}, ["instructx2x"]) is None


def test_cli_demo_keeps_the_finished_models_and_exits_1_when_one_failed(tmp_path, monkeypatch, capsys):
    from cfbench.cli import main

    def fake_run_demo(cache_dir, runs_dir, resolution, all_models, only, progress, on_model_done, seeds=1):
        on_model_done(demo.ModelDone(1, 2, "identity", {"model": "identity", "n": 48, "metrics": {}}, None, 1.0, None))
        on_model_done(demo.ModelDone(2, 2, "instructx2x", None, "RuntimeError: boom", 5.0, 0.0))
        return [{"model": "identity", "n": 48, "metrics": {}}], ["instructx2x: failed (RuntimeError: boom)"]

    monkeypatch.setattr(demo, "run_demo", fake_run_demo)
    written = []
    monkeypatch.setattr(demo, "write_demo_leaderboard",
                        lambda runs_dir, out, models: written.append(models) or {"skipped": []})
    assert main(["--quiet", "demo", "--out", str(tmp_path)]) == 1
    out = capsys.readouterr()
    assert "[2/2] 5 s: instructx2x: FAILED (RuntimeError: boom); all models done" in out.out
    assert "instructx2x: failed" in out.err and written == [["identity"]]
