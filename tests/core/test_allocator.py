"""The heap policy of a cfbench process (cfbench.core.allocator): freed large buffers stay in the process
under keep-freed, go back to the OS under glibc's defaults; the CLI applies the ``allocator`` setting."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cfbench.core import allocator

pytestmark = pytest.mark.skipif(allocator._mallopt() is None, reason="C library without mallopt (not glibc)")

# A 100 MiB buffer allocated and freed: how much of it is still resident afterwards (KiB)?
SCRIPT = """
import sys
import numpy as np
from cfbench.core.allocator import apply_allocator_policy

def resident_kib():
    return int(next(line for line in open("/proc/self/status") if line.startswith("VmRSS")).split()[1])

print(apply_allocator_policy(sys.argv[1]))
before = resident_kib()
buffer = np.ones(100 * 2**20 // 8)
del buffer
print(resident_kib() - before)
"""


def _kept_kib(policy: str) -> tuple[str, int]:
    lines = subprocess.run([sys.executable, "-c", SCRIPT, policy], capture_output=True, text=True,
                           check=True).stdout.split()
    return lines[0], int(lines[1])


def test_keep_freed_keeps_a_freed_buffer_resident_and_system_returns_it():
    applied, kept = _kept_kib("keep-freed")
    assert applied == "True" and kept > 90 * 1024  # the 100 MiB stay mapped for the next forward
    applied, returned = _kept_kib("system")
    assert applied == "False" and returned < 10 * 1024  # glibc unmaps it on free


def test_unknown_policy_is_refused():
    with pytest.raises(ValueError, match="keep-freed, system"):
        allocator.apply_allocator_policy("jemalloc")


def test_cli_applies_the_setting_and_config_still_runs_with_a_bad_value(monkeypatch, capsys):
    from cfbench.cli import main

    applied = []
    monkeypatch.setattr(allocator, "apply_allocator_policy", lambda policy: applied.append(policy) or True)
    monkeypatch.setenv("CFBENCH_ALLOCATOR", "system")
    assert main(["models"]) == 0 and applied == ["system"]
    monkeypatch.undo()
    monkeypatch.setenv("CFBENCH_ALLOCATOR", "bogus")
    assert main(["models"]) == 2
    assert "setting allocator (env CFBENCH_ALLOCATOR)" in capsys.readouterr().err
    assert main(["config"]) == 0  # the verb that repairs the setting is not blocked by it
