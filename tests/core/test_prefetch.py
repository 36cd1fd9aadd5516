"""Loading ahead (cfbench.core.prefetch): order kept, the next batch loads while the caller works, items
of a batch load on several threads at once, and a loader's error reaches the caller with its batch."""

from __future__ import annotations

import threading

import pytest

from cfbench.core.prefetch import default_loader_threads, prefetched, prefetched_each


def test_batches_come_back_in_order_item_by_item():
    batches = [[0, 1, 2], [3, 4], [5, 6, 7, 8], [9]]
    assert list(prefetched_each(batches, lambda item: item * 10, threads=3)) == [
        [0, 10, 20], [30, 40], [50, 60, 70, 80], [90]]
    assert list(prefetched_each([], lambda item: item, threads=2)) == []
    assert list(prefetched([1, 2, 3], lambda item: -item)) == [-1, -2, -3]


def test_items_of_a_batch_load_on_several_threads_at_once():
    """Two items that each wait for the other finish only if two threads load them together."""

    def run(threads: int, timeout: float) -> set[str]:
        both_started = threading.Barrier(2, timeout=timeout)
        names = set()

        def load(item):
            names.add(threading.current_thread().name)
            both_started.wait()
            return item

        assert list(prefetched_each([[1, 2]], load, threads=threads)) == [[1, 2]]
        return names

    assert len(run(threads=2, timeout=10)) == 2
    with pytest.raises(threading.BrokenBarrierError):  # one thread: the first item waits in vain
        run(threads=1, timeout=0.5)


def test_the_next_batch_loads_while_the_caller_works_on_this_one():
    second_loaded = threading.Event()

    def load(item):
        if item == "second":
            second_loaded.set()
        return item

    stream = prefetched_each([["first"], ["second"]], load, threads=1)
    assert next(stream) == ["first"]
    assert second_loaded.wait(timeout=10)  # loaded before the caller asked for it
    assert next(stream) == ["second"]


def test_an_error_in_a_loader_reaches_the_caller_with_its_batch():
    def load(item):
        if item == 3:
            raise ValueError("cannot read item 3")
        return item

    stream = prefetched_each([[1, 2], [3, 4]], load, threads=2)
    assert next(stream) == [1, 2]
    with pytest.raises(ValueError, match="cannot read item 3"):
        next(stream)


def test_default_threads_follow_the_cores_this_process_may_use(monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1, 2})
    assert default_loader_threads() == 3
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(64)))
    assert default_loader_threads() == 8
