"""The C heap policy of a cfbench process: keep freed memory for reuse instead of handing it back to the OS.

A network forward on the CPU allocates and frees the same large activation buffers on every call (a
DenseNet-121 batch of 16 at 224 px: tens of MB per layer). With glibc's defaults, buffers above the
dynamic mmap threshold (at most 32 MiB) are mmap'ed and unmapped on every call, and freed heap tops above
128 KiB are trimmed, so each call faults its buffers in again, page by page, zero-filled by the kernel.
Raising the mmap threshold (256 MiB) and the trim threshold (512 MiB) keeps those pages in the process:
measured on 2 cores (``benchmarks/bench_allocator.py``), the torchxrayvision DenseNet-121 forward at batch
16 runs about 1.3-1.7x faster, and peak memory is unchanged (the pages were needed at the peak anyway);
what changes is that the resident size stays near the peak after a phase instead of falling back.

Applied by the ``cfbench`` command at start-up (setting ``allocator``: ``keep-freed``, the default, or
``system`` for glibc's own policy); a library user may call :func:`keep_freed_memory` once. On a C library
without ``mallopt`` (macOS, musl, Windows) nothing changes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

ALLOCATOR_POLICIES = ("keep-freed", "system")
MMAP_THRESHOLD_BYTES = 256 * 2**20
TRIM_THRESHOLD_BYTES = 512 * 2**20
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameter numbers (malloc.h)


@functools.lru_cache(maxsize=1)
def _mallopt():
    """glibc's ``mallopt`` or None where the C library has none."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        function = libc.mallopt
    except (OSError, AttributeError):
        return None
    function.argtypes, function.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return function


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds for this process (module docstring). Returns whether both
    were applied (False where the C library has no ``mallopt`` or refuses the values)."""
    mallopt = _mallopt()
    if mallopt is None:
        return False
    mmap_set = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
    trim_set = bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
    return mmap_set and trim_set


def apply_allocator_policy(policy: str) -> bool:
    """Apply one of :data:`ALLOCATOR_POLICIES`; returns whether the process's heap policy was changed."""
    if policy not in ALLOCATOR_POLICIES:
        raise ValueError(f"allocator must be one of {', '.join(ALLOCATOR_POLICIES)}, got {policy!r}")
    return keep_freed_memory() if policy == "keep-freed" else False
