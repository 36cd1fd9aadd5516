"""One process per GPU: which shard of a split this process generates, read from ``--shard K/N`` or from
the launcher's environment (torchrun / accelerate launch: RANK, WORLD_SIZE, LOCAL_RANK; srun:
SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID)."""

from __future__ import annotations

import os

from cfbench.runs.store import Shard

SHARD_ENVIRONMENTS = (("RANK", "WORLD_SIZE", "LOCAL_RANK"), ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"))


class LauncherError(ValueError):
    """``--shard`` cannot be honoured; the message says why and what to pass instead."""


def shard_and_device(text: str | None, device: str, environ: dict[str, str] | None = None) -> tuple[Shard | None, str]:
    """The :class:`Shard` of ``--shard`` (None without it) and the device to use. ``text`` is ``"K/N"`` or
    ``"auto"``; under ``auto`` the shard comes from the launcher's environment and a bare ``cuda`` device
    becomes the process's local GPU (``cuda:LOCAL_RANK``)."""
    environ = os.environ if environ is None else environ
    if text is None:
        return None, device
    if text != "auto":
        try:
            return Shard.parse(text), device
        except ValueError as error:
            raise LauncherError(str(error)) from error
    for rank, size, local in SHARD_ENVIRONMENTS:
        if rank in environ and size in environ:
            shard = Shard(int(environ[rank]), int(environ[size]))
            if device == "cuda":
                device = f"cuda:{environ.get(local, '0')}"
            return shard, device
    raise LauncherError("auto: no launcher environment found (RANK/WORLD_SIZE from torchrun or accelerate "
                        "launch, SLURM_PROCID/SLURM_NTASKS from srun); pass --shard K/N instead")
