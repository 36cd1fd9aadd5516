"""Which evaluator weights files this user trusts, and loading pickled ones so that a payload cannot run.

Trust on first use: the SHA-256 of each catalogue file is recorded in a trust store (``trusted_weights.json``
in the cfbench config folder, beside ``config.toml``) when ``cfbench weights fetch`` downloads it, or the
first time a file that is already present is loaded (with a warning). Every later load compares the file
with its record (re-hashing it when its size or modification time changed) and refuses a file whose
digest differs, naming it; ``cfbench weights trust KEY`` accepts the new file. A digest pinned in the
catalogue (:attr:`WeightsFile.sha256`) takes precedence over the store.

Pickled torchxrayvision checkpoints are read with ``torch.load(weights_only=True)`` and an allow-list of
the classes those checkpoints hold (:func:`restricted_torch_load`), also where torchxrayvision itself would
unpickle with ``weights_only=False``: a planted file whose pickle calls anything else is refused, never run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Iterator

from cfbench.core import config
from cfbench.core.hashing import file_sha256
from cfbench.core.storage import atomic_write_json

TRUST_STORE_NAME = "trusted_weights.json"
logger = logging.getLogger(__name__)


class UntrustedWeightsError(RuntimeError):
    """A weights file differs from the one recorded (or pinned), or holds a pickle that would run code."""


def trust_store_path() -> Path:
    return config.config_file_path().parent / TRUST_STORE_NAME


def _read_store() -> dict[str, dict]:
    path = trust_store_path()
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, ValueError) as error:
        raise UntrustedWeightsError(f"the trust store {path} cannot be read ({error}); delete it and run "
                                    "`cfbench weights trust` for each file you trust") from error


def trusted_record(path: str | os.PathLike) -> dict | None:
    """The trust store's record of ``path`` ({"sha256", "size", "mtime_ns"}), or None."""
    try:
        return _read_store().get(str(Path(path).resolve()))
    except UntrustedWeightsError:
        return None


def trust(path: str | os.PathLike, sha256: str | None = None) -> str:
    """Record ``path`` (its SHA-256, size and modification time) as trusted; returns the digest."""
    path = Path(path).resolve()
    stat = path.stat()
    digest = sha256 or file_sha256(path)
    store = _read_store()
    store[str(path)] = {"sha256": digest, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    atomic_write_json(trust_store_path(), store)
    return digest


def verify(path: str | os.PathLike, key: str, pinned_sha256: str | None = None) -> str:
    """The SHA-256 of a weights file that this user trusts (see the module); UntrustedWeightsError otherwise.
    A file seen for the first time is trusted and recorded, with a warning."""
    path = Path(path).resolve()
    stat = path.stat()
    record = _read_store().get(str(path))
    unchanged = record is not None and record.get("size") == stat.st_size and record.get("mtime_ns") == stat.st_mtime_ns
    digest = record["sha256"] if unchanged else file_sha256(path)
    expected = pinned_sha256 or (record or {}).get("sha256")
    if expected is not None and digest != expected:
        source = "pinned in the catalogue" if pinned_sha256 else f"recorded in {trust_store_path()}"
        raise UntrustedWeightsError(
            f"weights file {path} ({key}) has SHA-256 {digest}, not the {expected} {source}: it was replaced or "
            f"damaged. If you trust the new file, run `cfbench weights trust {key}`; otherwise fetch it again "
            f"with `cfbench weights fetch --force {key}`")
    if record is None:
        logger.warning("trusting %s (%s) on first use: SHA-256 %s recorded in %s", path, key, digest,
                       trust_store_path())
    if not unchanged:
        trust(path, digest)
    return digest


# Classes a torchxrayvision DenseNet checkpoint (a whole pickled model) and a MIRA Lightning checkpoint
# (state dict + hyper-parameters) are made of; nothing that can run code.
def _allowed_globals() -> list:
    import collections

    import torch
    import torchxrayvision.models as xrv_models
    from torch import nn

    allowed = [collections.OrderedDict, set, nn.Sequential, nn.ModuleDict, nn.Conv2d, nn.BatchNorm2d, nn.ReLU,
               nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.Linear, nn.Dropout, nn.Identity,
               torch.nn.parameter.Parameter]
    for name in ("DenseNet", "_DenseBlock", "_DenseLayer", "_Transition"):
        if hasattr(xrv_models, name):
            allowed.append(getattr(xrv_models, name))
    return allowed


def restricted_torch_load(path, *args, **kwargs):
    """``torch.load`` with ``weights_only=True`` and the allow-list above, whatever the caller asked for;
    a pickle that needs another class or function raises UntrustedWeightsError naming the file."""
    import pickle

    import torch

    kwargs.pop("weights_only", None)
    kwargs.setdefault("map_location", "cpu")
    try:
        with torch.serialization.safe_globals(_allowed_globals()):
            return _ORIGINAL_TORCH_LOAD(path, *args, weights_only=True, **kwargs)
    except pickle.UnpicklingError as error:
        raise UntrustedWeightsError(
            f"refused to load {path}: its pickle asks for something a weights file does not need, so it could "
            f"run code ({str(error).splitlines()[0]}). Fetch the file again from its source.") from None


_ORIGINAL_TORCH_LOAD = None


@contextlib.contextmanager
def restricted_unpickling() -> Iterator[None]:
    """Within the block, every ``torch.load`` (torchxrayvision's own included) is :func:`restricted_torch_load`."""
    global _ORIGINAL_TORCH_LOAD
    import torch

    if _ORIGINAL_TORCH_LOAD is not None:  # nested: already restricted
        yield
        return
    _ORIGINAL_TORCH_LOAD = torch.load
    torch.load = restricted_torch_load
    try:
        yield
    finally:
        torch.load = _ORIGINAL_TORCH_LOAD
        _ORIGINAL_TORCH_LOAD = None
