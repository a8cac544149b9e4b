"""The ERP side's writer (``sides.Writer``): the writes of a chunk of the remote→local pass,
and the local rows the local→remote pass's decisions delete or put back. New rows go in a
few statements, updates, restores and deletes each in a savepoint (one bad row fails
alone), all in one transaction marked as crmsync's own (the capture triggers skip it), with
the couplings and the job log's counters and errors."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection

from worker.db.engine import describe_db_error
from worker.remote.client import parse_datetime
from worker.sync import capture
from worker.sync import couplings as coupling_store
from worker.sync.context import (
    PassContext,
    RecordFailed,
    new_id,
    remote_version,
    unchanged_snapshot,
)
from worker.sync.decide import Action, Kind
from worker.sync.local import mark_own_writes
from worker.sync.mapped import local_values
from worker.sync.model import Coupling, CouplingState, Direction, FieldMapping
from worker.sync.sides import Answer, Finished
from worker.sync.transfer import FieldValue, new_snapshot

FROM = Direction.FROM_INTEGRATION


@dataclass
class LocalWrite:
    """One local write waiting to be applied."""

    kind: str  # insert | update | restore
    record: dict[str, Any]
    coupling: Coupling | None
    values: list[FieldValue]
    local_key: str | None = None
    written: set[str] | None = None
    left: set[str] | None = None


@dataclass(frozen=True)
class _Failure:
    coupling: Coupling | None
    remote_id: str
    record: dict[str, Any] | None
    message: str
    transient: bool = False


class LocalWriter:
    """What one chunk writes to the ERP: its decisions (``enact``) gathered, then applied
    and recorded in one transaction (``finish``). ``records``: the CRM records the
    decisions were made from, by id."""

    def __init__(self, px: PassContext, records: Iterable[dict[str, Any]] = ()) -> None:
        self.px = px
        self.fields = [f for f in px.mapping.fields_for(FROM) if f.local_column]
        self.records = {self._rid(r): r for r in records}
        self.writes: list[LocalWrite] = []
        self.failures: list[_Failure] = []
        self.successes: list[coupling_store.Success] = []
        self.uncouple: list[int] = []
        self.deletes: list[Coupling] = []
        self.restores: list[Coupling] = []  # deleted rows to put back from the CRM record

    def _rid(self, record: dict[str, Any]) -> str:
        return str(record[self.px.mapping.remote_key])

    def enact(self, a: Action) -> None:
        """Turn one decision into the chunk's local writes and records to keep."""
        px, c = self.px, a.coupling
        record = self.records.get(a.key)
        if a.kind in (Kind.NOTHING, Kind.WAIT, Kind.SKIP):
            if a.counter:
                px.count(a.counter)
        elif a.kind is Kind.FAIL:
            self._fail(c, a.key, record, a.message, transient=a.transient)
        elif c is None:
            if a.kind is Kind.CREATE and record is not None:
                self.writes.append(LocalWrite("insert", record, None, list(a.values)))
        elif a.kind is Kind.DELETE:
            self.deletes.append(c)
        elif a.kind is Kind.UNCOUPLE:
            self.uncouple.append(c.id)
            if a.then_create and record is not None:
                self.writes.append(LocalWrite("insert", record, None, list(a.values)))
        elif record is None:
            if a.kind is Kind.RECREATE:
                self.restores.append(c)
        else:
            self._enact_record(a, c, record)

    def _enact_record(self, a: Action, c: Coupling, record: dict[str, Any]) -> None:
        values = list(a.values)
        if a.kind is Kind.CREATE:
            self.writes.append(LocalWrite("insert", record, c, values, c.local_id))
        elif a.kind is Kind.UPDATE:
            self.writes.append(LocalWrite("update", record, c, values, c.local_id,
                                          set(a.written or ()), set(a.left)))
        elif a.kind is Kind.UNCHANGED:
            self.px.count("unchanged")
            snapshot = unchanged_snapshot(self.px, c, values, set(a.left))
            if snapshot is not None:
                self.successes.append(_success(self.px, c, record, snapshot))
        elif a.kind is Kind.RECREATE:
            self.writes.append(LocalWrite("restore", record, c, values, c.local_id))

    def _fail(self, coupling: Coupling | None, remote_id: str, record: dict[str, Any] | None,
              message: str, *, transient: bool = False) -> None:
        if coupling is None and self.px.mapping.sync_only_coupled:
            self.px.count("skipped")
            return
        self.failures.append(_Failure(coupling, remote_id, record, message, transient))

    def commit_intents(self) -> None:
        """Nothing to commit first: the ERP's writes and their couplings are one
        transaction."""

    def finish(self) -> Finished:
        """Write the chunk to the ERP in one transaction marked as crmsync's own (each
        record in a savepoint, so one bad row fails alone), with its couplings, counters
        and errors."""
        px = self.px
        if self.restores:
            for item in restored(px, self.restores):
                if isinstance(item, LocalWrite):
                    self.writes.append(item)
                else:
                    self.failures.append(item)
            self.restores = []
        if not (self.writes or self.failures or self.successes or self.uncouple
                or self.deletes or px.has_pending()):
            px.report_reads()  # nothing to commit: the chunk's reads show now
            return Finished()
        with px.chunk_transaction() as conn:
            mark_own_writes(conn)
            inserts = [w for w in self.writes if w.kind == "insert"]
            one_by_one = [w for w in self.writes if w.kind != "insert"]
            one_by_one += self._insert_all(conn, inserts)
            for write in one_by_one:
                self._write(conn, write)
            for coupling in self.deletes:
                self._delete(conn, coupling)
            for f in self.failures:
                self._record_failure(conn, f)
            coupling_store.record_successes(conn, FROM, px.job_id, self.successes)
            px.count("uncoupled", coupling_store.delete(conn, self.uncouple))
        return Finished()

    def _record_failure(self, conn: Connection, f: _Failure) -> None:
        px, coupling = self.px, f.coupling
        if coupling is None:
            local_id = new_id() if px.local.chooses_own_keys() else None
            if local_id is not None:
                coupling_store.add_intent(conn, px.mapping.name, local_id, f.remote_id,
                                          CouplingState.CREATING_LOCAL)
                coupling = coupling_store.by_local_ids(conn, px.mapping.name,
                                                       [local_id])[local_id]
        px.fail(conn, coupling, f.message, remote_id=f.remote_id, transient=f.transient,
                record=f.record)

    def _delete(self, conn: Connection, coupling: Coupling) -> None:
        """A local row whose CRM record was deleted (or the other pass decided to delete);
        a row the database refuses to delete (other rows refer to it) fails alone."""
        try:
            with conn.begin_nested():
                self.px.local.delete(conn, coupling.local_id)
                coupling_store.delete(conn, [coupling.id])
        except sa_exc.DBAPIError as exc:
            self.px.fail(conn, coupling, describe_db_error(exc),
                         transient=answer_of(exc) is Answer.FAILED)
            return
        self.px.count("deleted")

    def _columns(self, w: LocalWrite) -> dict[str, Any]:
        chosen = w.values if w.written is None else [v for v in w.values
                                                     if v.field.key in w.written]
        return {v.field.local_column: v.wanted for v in chosen
                if v.field.local_column and (w.kind == "update" or v.wanted is not None)}

    def _insert_all(self, conn: Connection, writes: list[LocalWrite]) -> list[LocalWrite]:
        """The chunk's new local rows in a few statements (rows, couplings, send-backs);
        returns the writes still to do one by one: all of them when the table picks its
        own keys, or when one row is refused (then each goes alone in its savepoint, so
        only that one fails)."""
        px = self.px
        if len(writes) < 2 or not px.local.chooses_own_keys():
            return writes
        keyed = [(w.local_key or new_id(), w) for w in writes]
        back = send_back_columns(px.mapping, self.fields)
        try:
            with conn.begin_nested():
                returned = px.local.insert_many(
                    conn, [(k, self._columns(w)) for k, w in keyed], back)
                coupling_store.add_intents(
                    conn, px.mapping.name, [(k, self._rid(w.record)) for k, w in keyed
                                            if w.coupling is None], CouplingState.COUPLED)
        except sa_exc.DBAPIError:
            return writes
        made = coupling_store.by_local_ids(conn, px.mapping.name, [k for k, _ in keyed])
        filled = [k for k, w in keyed if filled_by_table(
            getattr(returned.get(k), "_mapping", None), w.values)]
        capture.queue_updates(conn, px.mapping.local_table, filled)
        for key, w in keyed:
            snapshot = new_snapshot(None, w.values, pass_direction=FROM, written=None,
                                    left=set())
            px.count("inserted")
            self.successes.append(_success(self.px, made[key], w.record, snapshot))
        return []

    def _write(self, conn: Connection, w: LocalWrite) -> None:
        px = self.px
        columns = self._columns(w)
        try:
            with conn.begin_nested():
                coupling = w.coupling
                if w.kind == "update":
                    assert coupling is not None and w.local_key is not None
                    px.local.update(conn, w.local_key, columns)
                else:
                    key = w.local_key or (new_id() if px.local.chooses_own_keys() else None)
                    key = px.local.insert(conn, key, columns)
                    self._send_back_defaults(conn, key, w.values)
                    if coupling is None:
                        coupling_store.add_coupled(conn, px.mapping.name, key, self._rid(w.record))
                        coupling = coupling_store.by_local_ids(conn, px.mapping.name, [key])[key]
        except sa_exc.DBAPIError as exc:
            self._record_failure(conn, _Failure(w.coupling, self._rid(w.record), w.record,
                                                describe_db_error(exc),
                                                answer_of(exc) is Answer.FAILED))
            return
        old = None if w.kind != "update" else coupling.synced_values
        snapshot = new_snapshot(old, w.values, pass_direction=FROM, written=w.written,
                                left=w.left or set())
        px.count("modified" if w.kind == "update" else "inserted")
        self.successes.append(_success(self.px, coupling, w.record, snapshot))

    def _send_back_defaults(self, conn: Connection, key: str, values: list[FieldValue]) -> None:
        """A new local row whose table filled in a mapped value itself (a number series, a
        default) is queued as a local change, so the next local→remote pass sends that value
        to the CRM (the record's own insert is crmsync's write and not captured)."""
        if send_back_columns(self.px.mapping, self.fields):
            row = self.px.local.fetch(conn, [key]).get(key)
            if filled_by_table(row, values):
                capture.queue_updates(conn, self.px.mapping.local_table, [key])


def _success(px: PassContext, coupling: Coupling, record: dict[str, Any],
             snapshot: dict[str, Any]) -> coupling_store.Success:
    return coupling_store.Success(
        coupling.id, remote_version(record, None),
        parse_datetime(record.get(px.mapping.remote_modified_on)), snapshot)


# SQLSTATEs of refusals that may pass: serialization failure, deadlock (class 40), a lock
# not available in time, a statement cancelled by a timeout.
_MAY_PASS = ("40", "55P03", "57014")


def answer_of(exc: sa_exc.DBAPIError) -> Answer:
    """The database's answer to one refused row write: a lock, a deadlock or a timeout may
    pass; a constraint or a value the column cannot hold lasts."""
    state = getattr(exc.orig, "sqlstate", None) or ""
    return Answer.FAILED if state.startswith(_MAY_PASS) else Answer.REFUSED


def restored(px: PassContext, couplings: list[Coupling]) -> list[LocalWrite | _Failure]:
    """Deletion policy 'restore_records' seen by the local→remote pass: the deleted local
    rows put back from their CRM records, with their old keys (or the record's failure)."""
    by_remote = {c.remote_id.lower(): c for c in couplings}
    records = list(px.remote.read_by_keys(list(by_remote), select=px.remote_select()))
    fields = [f for f in px.mapping.fields if f.local_column and f.remote_property]
    with px.engine.connect() as conn:
        reverse = {f.id: px.lookups.to_local(conn, f, [r.get(f.remote_read_name or "")
                                                      for r in records])
                   for f in fields if f.lookup_mapping}
    out: list[LocalWrite | _Failure] = []
    for record in records:
        coupling = by_remote[str(record[px.mapping.remote_key]).lower()]
        try:
            values = local_values(px, fields, record, reverse)
        except RecordFailed as exc:
            out.append(_Failure(coupling, coupling.remote_id, record, str(exc),
                                exc.transient))
            continue
        out.append(LocalWrite("restore", record, coupling, values, coupling.local_id))
    return out


def send_back_columns(mapping: Any, fields: list[FieldMapping]) -> list[str]:
    """Mapped columns a new row's table may fill in itself (to send back to the CRM): none
    unless the mapping captures changes by trigger and also runs local→remote."""
    if mapping.change_capture != "trigger" or \
            not mapping.direction.runs(Direction.TO_INTEGRATION):
        return []
    return [f.local_column for f in fields
            if f.direction.runs(Direction.TO_INTEGRATION) and f.local_column]


def filled_by_table(row: Mapping[str, Any] | None, values: list[FieldValue]) -> bool:
    """Whether the table filled in a mapped value that crmsync left empty."""
    if row is None:
        return False
    return any(v.field.direction.runs(Direction.TO_INTEGRATION) and v.field.local_column
               and v.wanted is None and row.get(v.field.local_column) not in (None, "")
               for v in values)

