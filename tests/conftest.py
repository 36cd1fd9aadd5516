"""Shared fixtures: isolated cfbench settings, small datasets in the real layout, tiny diffusion folders,
one torch thread for tiny networks. Helpers live in the importable package ``tests.helpers``."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.datasets import write_random_dataset


@pytest.fixture(autouse=True)
def isolated_settings(tmp_path_factory, monkeypatch):
    """Every test gets its own config file, cache and runs folder; no user settings leak in."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("CFBENCH_CONFIG", str(home / "config.toml"))
    monkeypatch.setenv("CFBENCH_CACHE_DIR", str(home / "cache"))
    monkeypatch.setenv("CFBENCH_RUNS_DIR", str(home / "runs"))
    monkeypatch.setenv("CFBENCH_WEIGHTS_DIR", str(home / "weights"))
    monkeypatch.delenv("CFBENCH_DATA_DIR", raising=False)
    return home


@pytest.fixture
def random_dataset(tmp_path) -> Path:
    return write_random_dataset(tmp_path / "data")


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny networks gain nothing from threads, and on a shared machine threads contend badly: modules that
    run them use ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory, request):
    """A tiny random Stable Diffusion folder at the module's ``SIZE`` (the latent side is SIZE // 2), with
    the scheduler named by the module's ``TINY_SD_SCHEDULER`` ("ddim", the default, or "pndm": Stable
    Diffusion v1's own)."""
    from tests.helpers.tiny_diffusion import save_tiny_stable_diffusion

    size = getattr(request.module, "SIZE")
    scheduler = getattr(request.module, "TINY_SD_SCHEDULER", "ddim")
    return save_tiny_stable_diffusion(tmp_path_factory.mktemp("sd") / "sd", sample_size=size // 2, scheduler=scheduler)


# The slowest tests, measured with `pytest --durations=30` (2 idle CPU cores: 1.2-8 s each, with their module
# fixtures; several times that on a busy shared machine). `pytest -m "not slow"` leaves them out.
SLOW_TESTS = frozenset({
    "tests/phantom/test_phantom_dataset.py::test_demo_prints_reference_table",
    "tests/phantom/test_phantom_dataset.py::test_demo_cache_is_built_once_even_concurrently",
    "tests/phantom/test_phantom_evaluators.py::test_shipped_weights_meet_targets_on_fresh_phantoms",
    "tests/phantom/test_phantom_evaluators.py::test_tiny_training_run_is_deterministic_and_loadable",
    "tests/phantom/test_phantom_evaluators.py::test_parallel_rendering_matches_serial",
    "tests/datasets/test_registration.py::test_mutual_information_of_aligned_and_unrelated_pairs",
    "tests/training/test_train_biomedjourney.py::test_two_stage_training_resumes_exactly_and_exports_a_folder_the_adapter_loads",
    "tests/training/test_train_instructx2x.py::test_resume_gives_the_state_of_an_uninterrupted_run",
    "tests/training/test_train_instructx2x.py::test_training_lowers_the_loss_and_writes_a_loadable_pipeline",
    "tests/metrics/test_metrics_math.py::test_bootstrap_coverage_of_auroc_of_two_normals",
    "tests/models/test_autoregressive_adapters.py::test_cli_run_end_to_end_with_explanations",
    "tests/models/test_autoregressive_adapters.py::test_progemu_grammar_batch_and_seeds",
    "tests/models/test_instructx2x.py::test_cli_run_on_demo_writes_images_and_guidance_maps",
    "tests/models/test_radedit.py::test_cli_run_on_the_demo_split_writes_images_and_is_evaluated",
    "tests/api/test_registry.py::test_entry_point_plugin_installed_from_a_package",
    "tests/models/test_phantom_checkpoint.py::test_shipped_generator_adds_what_the_instruction_names_and_only_there",
    "tests/models/test_phantom_checkpoint.py::test_shipped_generator_beats_identity_on_pathology_auroc",
    "tests/training/test_phantom_generator.py::test_train_generator_end_to_end_and_loadable",
    "tests/suites/test_validity.py::test_every_family_and_reference_is_judged_and_the_ground_truth_metric_is_valid",
    "tests/suites/test_validity.py::test_files_round_trip_and_the_runs_are_in_table_order",
    # every benchmark script at its smoke size, each in a fresh process (1-30 s each)
    "tests/benchmarks/test_benchmarks_run.py::test_benchmark_runs_at_its_smoke_size",
})


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.nodeid.split("[")[0] in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)


PACKAGE_FOLDERS = ("cfbench", "models", "metrics", "tests/data", "leaderboards", "examples")


def _package_files() -> dict[str, tuple[int, int]]:
    """(size, mtime) of every file cfbench ships or the tests read (compiled bytecode left out)."""
    root = Path(__file__).resolve().parents[1]
    files = {}
    for folder in PACKAGE_FOLDERS:
        for path in (root / folder).rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                stat = path.stat()
                files[str(path.relative_to(root))] = (stat.st_size, stat.st_mtime_ns)
    return files


@pytest.fixture(scope="session", autouse=True)
def package_folder_unchanged():
    """The tests write only in their temporary folders: at the end, the package and the repository's data are
    as they were (issue 22: a fresh clone stays clean after the suite)."""
    before = _package_files()
    yield
    after = _package_files()
    changed = sorted(name for name in before.keys() | after.keys() if before.get(name) != after.get(name))
    assert not changed, f"the tests changed files inside the repository: {changed[:10]}"
