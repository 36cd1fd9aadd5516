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
