"""Process-wide state a model's code may change, kept around each call into that code.

A model runs inside the benchmark's process, so a ``os.chdir``, ``torch.set_default_dtype(torch.float64)``,
``torch.set_grad_enabled(True)`` or ``torch.set_num_threads(1)`` in its ``load`` or ``edit`` would otherwise
leak into everything that runs after it (the run folder's writes, the in-process evaluation).
:func:`kept_process_state` puts the working directory, the default dtype, the grad mode and the thread count back after the call
and logs once which of them the model changed. :func:`evaluation_torch_defaults` sets what the evaluation
needs (float32 default dtype, no grad) for its own duration, whatever was set before.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from typing import Any, Iterator

logger = logging.getLogger(__name__)
_reported: set[tuple[str, str]] = set()


def _snapshot() -> dict[str, Any]:
    state: dict[str, Any] = {"working directory": os.getcwd()}
    torch = sys.modules.get("torch")  # code that never imported torch cannot have changed its state
    if torch is not None:
        state.update({"torch default dtype": torch.get_default_dtype(),
                      "torch grad mode": torch.is_grad_enabled(),
                      "torch threads": torch.get_num_threads()})
    return state


def _restore(state: dict[str, Any]) -> list[str]:
    changed = [name for name, value in _snapshot().items() if name in state and state[name] != value]
    if "working directory" in changed:
        os.chdir(state["working directory"])
    torch = sys.modules.get("torch")
    if torch is not None and "torch default dtype" in state:
        torch.set_default_dtype(state["torch default dtype"])
        torch.set_grad_enabled(state["torch grad mode"])
        torch.set_num_threads(state["torch threads"])
    return changed


@contextlib.contextmanager
def kept_process_state(who: str) -> Iterator[None]:
    """Run the body, then restore the working directory, torch's default dtype, grad mode and thread count;
    a change is logged once per ``who`` and setting (the body's result is kept, its side effects are not)."""
    state = _snapshot()
    try:
        yield
    finally:
        for name in _restore(state):
            if (who, name) not in _reported:
                _reported.add((who, name))
                logger.warning("%s changed the process's %s; cfbench put it back", who, name)


@contextlib.contextmanager
def evaluation_torch_defaults() -> Iterator[None]:
    """float32 default dtype and no grad for the body (evaluators build float32 networks and never train),
    whatever an earlier model left; the previous settings come back afterwards."""
    import torch

    dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    try:
        with torch.no_grad():
            yield
    finally:
        torch.set_default_dtype(dtype)
