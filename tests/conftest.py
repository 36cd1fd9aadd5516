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
