"""Overlap reading with computing: load batch i+1 in a background thread while batch i is processed.

Image decoding (PIL, numpy) and network forward passes (torch) both release the GIL, so one loader
thread hides most of the I/O behind the compute.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterator, Sequence, TypeVar

Item = TypeVar("Item")
Loaded = TypeVar("Loaded")


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
