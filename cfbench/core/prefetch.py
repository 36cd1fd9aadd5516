"""Overlap reading with computing: load the next batch in background threads while a batch is processed.

Image decoding (PIL, numpy) and network forward passes (torch) both release the GIL, so loader threads
hide the I/O behind the compute where the compute leaves cores free (a GPU forward); on a CPU that the
forward already fills they at least decode a batch on every core instead of one.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterator, Sequence, TypeVar

Item = TypeVar("Item")
Loaded = TypeVar("Loaded")

MAX_LOADER_THREADS = 8


def default_loader_threads() -> int:
    """One loader thread per core this process may run on, at most ``MAX_LOADER_THREADS``."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(MAX_LOADER_THREADS, cores))


def prefetched(items: Sequence[Item], load: Callable[[Item], Loaded]) -> Iterator[Loaded]:
    """Yield ``load(item)`` for each item in order, loading the next one while the caller works."""
    if not items:
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="cfbench-prefetch") as pool:
        upcoming = pool.submit(load, items[0])
        for index in range(len(items)):
            current = upcoming.result()
            if index + 1 < len(items):
                upcoming = pool.submit(load, items[index + 1])
            yield current


def prefetched_each(batches: Sequence[Sequence[Item]], load: Callable[[Item], Loaded],
                    threads: int = 1) -> Iterator[list[Loaded]]:
    """Yield ``[load(item) for item in batch]`` for each batch in order; the items of the next batch are
    loaded on ``threads`` threads (each item by one thread) while the caller works on the current batch.
    An exception raised by ``load`` reaches the caller when its batch is yielded."""
    if not batches:
        return
    with ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="cfbench-prefetch") as pool:
        upcoming = [pool.submit(load, item) for item in batches[0]]
        for index in range(len(batches)):
            current = [future.result() for future in upcoming]
            if index + 1 < len(batches):
                upcoming = [pool.submit(load, item) for item in batches[index + 1]]
            yield current
