"""What applying a mapping document changes: the difference between the mappings in the
database and the document, as a list of changes that print as lines ("+ mapping VENDOR",
"~ mapping CUSTOMER: remote_filter: … -> …") and that ``mappings.apply_plan`` executes.
Pure: both sides are normalized ``MappingDoc`` values (see worker/sync/documents.py).

Field mappings keep their ids when they change (the couplings' snapshots of synced values
refer to them): a field of the document is matched to the stored one with the same local
column, else the same remote property. Job queue entries are matched in order, and only
for mappings whose document states ``entries``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import time, timedelta
from typing import Any

from worker.sync.documents import (
    ENTRY_COLUMNS,
    FIELD_COLUMNS,
    MAPPING_COLUMNS,
    MappingDoc,
    format_interval,
)

# A change to any of these changes which records a pass reads: the mapping's high-water
# marks are cleared so its next run reads every record again (NAV's full synchronization).
SCOPE_COLUMNS = ("local_table", "local_key", "entity_set", "connection_name", "direction",
                 "local_filter", "remote_filter", "sync_only_coupled", "change_capture",
                 "local_modified_column", "remote_key", "remote_modified_on")
# A change to any of these needs the capture triggers re-installed.
CAPTURE_COLUMNS = ("local_table", "local_key", "change_capture")


@dataclass(frozen=True)
class Change:
    """One row to add ('+'), change ('~') or remove ('-')."""

    op: str
    kind: str  # mapping, dependency, field, entry
    mapping: str
    values: Mapping[str, Any] = field(default_factory=dict)
    differences: tuple[tuple[str, Any, Any], ...] = ()
    row_id: int | None = None
    label: str = ""

    def describe(self) -> str:
        what = f"{self.kind} {self.mapping}" + (f" {self.label}" if self.label else "")
        if not self.differences:
            return f"{self.op} {what}"
        shown = "; ".join(f"{name}: {_show(old)} -> {_show(new)}"
                          for name, old, new in self.differences)
        return f"{self.op} {what}: {shown}"


@dataclass
class Plan:
    """The changes in the order they are applied, and notes that do not block."""

    changes: list[Change] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # mappings not in the document, not pruned
    notes: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.changes

    def lines(self) -> list[str]:
        out = [c.describe() for c in self.changes]
        if self.kept:
            out.append(f"  kept (not in the document; --prune removes them): "
                       f"{', '.join(self.kept)}")
        return out


def plan(current: Sequence[MappingDoc], wanted: Sequence[MappingDoc], *,
         prune: bool = False) -> Plan:
    """The changes that turn ``current`` (the database) into ``wanted`` (the document)."""
    result = Plan()
    stored = {d.name: d for d in current}
    for doc in wanted:
        before = stored.get(doc.name)
        if before is None:
            result.changes.append(Change("+", "mapping", doc.name, doc.columns))
        else:
            diff = _differences(before.columns, doc.columns, MAPPING_COLUMNS)
            if diff:
                result.changes.append(Change("~", "mapping", doc.name, doc.columns, diff))
    for doc in wanted:
        before = stored.get(doc.name)
        result.changes += _dependencies(doc, before)
        result.changes += _fields(doc, before)
        if doc.entries is not None:
            result.changes += _entries(doc, before)
    names = {d.name for d in wanted}
    gone = [d.name for d in current if d.name not in names]
    if prune:
        result.changes += [Change("-", "mapping", name) for name in gone]
    else:
        result.kept = gone
    return result


def _dependencies(doc: MappingDoc, before: MappingDoc | None) -> list[Change]:
    old = set(before.depends_on) if before else set()
    new = set(doc.depends_on)
    return ([Change("-", "dependency", doc.name, {"depends_on": p}, label=f"-> {p}")
             for p in sorted(old - new)]
            + [Change("+", "dependency", doc.name, {"depends_on": p}, label=f"-> {p}")
               for p in doc.depends_on if p not in old])


def _fields(doc: MappingDoc, before: MappingDoc | None) -> list[Change]:
    """Removals first (they free the unique local column / remote property), then changes,
    then additions."""
    stored = list(before.fields) if before else []
    matched: dict[int, dict[str, Any]] = {}
    for n, f in enumerate(doc.fields):
        found = _match(stored, matched, f, "local_column") or \
            _match(stored, matched, f, "remote_property")
        if found is not None:
            matched[n] = found
    taken = {id(f) for f in matched.values()}
    removed = [Change("-", "field", doc.name, row_id=f["_id"], label=_label(f))
               for f in stored if id(f) not in taken]
    changed, added = [], []
    for n, f in enumerate(doc.fields):
        label = f"fields[{n}] ({_label(f)})"
        if n in matched:
            diff = _differences(matched[n], f, FIELD_COLUMNS)
            if diff:
                changed.append(Change("~", "field", doc.name, f, diff, matched[n]["_id"], label))
        else:
            added.append(Change("+", "field", doc.name, f, label=label))
    return removed + changed + added


def _match(stored: list[dict[str, Any]], matched: Mapping[int, dict[str, Any]],
           wanted: Mapping[str, Any], side: str) -> dict[str, Any] | None:
    if wanted[side] is None:
        return None
    used = {id(f) for f in matched.values()}
    for f in stored:
        if id(f) not in used and f[side] == wanted[side]:
            return f
    return None


def _entries(doc: MappingDoc, before: MappingDoc | None) -> list[Change]:
    stored = list(before.entries or ()) if before else []
    out: list[Change] = []
    for n, e in enumerate(doc.entries or ()):
        label = f"entries[{n}]"
        if n < len(stored):
            diff = _differences(stored[n], e, ENTRY_COLUMNS)
            if diff:
                out.append(Change("~", "entry", doc.name, e, diff, stored[n]["_id"], label))
        else:
            out.append(Change("+", "entry", doc.name, e, label=label))
    out += [Change("-", "entry", doc.name, row_id=e["_id"], label=f"id {e['_id']}")
            for e in stored[len(doc.entries or ()):]]
    return out


def _differences(old: Mapping[str, Any], new: Mapping[str, Any],
                 columns: Mapping[str, Any]) -> tuple[tuple[str, Any, Any], ...]:
    return tuple((c, old.get(c), new.get(c)) for c in columns
                 if _normal(old.get(c)) != _normal(new.get(c)))


def _normal(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


def _label(f: Mapping[str, Any]) -> str:
    return f"{f.get('local_column') or '(constant)'} <-> {f.get('remote_property') or '(constant)'}"


def _show(v: Any) -> str:
    if isinstance(v, timedelta):
        return repr(format_interval(v))
    if isinstance(v, time):
        return repr(v.isoformat(timespec="minutes" if not v.second else "seconds"))
    if v is None:
        return "(none)"
    return repr(v)
