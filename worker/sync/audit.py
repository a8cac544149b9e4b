"""``crmsync audit``: both sides of the coupled records compared with each other and with
each coupling's snapshot, to find drift (see :mod:`worker.sync.drift`): values that differ
without a captured change, which no pass would ever carry.

The records are read with the passes' own read steps (``to_remote.decide_chunk`` and, for
the fields only the remote→local pass carries, ``from_remote.decide_chunk``): local rows by
key, the CRM's records by key in a few GET requests per chunk, lookups translated as a pass
does. Nothing is written to either side. Couplings are read a page at a time by id, each
page compared and reported before the next is read, so memory does not grow with the
number of records; what is kept is the set of local keys with a captured change (what the
next pass reads anyway).

Each audit leaves one row per mapping in ``crmsync.audits`` (records compared, drifted,
fixed), which the gauge ``crmsync_drift_records`` reports. ``fix``: each drifted record is
put on the retry list of the pass(es) that carry it (``drift.carriers``), as a failed
record is, so the next run reads it by key and settles it by the mapping's rules."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from worker.errors import CrmsyncError
from worker.remote.client import parse_datetime
from worker.sync import capture, from_remote, mappings, to_remote
from worker.sync import couplings as coupling_store
from worker.sync.check import require_valid
from worker.sync.context import CHUNK, PassContext, remote_version
from worker.sync.decide import Kind
from worker.sync.drift import FieldDrift, RecordDrift, business_key, carriers, drifted_fields
from worker.sync.engine import SyncEngine
from worker.sync.mapped import by_key
from worker.sync.model import Coupling, Direction, Marks, TableMapping
from worker.sync.order import topological_order

TO, FROM = Direction.TO_INTEGRATION, Direction.FROM_INTEGRATION
FIX_MESSAGE = ("drift found by crmsync audit: the values differ without a captured change; "
               "the next pass carries them")
_COMPARED = (Kind.UPDATE, Kind.UNCHANGED, Kind.FAIL)


@dataclass
class MappingAudit:
    """What the audit of one mapping found."""

    mapping: str
    audited: int = 0
    drifted: int = 0
    fixed: int = 0
    error: str | None = None
    started_at: datetime | None = None

    def as_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"mapping": self.mapping, "audited": self.audited,
                               "drifted": self.drifted, "fixed": self.fixed}
        if self.error is not None:
            doc["error"] = self.error
        return doc


OnDrift = Callable[[str, RecordDrift], None]


def audit_run(sync: SyncEngine, names: Sequence[str] | None, *, fix: bool = False,
              on_drift: OnDrift | None = None,
              check_cancelled: Callable[[], None] = lambda: None) -> list[MappingAudit]:
    """Audit these mappings (None: every enabled one) in dependency order; each drifted
    record is handed to ``on_drift`` as it is found."""
    deps = mappings.dependencies(sync.engine)
    order = topological_order(deps)
    if names is not None:
        unknown = sorted(set(names) - set(deps))
        if unknown:
            raise mappings.MappingNotFound(
                f"no enabled mapping named {', '.join(unknown)}; crmsync mappings list "
                "shows the mappings")
        order = [n for n in order if n in set(names)]
    return [audit_mapping(sync, name, fix=fix, on_drift=on_drift,
                          check_cancelled=check_cancelled) for name in order]


def audit_mapping(sync: SyncEngine, name: str, *, fix: bool = False,
                  on_drift: OnDrift | None = None,
                  check_cancelled: Callable[[], None] = lambda: None) -> MappingAudit:
    result = MappingAudit(name)
    with sync.engine.connect() as conn:
        result.started_at = conn.scalar(sa.text("SELECT now()"))
    try:
        require_valid(sync.engine, sync.clients, name)
        reader = _Reader(sync, *mappings.load_with_marks(sync.engine, name))
        for page in _pages(sync.engine, name):
            check_cancelled()
            drifts = reader.compare(page)
            result.audited += len(page)
            result.drifted += len(drifts)
            for d in drifts:
                if on_drift is not None:
                    on_drift(name, d)
            if fix and drifts:
                result.fixed += _mark(sync.engine, reader.mapping, drifts)
    except CrmsyncError as exc:
        result.error = str(exc)
        return result
    with sync.engine.begin() as conn:
        _save(conn, result)
    return result


def _pages(engine: Engine, name: str) -> Iterator[list[Coupling]]:
    after = 0
    while True:
        with engine.connect() as conn:
            page = coupling_store.settled_after(conn, name, after, CHUNK)
        if not page:
            return
        yield page
        after = page[-1].id


@dataclass
class _Reader:
    """The read steps of both passes of one mapping, for pages of couplings."""

    sync: SyncEngine
    mapping: TableMapping
    marks: Marks
    to: PassContext | None = None
    back: PassContext | None = None
    from_keys: set[str] = field(default_factory=set)   # fields only the remote→local pass has
    captured: set[str] = field(default_factory=set)    # local keys with a captured change
    lengths: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        m = self.mapping
        to_keys: set[str] = set()
        if m.direction.runs(TO):
            self.to = self.sync.context(m, TO, 0, lambda: None, None, self.marks)
            self.lengths = self.sync.clients.max_lengths(m.connection_name, m.entity_set)
            to_keys = {f.key for f in m.fields_for(TO) if f.remote_property}
            with self.sync.engine.connect() as conn:
                keys, _ = capture.peek(conn, m, self.marks, self.to.local, self.to.where,
                                       full=False)
                self.captured = set(keys)
        if m.direction.runs(FROM):
            self.from_keys = {f.key for f in m.fields_for(FROM)
                              if f.local_column and f.key not in to_keys}
            if self.from_keys or self.to is None:
                self.back = self.sync.context(m, FROM, 0, lambda: None, None, self.marks)

    def compare(self, page: list[Coupling]) -> list[RecordDrift]:
        found: dict[int, list[FieldDrift]] = {}
        keys: dict[int, Any] = {}
        records: dict[str, dict[str, Any]] = {}
        by_local = {c.local_id: c for c in page}
        if self.to is not None:
            for a in to_remote.decide_chunk(self.to, list(by_local), self.lengths,
                                            read=records):
                c = by_local.get(a.key)
                record = records.get(c.remote_id.lower()) if c is not None else None
                if c is None or record is None or a.kind not in _COMPARED or not a.values:
                    continue
                found[c.id] = drifted_fields(a.values, c, TO,
                                             erp_captured=a.key in self.captured,
                                             crm_captured=self._crm_captured(record, c))
                keys[c.id] = business_key(self.mapping.business_key_column, a.values, TO, c,
                                          self.mapping.fields)
        if self.back is not None:
            if self.to is None:
                records = by_key(self.back, self.back.remote.read_by_keys(
                    [c.remote_id for c in page], select=self.back.remote_select()))
            self._compare_back(page, records, found, keys)
        return [RecordDrift(c, keys.get(c.id), tuple(found[c.id])) for c in page
                if found.get(c.id)]

    def _compare_back(self, page: list[Coupling], records: dict[str, dict[str, Any]],
                      found: dict[int, list[FieldDrift]], keys: dict[int, Any]) -> None:
        """The fields only the remote→local pass carries, from the same CRM records."""
        assert self.back is not None
        by_remote = {c.remote_id.lower(): c for c in page}
        actions, _ = from_remote.decide_chunk(self.back, list(records.values()),
                                              count_seen=False, force=True)
        for a in actions:
            c = by_remote.get(a.key.lower())
            values = [v for v in a.values if v.field.key in self.from_keys]
            if c is None or a.kind not in _COMPARED or not values:
                continue
            found.setdefault(c.id, []).extend(drifted_fields(
                values, c, FROM, erp_captured=False,  # the local→remote pass skips them
                crm_captured=self._crm_captured(records[c.remote_id.lower()], c)))
            if keys.get(c.id) is None:
                keys[c.id] = business_key(self.mapping.business_key_column, a.values, FROM,
                                          c, self.mapping.fields)

    def _crm_captured(self, record: dict[str, Any], coupling: Coupling) -> bool:
        """Whether the next remote→local pass reads this CRM record as changed: it runs,
        the record's version is not the one of the last sync (else it is taken for
        synced), and a change feed or a modified-on read reaches it."""
        m = self.mapping
        if not m.direction.runs(FROM):
            return False
        version = remote_version(record, None)
        if version is not None and version == coupling.remote_version:
            return False
        client = (self.back or self.to)
        assert client is not None
        if client.client.settings.dialect.change_tracking and not m.remote_filter:
            return True
        since = self.marks.remote_modified_since
        stamp = parse_datetime(record.get(m.remote_modified_on))
        if since is None or stamp is None:
            return True
        return stamp > since if self.marks.remote_modified_complete else \
            stamp >= since - from_remote.OVERLAP


def _mark(engine: Engine, mapping: TableMapping, drifts: list[RecordDrift]) -> int:
    """Put each drifted record on the retry list of the passes that carry it."""
    by_pass: dict[Direction, list[int]] = {TO: [], FROM: []}
    for d in drifts:
        for direction in carriers(d.fields, mapping.direction):
            by_pass[direction].append(d.coupling.id)
    marked: set[int] = set()
    with engine.begin() as conn:
        for direction, ids in by_pass.items():
            if coupling_store.mark_for_retry(conn, ids, direction, FIX_MESSAGE):
                marked.update(ids)
    return len(marked)


def _save(conn: Connection, result: MappingAudit) -> None:
    conn.execute(sa.text(
        """
        INSERT INTO crmsync.audits (mapping_name, started_at, audited, drifted, fixed)
        VALUES (:m, :s, :a, :d, :f)
        ON CONFLICT (mapping_name) DO UPDATE
           SET started_at = EXCLUDED.started_at, finished_at = now(),
               audited = EXCLUDED.audited, drifted = EXCLUDED.drifted, fixed = EXCLUDED.fixed
        """), {"m": result.mapping, "s": result.started_at, "a": result.audited,
               "d": result.drifted, "f": result.fixed})


def drift_by_mapping(conn: Connection) -> list[tuple[str, int]]:
    """The drifted records of each mapping's last audit (0 for a mapping never audited)."""
    return [(r[0], int(r[1])) for r in conn.execute(sa.text(
        "SELECT m.name, coalesce(a.drifted, 0) FROM crmsync.integration_table_mappings m "
        "LEFT JOIN crmsync.audits a ON a.mapping_name = m.name WHERE m.enabled "
        "ORDER BY m.name"))]
