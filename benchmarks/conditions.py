"""What every benchmark script shares: the conditions it ran under, its ``--smoke`` size, and result lines.

- ``parse_args(parser, smoke)`` adds ``--smoke`` (the smallest size that still runs every code path: what
  ``tests/benchmarks/test_benchmarks_run.py`` runs, so a broken benchmark fails the suite) and prints the
  conditions: UTC date, host, cores, CPU model, load average, Python and package versions. The load average
  is printed again when the script ends, so a reader sees whether other work shared the machine.
- ``report(key, value, label, unit, target)`` prints one ``RESULT {json}`` line next to the human-readable
  output; ``benchmarks/run_all.py`` collects these lines into the README's performance table.

Scripts run as ``python benchmarks/NAME.py`` (this folder is then first on ``sys.path``); ``REPOSITORY`` is put
on the path too, so a benchmark can reuse the test helpers (``tests.helpers``) from a fresh clone.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import platform
import sys
import time
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
if str(REPOSITORY) not in sys.path:
    sys.path.insert(1, str(REPOSITORY))

RESULT_PREFIX = "RESULT "


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, e.g. "0.52 0.61 0.40"."""
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def conditions() -> dict[str, str | int]:
    """The machine and moment of a measurement (the load average as "1 min, 5 min, 15 min")."""
    versions = {}
    for name in ("torch", "numpy", "diffusers", "transformers"):
        module = sys.modules.get(name)
        if module is not None:
            versions[name] = getattr(module, "__version__", "?")
    facts = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "host": platform.node(),
             "cores": os.cpu_count() or 1, "cpu": cpu_model(), "load_average": load_average(),
             "python": platform.python_version(), **versions}
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        facts["accelerator"] = torch.cuda.get_device_name()
    return facts


def print_conditions() -> None:
    facts = conditions()
    packages = ", ".join(f"{name} {facts[name]}" for name in ("torch", "numpy", "diffusers", "transformers")
                         if name in facts)
    accelerator = f", {facts['accelerator']}" if "accelerator" in facts else ""
    print(f"conditions: {facts['date']}, {facts['host']}, {facts['cores']} cores ({facts['cpu']}){accelerator}, "
          f"load average {facts['load_average']}, Python {facts['python']}{', ' + packages if packages else ''}", flush=True)
    atexit.register(lambda: print(f"load average at the end: {load_average()}", flush=True))


def parse_args(parser: argparse.ArgumentParser, smoke: dict) -> argparse.Namespace:
    """Parse the command line with a ``--smoke`` flag that swaps the defaults for ``smoke`` (options given on
    the command line still win), then print the conditions."""
    parser.add_argument("--smoke", action="store_true",
                        help="the smallest size that runs every code path (seconds; numbers not meaningful): "
                             + ", ".join(f"--{key.replace('_', '-')} {value}" for key, value in smoke.items()))
    args = parser.parse_args()
    if args.smoke:
        parser.set_defaults(**smoke)
        args = parser.parse_args()
    print_conditions()
    return args


def report(key: str, value: float, label: str, unit: str = "", target: str = "") -> None:
    """One machine-readable result line: ``key`` unique within the script, ``label`` what was measured,
    ``unit`` ("x" for a ratio, "s", "ms/sample", "images/s", ...), ``target`` the stated goal, if any."""
    print(RESULT_PREFIX + json.dumps({"key": key, "value": float(value), "label": label, "unit": unit,
                                      "target": target}), flush=True)
