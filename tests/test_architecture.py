"""The shape of the code base: stages import only the stages below them, the command line starts without
the heavy libraries, no module grows past 700 lines, and every stage says what it owns."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Stages in the order data flows; a module may import its own stage and lower ranks only.
# models/ (the adapters, cfbench.models) sit above the generator loops and below the runner;
# metrics/ (cfbench.metrics) is pure math on arrays, just above the shared helpers.
STAGE_RANK = {
    "core": 0, "metrics": 0.5, "datasets": 1, "api": 2, "phantom": 3, "diffusion": 4, "autoregressive": 4,
    "models": 4.5, "runs": 5, "evaluation": 6, "leaderboard": 7, "suites": 7.5, "training": 8, "cli": 9,
}
PACKAGE_FOLDERS = {"cfbench": "cfbench", "models": "cfbench.models", "metrics": "cfbench.metrics"}
MAX_LINES = 700


def python_modules():
    """(path, dotted module name) of every module of the package, adapters and metrics included."""
    for folder, package in PACKAGE_FOLDERS.items():
        for path in sorted((REPO / folder).rglob("*.py")):
            parts = path.relative_to(REPO / folder).with_suffix("").parts
            yield path, ".".join([package, *parts]).removesuffix(".__init__")


def stage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "cfbench" and parts[1] in STAGE_RANK else None


def imported_modules(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, module) of every absolute import, ``from cfbench import diffusion`` read as cfbench.diffusion;
    imports inside functions and under TYPE_CHECKING count too."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
    return found


def test_the_stage_ranks_cover_every_subpackage():
    subpackages = {path.parent.name for path in (REPO / "cfbench").glob("*/__init__.py")}
    assert subpackages <= set(STAGE_RANK), f"give {subpackages - set(STAGE_RANK)} a rank in STAGE_RANK"


def test_no_module_imports_a_higher_stage():
    upward = []
    for path, module in python_modules():
        own = stage(module)
        if own is None:
            continue
        for line, imported in imported_modules(ast.parse(path.read_text(encoding="utf-8"))):
            other = stage(imported)
            if other is not None and STAGE_RANK[other] > STAGE_RANK[own]:
                upward.append(f"{path.relative_to(REPO)}:{line}: {own} imports {imported}")
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_the_import_walk_sees_an_upward_import(tmp_path):
    """The check above can fail: a datasets module importing the runner is caught."""
    tree = ast.parse("def f():\n    from cfbench.runs.generate import generate\n")
    ranks = [STAGE_RANK[stage(name)] for _, name in imported_modules(tree) if stage(name)]
    assert max(ranks) > STAGE_RANK["datasets"]


def test_every_stage_documents_its_job_and_what_it_may_import():
    for init in sorted((REPO / "cfbench").glob("*/__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
        assert doc, f"{init.relative_to(REPO)} has no docstring"
        if init.parent.name not in ("cli",):
            assert "May import" in doc, f"{init.relative_to(REPO)} does not say what it may import"


def test_no_module_is_over_700_lines():
    long = [f"{path.relative_to(REPO)}: {n}" for path, _ in python_modules()
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES]
    assert not long, f"modules over {MAX_LINES} lines: {long}"


@pytest.mark.parametrize("command", [["-m", "cfbench.cli", "--help"], ["-m", "cfbench.cli", "run", "--help"]])
def test_help_imports_neither_torch_scipy_nor_pandas(command):
    code = ("import runpy, sys; sys.argv = ['cfbench', *sys.argv[1:]]\n"
            "try:\n    runpy.run_module('cfbench.cli', run_name='__main__')\nexcept SystemExit:\n    pass\n"
            "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'scipy', 'pandas', 'SimpleITK'})\n"
            "print('HEAVY', heavy, file=sys.stderr)")
    result = subprocess.run([sys.executable, "-c", code, *command[2:]], capture_output=True, text=True, cwd=REPO)
    assert "usage: cfbench" in result.stdout
    assert "HEAVY []" in result.stderr, result.stderr[-500:]


def test_the_console_script_is_the_cli_main():
    module = importlib.import_module("cfbench.cli")
    assert callable(module.main)
    assert (REPO / "cfbench" / "cli" / "__main__.py").is_file()
