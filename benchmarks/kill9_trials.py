"""kill -9 at random moments: generation, evaluation, a dataset build and a leaderboard, each killed and then
re-run to the end, must give byte-identical outputs to an uninterrupted run and leave nothing behind
(no temporary files, no half-written folders).

Run: ``python benchmarks/kill9_trials.py [--trials 5] [--seed 0] [--smoke]`` (``--trials`` per stage; 4 stages).
Prints one line per trial (stage, kill time, whether the process was still running when killed, verdict)
and a summary; exits 1 when any trial differs (its scratch folder is then kept for inspection). Takes a few
minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from conditions import parse_args, report

REPO = Path(__file__).resolve().parents[1]
MODEL = "tests.helpers.fake_models:NoisyEditModel"


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "cfbench.cli", "--quiet", *args]


def run(command: list[str], env: dict) -> float:
    """Run to the end; the wall time in seconds."""
    started = time.perf_counter()
    subprocess.run(command, env=env, cwd=REPO, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def killed_then_finished(command: list[str], env: dict, after: float) -> bool:
    """Start, SIGKILL after ``after`` seconds, then run again to the end; True if the kill hit a live process."""
    process = subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(after)
    alive = process.poll() is None
    if alive:
        process.send_signal(signal.SIGKILL)
    process.wait()
    run(command, env)
    return alive


def snapshot(folder: Path, ignore: tuple[str, ...] = ()) -> dict[str, bytes]:
    """Every file under ``folder`` by relative path (ledger lines without their timing field)."""
    files = {}
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or path.name.startswith(".lock") or any(part in ignore for part in path.parts):
            continue
        data = path.read_bytes()
        if path.suffix == ".jsonl":  # seconds per sample differ between runs: everything else must match
            records = [json.loads(line) for line in data.splitlines() if line.strip()]
            for record in records:
                record.pop("seconds", None)
            data = json.dumps(sorted(records, key=lambda r: (r.get("sample_id", ""), json.dumps(r, sort_keys=True))),
                              sort_keys=True).encode()
        if path.name == "manifest.json":  # the runtime records sessions (times, argv): only the config must match
            data = json.dumps(json.loads(data)["config"], sort_keys=True).encode()
        files[str(path.relative_to(folder))] = data
    return files


def leftovers(folder: Path) -> list[str]:
    return [str(p.relative_to(folder)) for p in folder.rglob("*") if p.name.endswith((".tmp", ".part"))
            or p.name.startswith(".building-")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=5, help="trials per stage (default 5; 4 stages)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n", type=int, default=160, help="phantom samples of the dataset (70 % in train)")
    parser.add_argument("--resolution", type=int, default=512, help="pixels of the generated images")
    args = parse_args(parser, smoke={"trials": 1, "n": 12, "resolution": 64})
    rng = random.Random(args.seed)
    root = Path(tempfile.mkdtemp(prefix="cfbench-kill9-"))
    env = dict(os.environ, PYTHONPATH=str(REPO), CFBENCH_CACHE_DIR=str(root / "cache"),
               CFBENCH_CONFIG=str(root / "config.toml"), OMP_NUM_THREADS="1")
    data = root / "data"
    durations = {}  # each stage's uninterrupted wall time: kills are drawn inside it
    phantom = ["data", "phantom", "--n", str(args.n), "--resolution", "64", "--seed", "3"]
    durations["data phantom"] = run(cli(*phantom, "--out", str(data)), env)
    reference_run = root / "reference-run"
    generate = ["generate", "--model", MODEL, "--split", "train", "--data", str(data), "--resolution",
                str(args.resolution), "--batch-size", "2"]  # by default 112 samples at 512 px: kills land mid-run
    durations["generate"] = run(cli(*generate, "--out", str(reference_run)), env)
    evaluate = ["eval", "--bootstrap", "200", "--fid-bootstrap", "0"]
    durations["eval"] = run(cli(*evaluate, "--run", str(reference_run)), env)
    reference_board = root / "reference-board"
    board = ["--gallery-samples", "4", "--title", "kill-9 trials"]
    durations["leaderboard"] = run(cli("leaderboard", str(reference_run), "--out", str(reference_board), *board), env)

    print("uninterrupted: " + ", ".join(f"{stage} {seconds:.1f} s" for stage, seconds in durations.items()), flush=True)
    stages = {
        "generate": lambda out: cli(*generate, "--out", str(out)),
        "eval": None,  # evaluates a copy of the reference run
        "data phantom": lambda out: cli(*phantom, "--out", str(out)),
        "leaderboard": lambda out: cli("leaderboard", str(reference_run), "--out", str(out), *board),
    }
    expected = {"generate": snapshot(reference_run, ignore=("metrics.json", "predictions.csv", "evaluation.npz")),
                "eval": snapshot(reference_run), "data phantom": snapshot(data),
                "leaderboard": snapshot(reference_board, ignore=("plots",))}
    failures = 0
    for stage, make in stages.items():
        for trial in range(args.trials):
            out = root / f"{stage.replace(' ', '-')}-{trial}"
            if stage == "eval":
                subprocess.run(["cp", "-r", str(reference_run), str(out)], check=True)
                for name in ("metrics.json", "predictions.csv", "evaluation.npz"):
                    (out / name).unlink()
                command = cli(*evaluate, "--run", str(out))
                ignore: tuple[str, ...] = ()
            else:
                command = make(out)
                ignore = ("metrics.json", "predictions.csv", "evaluation.npz") if stage == "generate" else (
                    ("plots",) if stage == "leaderboard" else ())
            after = rng.uniform(0.1, 0.95) * durations[stage]
            alive = killed_then_finished(command, env, after)
            got = snapshot(out, ignore=ignore)
            left = leftovers(out) + leftovers(root / "cache")
            same = got == expected[stage]
            verdict = "identical" if same and not left else (
                f"DIFFERENT files: {sorted(set(got) ^ set(expected[stage]))[:5] or [k for k in got if got[k] != expected[stage].get(k)][:5]}"
                if not same else f"LEFTOVERS: {left[:5]}")
            failures += verdict != "identical"
            print(f"{stage:<13} trial {trial}: killed after {after:4.1f} s ({'running' if alive else 'already done'})"
                  f" -> {verdict}", flush=True)
    total = args.trials * len(stages)
    print(f"{total - failures} of {total} trials identical to the uninterrupted run with no leftovers ({root})")
    report("identical_trials", (total - failures) / total, f"kill -9 trials identical to an uninterrupted run "
           f"({total} trials)", "fraction", "1")
    if not failures:
        shutil.rmtree(root)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
