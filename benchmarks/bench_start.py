"""The fixed start of the ``cfbench`` command: CPU seconds of the light verbs against ``python -c pass``.

Each command runs in a fresh process; the CPU time is the child's user + system time (``RUSAGE_CHILDREN``),
which load on a shared machine disturbs far less than wall time. The commands are interleaved over
``--repeats`` rounds and medians are printed, with the ratio to an empty interpreter. For scale, the
imports a run pays for anyway: the evaluation path (``cfbench.evaluation.evaluate``) and torch.

    python benchmarks/bench_start.py [--repeats 5] [--smoke]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import time

from conditions import parse_args, report

COMMANDS = {
    "python -c pass": ["-c", "pass"],
    "cfbench --help": ["-m", "cfbench.cli", "--help"],
    "cfbench models": ["-m", "cfbench.cli", "models"],
    "cfbench config": ["-m", "cfbench.cli", "config"],
    "import cfbench.evaluation.evaluate": ["-c", "import cfbench.evaluation.evaluate"],
    "import torch": ["-c", "import torch"],
}


def child_seconds(arguments: list[str]) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one fresh ``python ARGUMENTS``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    tick = time.perf_counter()
    subprocess.run([sys.executable, *arguments], check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - tick
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds")
    args = parse_args(parser, smoke={"repeats": 1})
    for arguments in COMMANDS.values():  # warm the file cache: the first start reads every .pyc from disk
        child_seconds(arguments)
    cpu: dict[str, list[float]] = {name: [] for name in COMMANDS}
    wall: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.repeats):
        for name, arguments in COMMANDS.items():
            seconds, elapsed = child_seconds(arguments)
            cpu[name].append(seconds)
            wall[name].append(elapsed)
    baseline = statistics.median(cpu["python -c pass"])
    print(f"start cost, fresh processes, {args.repeats} interleaved rounds (medians)")
    print(f"  {'command':36s} {'CPU s':>7s} {'wall s':>7s} {'CPU / python -c pass':>21s}")
    for name in COMMANDS:
        seconds = statistics.median(cpu[name])
        print(f"  {name:36s} {seconds:7.3f} {statistics.median(wall[name]):7.3f} {seconds / baseline:21.1f}")
        if name != "python -c pass":
            key = name.replace("cfbench ", "").replace("import ", "import_").replace("--", "").replace(" ", "_")
            report(f"{key}_cpu_seconds", seconds, f"start: `{name}`, CPU seconds (user + system)", "s",
                   "no torch, SciPy, pandas" if name.startswith("cfbench") else "")
    report("help_over_python", statistics.median(cpu["cfbench --help"]) / baseline,
           "start: `cfbench --help` CPU / `python -c pass` CPU", "x")


if __name__ == "__main__":
    main()
