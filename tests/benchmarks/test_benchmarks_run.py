"""Every script in benchmarks/ runs as shipped at its ``--smoke`` size, so a broken benchmark fails the suite.

Each runs in a fresh process from another working directory (as from a fresh clone: nothing but the
repository and the ``bench`` extra), prints its conditions and load average, and at least one finite result.
The numbers at smoke sizes mean nothing; ``python benchmarks/run_all.py`` measures the real ones.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
from run_all import BEGIN, END, benchmark_scripts  # noqa: E402

sys.path.remove(str(BENCHMARKS))
RESULT_PREFIX = "RESULT "


def run_script(arguments: list[str], cwd: Path) -> subprocess.CompletedProcess:
    environment = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH="")  # nothing on the path but what it sets
    return subprocess.run([sys.executable, *arguments], cwd=cwd, capture_output=True, text=True, timeout=600,
                          env=environment)


def test_every_script_is_listed():
    assert benchmark_scripts(device_scripts=True) == sorted(
        path.stem for path in BENCHMARKS.glob("*.py") if path.stem not in ("conditions", "run_all"))
    assert "bench_rse" in benchmark_scripts() and "gpu_suite" not in benchmark_scripts()


@pytest.mark.parametrize("name", benchmark_scripts(device_scripts=True))
def test_benchmark_runs_at_its_smoke_size(name, tmp_path):
    completed = run_script([str(BENCHMARKS / f"{name}.py"), "--smoke"], tmp_path)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    lines = completed.stdout.splitlines()
    assert lines[0].startswith("conditions: ") and "load average" in lines[0]
    assert lines[-1].startswith("load average at the end: ")
    results = [json.loads(line[len(RESULT_PREFIX):]) for line in lines if line.startswith(RESULT_PREFIX)]
    assert results and all(math.isfinite(result["value"]) and result["label"] for result in results)


def test_run_all_writes_the_readme_table_and_the_record(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\n## Performance\n\n{BEGIN}\nold table\n{END}\n\n## Next\ntext\n")
    results = tmp_path / "results.json"
    completed = run_script([str(BENCHMARKS / "run_all.py"), "--smoke", "--only", "bench_phantom",
                            "--readme", str(readme), "--results", str(results)], tmp_path)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    text = readme.read_text()
    assert "old table" not in text and text.endswith(f"{END}\n\n## Next\ntext\n")
    table = text.split(BEGIN)[1].split(END)[0]
    assert "smoke sizes" in table and "load average" in table and "| `bench_phantom` | phantom render" in table
    record = json.loads(results.read_text())
    assert [script["script"] for script in record["scripts"]] == ["bench_phantom"]
    assert record["conditions_before"]["cores"] == os.cpu_count()
