"""Run the benchmarks and regenerate the README's performance table from what they measured, with the date,
machine and load they ran under.

    python benchmarks/run_all.py [--smoke] [--only bench_rse bench_start ...] [--skip kill9_trials ...]
        [--readme README.md] [--results benchmarks/results/cpu-latest.json] [--arguments NAME="--n 24"]

Each script runs in its own process, one after the other (their output is shown as it comes); the ``RESULT``
lines they print (``benchmarks/conditions.py``) become the rows of the table written between the
``<!-- performance-table:begin -->`` and ``<!-- performance-table:end -->`` markers of the README, and the
whole record (conditions before and after, every result, each script's wall time) is written as JSON to
``--results``. A script that fails is named in the table's caption, not hidden; the exit status is then 1.
``--smoke`` runs each at its smoke size (seconds; the numbers only prove the scripts run). The ``gpu_*``
scripts are not run here (``benchmarks/gpu_suite.py`` is the device run; its results go to
``benchmarks/results/``).
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

from conditions import RESULT_PREFIX, REPOSITORY, conditions, print_conditions

from cfbench.core.storage import atomic_write_text

BENCHMARKS = Path(__file__).resolve().parent
BEGIN, END = "<!-- performance-table:begin -->", "<!-- performance-table:end -->"
HELPERS = {"conditions", "run_all"}  # the scripts here that are not benchmarks


def benchmark_scripts(device_scripts: bool = False) -> list[str]:
    """The benchmark scripts of this folder, by name without ``.py``, in a fixed order; the ``gpu_*`` scripts
    (which need an accelerator for their full size) only with ``device_scripts``."""
    return sorted(path.stem for path in BENCHMARKS.glob("*.py")
                  if path.stem not in HELPERS and (device_scripts or not path.stem.startswith("gpu_")))


def run_script(name: str, extra: list[str]) -> dict:
    """Run one script; its results, wall time and exit status (its output goes to our stdout as it comes)."""
    command = [sys.executable, str(BENCHMARKS / f"{name}.py"), *extra]
    print(f"\n$ {' '.join(command[1:])}", flush=True)
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    results = []
    for line in process.stdout:
        if line.startswith(RESULT_PREFIX):
            results.append(json.loads(line[len(RESULT_PREFIX):]))
        else:
            print(line, end="", flush=True)
    return {"script": name, "arguments": extra, "returncode": process.wait(), "results": results,
            "seconds": time.perf_counter() - started}


def format_value(value: float, unit: str) -> str:
    text = f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return f"{text}x" if unit == "x" else f"{text} {unit}".strip()


def performance_table(record: dict) -> str:
    """The README's table: one row per result, then how it was made (``record["command"]``)."""
    before, after = record["conditions_before"], record["conditions_after"]
    size = ("smoke sizes (the numbers only show that the scripts run)" if record["smoke"] else
            "sizes as given in the command" if any(script["arguments"] for script in record["scripts"]) else
            "default sizes")
    device = f", {before['accelerator']}" if before.get("accelerator") else ""
    lines = [f"Measured {before['date']} on {before['host']} ({before['cores']} cores, {before['cpu']}{device}), "
             f"{size}; load average {before['load_average']} before, {after['load_average']} after "
             f"(`{record['command']}`, "
             f"{sum(script['seconds'] for script in record['scripts']) / 60:.1f} min).", "",
             "| benchmark | measured | value | target |", "|---|---|---|---|"]
    for script in record["scripts"]:
        for result in script["results"]:
            value = format_value(result["value"], result["unit"])
            label, target = (text.replace("|", "\\|") for text in (result["label"], result["target"]))
            lines.append(f"| `{script['script']}` | {label} | {value} | {target} |")
    failed = [script["script"] for script in record["scripts"] if script["returncode"] != 0]
    if failed:
        lines += ["", "Failed (no or partial results): " + ", ".join(f"`{name}`" for name in failed) + "."]
    return "\n".join(lines)


def replace_table(readme: Path, table: str) -> None:
    text = readme.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{readme}: no {BEGIN} ... {END} markers to write the table between")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    atomic_write_text(readme, f"{head}{BEGIN}\n{table}\n{END}{tail}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="run every script at its smoke size")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these scripts (names without .py)")
    parser.add_argument("--skip", nargs="+", default=[], metavar="NAME", help="leave these scripts out")
    parser.add_argument("--arguments", action="append", default=[], metavar='NAME="OPTIONS"',
                        help='extra options for one script, e.g. bench_evaluation="--evaluator densenet"')
    parser.add_argument("--readme", type=Path, default=REPOSITORY / "README.md")
    parser.add_argument("--results", type=Path, default=BENCHMARKS / "results" / "cpu-latest.json")
    args = parser.parse_args()
    names = args.only or benchmark_scripts()
    unknown = sorted(set(names + args.skip) - set(benchmark_scripts()))
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; known: {benchmark_scripts()}")
    extra = {name: shlex.split(options) for name, _, options in (item.partition("=") for item in args.arguments)}
    print_conditions()
    record = {"command": shlex.join(["python", "benchmarks/run_all.py", *sys.argv[1:]]), "smoke": args.smoke,
              "conditions_before": conditions(), "scripts": []}
    for name in names:
        if name not in args.skip:
            record["scripts"].append(run_script(name, (["--smoke"] if args.smoke else []) + extra.get(name, [])))
    record["conditions_after"] = conditions()
    args.results.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.results, json.dumps(record, indent=1) + "\n")
    replace_table(args.readme, performance_table(record))
    print(f"\nwrote {args.results} and the performance table of {args.readme}")
    return 1 if any(script["returncode"] != 0 for script in record["scripts"]) else 0


if __name__ == "__main__":
    sys.exit(main())
