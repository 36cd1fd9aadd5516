"""A fast start: the light verbs import no torch, SciPy or pandas (each costs 0.5-2 s of CPU before the first
line of output). ``benchmarks/bench_start.py`` measures the start cost the README states."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "scipy", "pandas")

CHILD = r"""
import json, sys
from cfbench.cli import build_parser, main
verbs = next(action for action in build_parser()._actions if action.dest == "verb").choices
argv = json.loads(sys.argv[1])
if argv and not argv[0].startswith("-") and argv[0] not in verbs:
    print(json.dumps({"missing": argv[0]}))
    sys.exit(0)
try:
    code = main(argv)
except SystemExit as stop:
    code = stop.code
print(json.dumps({"code": code, "heavy": sorted(name for name in json.loads(sys.argv[2]) if name in sys.modules)}))
"""


@pytest.mark.parametrize("argv", [["--help"], ["models"], ["check", "--help"], ["config"], ["run", "--help"]],
                         ids=lambda argv: " ".join(argv))
def test_light_verbs_import_no_torch_scipy_or_pandas(argv):
    completed = subprocess.run([sys.executable, "-c", CHILD, json.dumps(argv), json.dumps(HEAVY)],
                               capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    outcome = json.loads(completed.stdout.strip().splitlines()[-1])
    assert "missing" not in outcome, f"no verb {outcome.get('missing')!r}"
    assert outcome["code"] in (0, None), completed.stderr
    assert outcome["heavy"] == [], f"`cfbench {' '.join(argv)}` imported {outcome['heavy']}"


def test_the_evaluation_modules_load_without_scipy():
    """SciPy is imported where it is used (FID's LAPACK call), not when the evaluation is imported."""
    completed = subprocess.run([sys.executable, "-c", "import sys, cfbench.evaluation.evaluate, cfbench.metrics; "
                                "print('scipy' in sys.modules)"], capture_output=True, text=True, timeout=120)
    assert completed.stdout.strip() == "False", completed.stderr
