"""The ordered indexes of one entity set: its keys in order, and its records in
(modified-on, key) order, so that a read by key range or by modified-on range, and every
page after it, costs O(log n + k) as on a database with those indexes.

Entries are tuples whose order is exactly the emulator's sort order (``query``): NULLs
first, then values; the key last. A modified-on entry is ``(has_value, value, key)``, so a
NULL never meets a datetime in a comparison. The store keeps the indexes exact in its one
write path (``Store._store``), which the undo of a change set also goes through.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from sortedcontainers import SortedList

Entry = tuple[Any, ...]


@functools.total_ordering
class _Top:
    """Greater than any key: ``(True, stamp, TOP)`` sorts after every entry of ``stamp``."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Top)

    def __lt__(self, other: object) -> bool:
        return False

    def __hash__(self) -> int:
        return 0


TOP = _Top()


def stamp_entry(stamp: datetime | None, key: str) -> Entry:
    return (stamp is not None, stamp, key)


class SetIndexes:
    """Keys in order and (modified-on, key) entries in order, for one entity set."""

    def __init__(self, modified_on: str) -> None:
        self.modified_on = modified_on
        self.keys: SortedList = SortedList()
        self.stamps: SortedList = SortedList()

    def put(self, key: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        """Replace the entries of ``old`` (the record stored under ``key``, if any) by those
        of ``new`` (None: the record is removed)."""
        if old is not None:
            self.stamps.discard(stamp_entry(old.get(self.modified_on), key))
            if new is None:
                self.keys.discard(key)
        if new is not None:
            self.stamps.add(stamp_entry(new.get(self.modified_on), key))
            if old is None:
                self.keys.add(key)

    def clear(self) -> None:
        self.keys.clear()
        self.stamps.clear()

    def keys_after(self, after: str | None) -> Iterator[str]:
        """Keys in order, strictly after ``after`` (from the first when None)."""
        if after is None:
            return iter(self.keys)
        return self.keys.irange(minimum=after, inclusive=(False, True))

    def stamped(self, low: Entry | None, high: Entry | None,
                inclusive: tuple[bool, bool] = (True, True)) -> Iterator[str]:
        """Keys of the entries from ``low`` to ``high`` (None: unbounded), in
        (modified-on, key) order."""
        for entry in self.stamps.irange(minimum=low, maximum=high, inclusive=inclusive):
            yield entry[2]


def stamp_bounds(op: str, value: datetime) -> tuple[Entry, Entry, tuple[bool, bool]] | None:
    """The entry range of ``modified_on op value`` (every entry matching it lies in it),
    or None for an operator no range expresses (``ne``)."""
    lowest, highest = (True,), (True, TOP)  # every non-NULL stamp lies between these
    if op == "eq":
        return (True, value), (True, value, TOP), (True, True)
    if op == "ge":
        return (True, value), highest, (True, True)
    if op == "gt":
        return (True, value, TOP), highest, (False, True)
    if op == "le":
        return lowest, (True, value, TOP), (True, True)
    if op == "lt":
        return lowest, (True, value), (True, False)
    return None
