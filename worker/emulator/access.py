"""How a collection read reaches its rows: by key or alternate key, by a range of the
modified-on index, by walking an ordered index from the page's cursor, or (only when the
filter and order give no index a use) by scanning the set.

The plan comes from the filter's shape (``filters.Shape``): ``key eq a or key eq b …`` and
``altkey eq 'x'`` are point lookups; ``modifiedon ge/gt/le/lt/eq <date-time>`` terms of an
``and`` narrow a range of the (modified-on, key) index. The whole predicate is still applied
to every candidate, so a plan only decides which records are looked at, never which
match. A read ordered by (modified-on, key) or by key alone, the orders crmsync pages in,
walks the index from the page's cursor and stops when the page is full: each page costs
O(log n + page size), however large the set.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from worker.emulator.filters import AllOf, AnyOf, Comparison, Shape
from worker.emulator.indexes import Entry, stamp_bounds, stamp_entry
from worker.emulator.query import CollectionQuery, Record, SortValues
from worker.emulator.schema import EntitySet

if TYPE_CHECKING:
    from worker.emulator.store import Store

Range = tuple[Entry | None, Entry | None, tuple[bool, bool]]


@dataclass(frozen=True)
class Plan:
    """Candidates of a filter: ``points`` ((property, value) of key or alternate-key
    equalities, any of which may match), or a ``stamps`` range; neither: every record."""

    points: tuple[tuple[str, Any], ...] | None = None
    stamps: Range | None = None


def plan_for(entity_set: EntitySet, shape: Shape | None) -> Plan:
    """The narrowest candidate set the filter's shape allows."""
    if isinstance(shape, Comparison):
        return _comparison_plan(entity_set, shape)
    if isinstance(shape, AnyOf):
        plans = [plan_for(entity_set, term) for term in shape.terms]
        if all(p.points is not None for p in plans):
            return Plan(points=tuple(pt for p in plans for pt in p.points or ()))
        return Plan()
    if isinstance(shape, AllOf):
        plans = [plan_for(entity_set, term) for term in shape.terms]
        points = [p for p in plans if p.points is not None]
        if points:
            return min(points, key=lambda p: len(p.points or ()))
        ranges = [p.stamps for p in plans if p.stamps is not None]
        return Plan(stamps=_intersect(ranges)) if ranges else Plan()
    return Plan()


def _comparison_plan(entity_set: EntitySet, term: Comparison) -> Plan:
    indexed = term.name == entity_set.key or term.name in entity_set.alternate_keys
    if term.op == "eq" and indexed:
        return Plan(points=((term.name, term.value),))
    if term.name == entity_set.modified_on and isinstance(term.value, datetime):
        bounds = stamp_bounds(term.op, term.value)
        if bounds is not None:
            return Plan(stamps=bounds)
    return Plan()


def _intersect(ranges: list[Range]) -> Range:
    """The range inside every one of ``ranges`` (of a lower bound, the later one wins; of
    equal bounds, the exclusive one)."""
    low, high, (low_in, high_in) = ranges[0]
    for other_low, other_high, (other_low_in, other_high_in) in ranges[1:]:
        if low is None or (other_low is not None and (other_low, not other_low_in)
                           > (low, not low_in)):
            low, low_in = other_low, other_low_in
        if high is None or (other_high is not None and (other_high, other_high_in)
                            < (high, high_in)):
            high, high_in = other_high, other_high_in
    return low, high, (low_in, high_in)


class IndexedRows:
    """The rows of one collection read, reached as its plan says (a ``query.RowSource``).
    Call it under the store's lock: index walks read the live indexes."""

    def __init__(self, store: Store, entity_set: EntitySet, query: CollectionQuery) -> None:
        self.store = store
        self.entity_set = entity_set
        self.query = query
        self.plan = plan_for(entity_set, query.shape)
        self._stamp_order = ((entity_set.modified_on, False), (entity_set.key, False))

    def in_order(self, after: SortValues | None) -> Iterator[Record] | None:
        """The matching records after ``after`` in the query's order, when an index has
        them in that order; None otherwise."""
        if self.plan.points is not None:
            return None
        indexes = self.store.indexes(self.entity_set.name)
        if self.query.order == self._stamp_order:
            low, high, inclusive = self.plan.stamps or (None, None, (True, True))
            if after is not None:
                cursor = stamp_entry(after[0], after[1])
                if low is None or cursor >= low:
                    low, inclusive = cursor, (False, inclusive[1])
            return self._matching(indexes.stamped(low, high, inclusive))
        if self.query.order == ((self.entity_set.key, False),) and self.plan.stamps is None:
            return self._matching(indexes.keys_after(None if after is None else after[0]))
        return None

    def matching(self) -> Iterable[Record]:
        """Every matching record, in no particular order."""
        if self.plan.points is not None:
            return self._matching(self._point_keys())
        if self.plan.stamps is not None:
            low, high, inclusive = self.plan.stamps
            return self._matching(self.store.indexes(self.entity_set.name)
                                  .stamped(low, high, inclusive))
        return self.store.scan(self.entity_set.name, self.query.predicate)

    def _point_keys(self) -> Iterator[str]:
        seen: set[str] = set()
        for name, value in self.plan.points or ():
            key = (value if name == self.entity_set.key
                   else self.store.alternate_owner(self.entity_set.name, name, value))
            if isinstance(key, str) and key not in seen:
                seen.add(key)
                yield key

    def _matching(self, keys: Iterable[str]) -> Iterator[Record]:
        predicate = self.query.predicate
        for key in keys:
            record = self.store.get(self.entity_set.name, key)
            if record is not None and (predicate is None or predicate(record)):
                yield record
