"""The ERP side's writes of a chunk (the remote→local pass's, and a restore asked for by
the local→remote pass): the local values a CRM record maps to, new rows in a few statements,
updates and restores each in a savepoint, couplings and the job log in the same transaction,
and the CRM deletes that follow a local deletion. Neither pass imports the other: both hand
their local writes to this module."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection

from worker.db.engine import describe_db_error
from worker.remote.batch import Operation, connection_failure
from worker.remote.client import parse_datetime
from worker.sync import couplings as coupling_store
from worker.sync.context import PassContext, RecordFailed, new_id, remote_version, write_failure
from worker.sync.local import mark_own_writes
from worker.sync.model import Coupling, CouplingState, Direction, FieldMapping
from worker.sync.transfer import FieldValue, constant, new_snapshot, transform
from worker.sync.values import to_local as to_local_value
from worker.sync.values import value_failure

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



class LocalWriter:
    """What one chunk writes to the ERP, gathered from its decisions, then applied."""

    def __init__(self, px: PassContext, fields: list[FieldMapping]) -> None:
        self.px = px
        self.fields = fields
        self.writes: list[LocalWrite] = []
        self.failures: list[tuple[Coupling | None, dict[str, Any], str, bool]] = []
        self.successes: list[coupling_store.Success] = []
        self.uncouple: list[int] = []
        self.remote_deletes: list[tuple[Coupling, dict[str, Any]]] = []  # with the record read

    def _rid(self, record: dict[str, Any]) -> str:
        return str(record[self.px.mapping.remote_key])

    def success(self, coupling: Coupling, record: dict[str, Any],
                 snapshot: dict[str, Any]) -> coupling_store.Success:
        return coupling_store.Success(
            coupling.id, remote_version(record, None),
            parse_datetime(record.get(self.px.mapping.remote_modified_on)), snapshot)

    def apply(self) -> None:
        """Write the chunk to the ERP in one transaction marked as crmsync's own (each
        record in a savepoint, so one bad row fails alone), with its couplings, counters
        and errors; then delete the CRM records whose local rows were deleted."""
        px = self.px
        if not (self.writes or self.failures or self.successes or self.uncouple
                or self.remote_deletes or px.has_pending()):
            return
        with px.engine.begin() as conn:
            mark_own_writes(conn)
            inserts = [w for w in self.writes if w.kind == "insert"]
            one_by_one = [w for w in self.writes if w.kind != "insert"]
            one_by_one += self._insert_all(conn, inserts)
            for write in one_by_one:
                self._write(conn, write)
            for coupling, record, message, transient in self.failures:
                if coupling is None:
                    local_id = new_id() if px.local.chooses_own_keys() else None
                    if local_id is not None:
                        coupling_store.add_intent(conn, px.mapping.name, local_id,
                                                  self._rid(record), CouplingState.CREATING_LOCAL)
                        coupling = coupling_store.by_local_ids(
                            conn, px.mapping.name, [local_id])[local_id]
                px.fail(conn, coupling, message, remote_id=self._rid(record),
                        transient=transient, record=record)
            coupling_store.record_successes(conn, FROM, px.job_id, self.successes)
            px.count("uncoupled", coupling_store.delete(conn, self.uncouple))
            px.flush(conn)
        if self.remote_deletes:
            self._delete_remote()

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
        back = self._send_back_columns()
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
        filled = [k for k, w in keyed if self._filled_by_table(returned.get(k), w.values)]
        if filled:
            conn.execute(sa.text(
                "INSERT INTO crmsync.local_changes (table_name, row_key, operation) "
                "SELECT :t, k, 'U' FROM unnest(CAST(:ks AS text[])) AS k"),
                {"t": px.mapping.local_table, "ks": filled})
        for key, w in keyed:
            snapshot = new_snapshot(None, w.values, pass_direction=FROM, written=None,
                                    left=set())
            px.count("inserted")
            self.successes.append(self.success(made[key], w.record, snapshot))
        return []

    def _send_back_columns(self) -> list[str]:
        """Mapped columns a new row's table may fill in itself, to send back to the CRM."""
        px = self.px
        if px.mapping.change_capture != "trigger" or \
                not px.mapping.direction.runs(Direction.TO_INTEGRATION):
            return []
        return [f.local_column for f in self.fields
                if f.direction.runs(Direction.TO_INTEGRATION) and f.local_column]

    def _filled_by_table(self, row: Any, values: list[FieldValue]) -> bool:
        if row is None:
            return False
        mapping = row._mapping
        return any(v.field.direction.runs(Direction.TO_INTEGRATION) and v.field.local_column
                   and v.wanted is None and mapping.get(v.field.local_column) not in (None, "")
                   for v in values)

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
            self._fail_write(conn, w, describe_db_error(exc))
            return
        old = None if w.kind != "update" else coupling.synced_values
        snapshot = new_snapshot(old, w.values, pass_direction=FROM, written=w.written,
                                left=w.left or set())
        px.count("modified" if w.kind == "update" else "inserted")
        self.successes.append(self.success(coupling, w.record, snapshot))

    def _send_back_defaults(self, conn: Connection, key: str, values: list[FieldValue]) -> None:
        """A new local row whose table filled in a mapped value itself (a number series, a
        default) is queued as a local change, so the next local→remote pass sends that value
        to the CRM (the record's own insert is crmsync's write and not captured)."""
        px = self.px
        if px.mapping.change_capture != "trigger" or \
                not px.mapping.direction.runs(Direction.TO_INTEGRATION):
            return
        row = px.local.fetch(conn, [key]).get(key)
        if row is None:
            return
        filled = [v for v in values if v.field.direction.runs(Direction.TO_INTEGRATION)
                  and v.field.local_column and v.wanted is None
                  and row[v.field.local_column] not in (None, "")]
        if filled:
            conn.execute(sa.text(
                "INSERT INTO crmsync.local_changes (table_name, row_key, operation) "
                "VALUES (:t, :k, 'U')"), {"t": px.mapping.local_table, "k": key})

    def _fail_write(self, conn: Connection, w: LocalWrite, message: str) -> None:
        coupling = w.coupling
        if coupling is None and self.px.local.chooses_own_keys():
            local_id = new_id()
            coupling_store.add_intent(conn, self.px.mapping.name, local_id, self._rid(w.record),
                                      CouplingState.CREATING_LOCAL)
            coupling = coupling_store.by_local_ids(conn, self.px.mapping.name,
                                                   [local_id])[local_id]
        self.px.fail(conn, coupling, message, remote_id=self._rid(w.record), record=w.record)

    def _delete_remote(self) -> None:
        px = self.px
        # If-Match with the version this pass read: a record a CRM user changed since is
        # not deleted by this pass; the next one reads it again.
        ops = [Operation("delete", px.remote, c.remote_id, etag=r.get("@odata.etag"), ref=n)
               for n, (c, r) in enumerate(self.remote_deletes)]
        results = px.client.batch(ops)
        with px.engine.begin() as conn:
            for result in results:
                coupling, record = self.remote_deletes[result.ref]
                if result.ok:
                    coupling_store.delete(conn, [coupling.id])
                    px.count("deleted")
                elif result.status == 412:
                    px.fail(conn, coupling, f"{px.mapping.entity_set}({coupling.remote_id}) "
                            "changed in the CRM after this pass read it (its ETag no longer "
                            "matched); not deleted, the next pass reads it again",
                            transient=True)
                elif not result.unknown:
                    px.fail(conn, coupling, write_failure(result),
                            transient=result.transient)
            px.flush(conn)
        failure = connection_failure(results)
        if failure is not None:
            raise failure



def local_values(px: PassContext, fields: list[FieldMapping], record: dict[str, Any],
                 reverse: dict[int, dict[str, object]]) -> list[FieldValue]:
    """The local values a remote record maps to (lookups translated back, text cut to the
    local column's length)."""
    out = []
    for f in fields:
        assert f.local_column is not None
        try:
            out.append(_local_value(px, f, record, reverse))
        except (ValueError, TypeError, ArithmeticError) as exc:
            raise RecordFailed(value_failure(
                px.mapping.entity_set, record.get(px.mapping.remote_key), f, exc)) from None
    return out


def _local_value(px: PassContext, f: FieldMapping, record: dict[str, Any],
                 reverse: dict[int, dict[str, object]]) -> FieldValue:
    """One field's local value: transformed, then converted to the column's type (a value
    the column cannot hold raises ValueRefused instead of failing the chunk's write)."""
    assert f.local_column is not None
    column = px.local.table.c[f.local_column]
    if f.remote_property is None:
        value = constant(f)
        return FieldValue(f, value, to_local_value(value, column))
    source = record.get(f.remote_read_name or f.remote_property)
    if f.lookup_mapping:
        source = source.lower() if isinstance(source, str) else source
        wanted = reverse[f.id].get(source) if source else None
        if source and wanted is None and not f.clear_value_on_failed_sync:
            target = px.lookups.target(f)
            raise RecordFailed(
                f"{f.remote_property} {source} must be coupled to a record in "
                f"{target.mapping.local_table} (mapping {target.mapping.name})",
                transient=True)
        return FieldValue(f, source, wanted)
    wanted = transform(f, source, FROM, px.local.max_length(f.local_column))
    return FieldValue(f, source, to_local_value(wanted, column))


def restore_local(px: PassContext, couplings: list[Coupling]) -> None:
    """Deletion policy 'restore_records' seen by the local→remote pass: put the deleted
    local records back from their remote counterparts, with their old keys."""
    by_remote = {c.remote_id.lower(): c for c in couplings}
    records = list(px.remote.read_by_keys(list(by_remote), select=px.remote_select()))
    fields = [f for f in px.mapping.fields if f.local_column and f.remote_property]
    chunk = LocalWriter(px, fields)
    with px.engine.connect() as conn:
        reverse = {f.id: px.lookups.to_local(conn, f, [r.get(f.remote_read_name or "")
                                                      for r in records])
                   for f in fields if f.lookup_mapping}
    for record in records:
        coupling = by_remote[str(record[px.mapping.remote_key]).lower()]
        try:
            values = local_values(px, fields, record, reverse)
        except RecordFailed as exc:
            chunk.failures.append((coupling, record, str(exc), exc.transient))
            continue
        chunk.writes.append(LocalWrite("restore", record, coupling, values, coupling.local_id))
    chunk.apply()
