"""The remote→local pass reads its next page while it decides the one before
(``pipeline.read_ahead``): same items, same order, failures where they happened, and a
caller that stops early leaves no thread reading on."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import closing

import pytest

from worker.sync.pipeline import read_ahead


def _pages(made: list[int], count: int, *, fail_at: int | None = None) -> Iterator[int]:
    for n in range(count):
        if n == fail_at:
            raise ConnectionError(f"page {n} was cut off")
        time.sleep(0.005)
        made.append(n)
        yield n


def _reading() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "crmsync-read-ahead"]


def test_items_come_in_order_while_the_next_is_made() -> None:
    made = [threading.Event() for _ in range(21)]

    def pages() -> Iterator[int]:
        for n in range(20):
            made[n].set()
            yield n

    seen = []
    for n in read_ahead(pages()):
        if n < 19:  # the next page is read while this one is handled
            assert made[n + 1].wait(10)
        seen.append(n)
    assert seen == list(range(20))
    assert not _reading()


def test_a_failure_is_raised_after_the_items_before_it() -> None:
    seen = []
    with pytest.raises(ConnectionError, match="page 3 was cut off"):
        for n in read_ahead(_pages([], 10, fail_at=3)):
            seen.append(n)
    assert seen == [0, 1, 2]
    assert not _reading()


def test_a_caller_that_stops_early_stops_the_reading() -> None:
    made: list[int] = []
    with pytest.raises(RuntimeError), closing(read_ahead(_pages(made, 1000))) as ahead:
        for n in ahead:
            if n == 2:
                raise RuntimeError("cancelled")
    assert not _reading()
    assert len(made) <= 5  # one page ahead, not the whole stream
