"""Provenance: the versions that produced a number, recorded in run manifests, metrics.json and model cards."""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version

TRACKED_PACKAGES = ("cfbench", "numpy", "torch", "torchvision", "torchxrayvision", "diffusers", "transformers")


def package_versions() -> dict[str, str | None]:
    """``{"python": "3.11.7", "cfbench": "0.1.0", "torch": ..., ...}``; None for a package not installed."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    return versions
