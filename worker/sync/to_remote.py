"""The local→remote pass (NAV: ToIntegrationTable) of one mapping run.

Order of work: couplings that failed last time (not skipped) and creates still in flight,
then the local records changed since the last pass, in key order. Per chunk of records: read
the coupled remote records in a few requests, decide per record, commit the ids of new
remote records (so a crash can neither duplicate nor orphan them), send the writes as
$batch, and record results, counters and errors in one local transaction; then the chunk's
last key is committed as the pass's progress, so a pass that is killed is resumed after it.

Nothing is assumed about a write whose outcome is not known. A create still in flight from
an earlier pass (its answer lost: a crash, a timeout) is first read back: when the service
has it, it is compared field by field with what it should hold and only the differences are
sent, as an update; only the missing ones are created. A create answered "already exists"
is read back and reconciled the same way. A snapshot is stored only of values the service
confirmed or was read to hold. When the connection fails in the middle of a chunk, what the
service confirmed is recorded before the pass ends; the rest is retried by the next pass."""

from __future__ import annotations

from dataclasses import dataclass, replace
from itertools import chain
from typing import Any

from sqlalchemy.engine import Connection

from worker.remote.batch import Kind as WriteKind
from worker.remote.batch import Operation, OperationResult, connection_failure
from worker.sync import capture, metadata
from worker.sync import couplings as coupling_store
from worker.sync.context import (
    PassContext,
    RecordFailed,
    chunks,
    new_id,
    remote_version,
    unchanged_snapshot,
    unique,
    write_failure,
)
from worker.sync.decide import Action, Kind, Policy, Presence, Seen, decide, update
from worker.sync.local import Unreadable, mark_own_writes
from worker.sync.local_writes import restore_local
from worker.sync.lookups import uncoupled_message
from worker.sync.metadata import PropertyInfo
from worker.sync.model import Coupling, CouplingState, DeletionConflict, Direction, FieldMapping
from worker.sync.pipeline import ChunkPipeline
from worker.sync.transfer import (
    FieldValue,
    constant,
    new_snapshot,
    transform,
)
from worker.sync.values import ValueRefused, value_failure
from worker.sync.values import to_remote as to_remote_value

TO = Direction.TO_INTEGRATION


@dataclass
class _Write:
    """A remote write waiting for its result."""

    kind: WriteKind
    key: str
    coupling: Coupling | None
    values: list[FieldValue]
    written: set[str] | None = None
    left: set[str] | None = None
    remote_id: str = ""
    deletes_local: bool = False
    reconciled: bool = False  # a create whose outcome was unknown, compared and completed
    etag: str | None = None  # the record's version as read: the write's If-Match


@dataclass(frozen=True)
class _Failure:
    coupling: Coupling | None
    key: str
    message: str
    transient: bool = False


def run(px: PassContext, *, full: bool, max_lengths: dict[str, int]) -> None:
    """The pass. A pass that resumes an interrupted one (its old snapshot, after its last
    key done) is followed at once by a fresh one over what was committed since, so that a
    run after a crash leaves nothing pending."""
    with px.engine.begin() as conn:
        retry = coupling_store.to_retry(conn, px.mapping.name, TO)
    first = unique(c.local_id for c in retry)
    while _run_once(px, first, full=full, max_lengths=max_lengths):
        first, full = [], False


def _run_once(px: PassContext, first: list[str], *, full: bool,
              max_lengths: dict[str, int]) -> bool:
    """One pass over ``first``, then the local changes (but those that failed earlier in
    this run: the next run retries them); returns whether it resumed an interrupted pass."""
    with px.engine.begin() as conn:
        changes = capture.collect(conn, px.mapping, px.local, px.where, full=full)
    done = set(first) | px.failed_keys
    work = chain(((chunk, None) for chunk in chunks(first)), (
        (chunk, chunk[-1]) for chunk in chunks(k for k in changes.keys if k not in done)))
    with ChunkPipeline(px.engine, changes.commit_progress) as pipeline:
        for keys, progress in work:
            px.check_cancelled()
            chunk = _Chunk(px, keys, changes.deleted, max_lengths)
            chunk.prepare()
            pipeline.send(chunk, progress)
    with px.engine.begin() as conn:
        changes.commit_mark(conn)
    return changes.resumed


def run_records(px: PassContext, keys: list[str], *, force: bool,
                max_lengths: dict[str, int]) -> None:
    """Synchronize these local records now (NAV's "Synchronize Now"), skipped or not.
    ``force``: the ERP's values win over whatever changed in the CRM (settles an update
    conflict); an uncoupled record is created."""
    _Chunk(px, keys, set(), max_lengths, force=force).run()


def decide_chunk(px: PassContext, keys: list[str], max_lengths: dict[str, int]) -> list[Action]:
    """What the pass would do to these local records, read only (``sync --plan``)."""
    return _Chunk(px, keys, set(), max_lengths).read_and_decide()


class _Chunk:
    def __init__(self, px: PassContext, keys: list[str], deleted: set[str],
                 max_lengths: dict[str, int], *, force: bool = False) -> None:
        self.px = px
        self.force = force
        self.keys = keys
        self.deleted = deleted
        self.max_lengths = max_lengths
        self.fields = px.mapping.fields_for(TO)
        self.writes: list[_Write] = []
        self.intents: list[tuple[str, str]] = []  # (local id, chosen remote id)
        self.failures: list[_Failure] = []
        # Creates answered "already exists", or refused by the service (a 5xx): read back,
        # then reconciled when the service has the record, else failed with the message.
        self.existing: list[tuple[_Write, str | None]] = []
        self.successes: list[coupling_store.Success] = []
        self.uncouple: list[int] = []  # already counted
        self.local_deletes: list[tuple[str, int]] = []
        self.restores: list[tuple[int, str]] = []  # (coupling id, new remote id)
        self.restore_locals: list[Coupling] = []
        self.gone: list[int] = []  # deleted on both sides: only the coupling is left
        # Writes refused because the record changed since it was read (412 on If-Match):
        # read again and decided again once; ``second_look``: this chunk is that decision.
        self.changed: list[_Write] = []
        self.second_look = False

    def run(self) -> None:
        """Synchronize the chunk's records now (no pipeline)."""
        self.prepare()
        self.finish()

    def prepare(self) -> None:
        """Read, decide, and commit the ids of the records to be created."""
        self._decide()
        self._commit_intents()

    def _decide(self) -> None:
        for action in self.read_and_decide():
            self._enact(action)

    def read_and_decide(self) -> list[Action]:
        """Read the chunk (local rows, couplings, lookups, the coupled CRM records: GET
        requests only) and decide each record; nothing is written."""
        px = self.px
        with px.engine.connect() as conn:
            rows = px.local.fetch(conn, self.keys, px.where)
            missing = [k for k in self.keys if k not in rows]
            filtered_out = set(px.local.fetch(conn, missing)) if missing else set()
            cpl = coupling_store.by_local_ids(conn, px.mapping.name, self.keys)
            lookups = {f.id: px.lookups.to_remote(conn, f, [r[f.local_column]
                                                             for r in rows.values()])
                       for f in self.fields if f.lookup_mapping and f.local_column}
        # Coupled records are read to compare; creates still in flight from an earlier
        # pass are read to learn whether the service has them (their answer was lost);
        # records whose local row was deleted, for their version (a delete's If-Match).
        deleting = px.mapping.deletion_conflict is DeletionConflict.PROPAGATE_DELETE
        remote_ids = [c.remote_id for k, c in cpl.items() if not c.skipped
                      and (k in rows or (deleting and k not in filtered_out))
                      and c.state in (CouplingState.COUPLED, CouplingState.CREATING_REMOTE)]
        current = _by_key(px, px.remote.read_by_keys(remote_ids, select=px.remote_select())
                          if remote_ids else [])
        policy = Policy.of(px.mapping)
        return [decide(self._seen(key, cpl.get(key), rows.get(key), key in filtered_out,
                                  current, lookups), policy, TO, force=self.force)
                for key in self.keys]

    def _seen(self, key: str, coupling: Coupling | None, row: Any, out_of_scope: bool,
              current: dict[str, dict[str, Any]], lookups: dict[int, dict[str, str]]) -> Seen:
        record = current.get(coupling.remote_id.lower()) if coupling else None
        source = Presence.PRESENT if row is not None else (
            Presence.OUT_OF_SCOPE if out_of_scope else Presence.ABSENT)
        values: list[FieldValue] = []
        failure: RecordFailed | None = None
        if row is not None and not (coupling is not None and coupling.skipped
                                    and not self.force):
            try:
                values = self._values(row, lookups)
            except RecordFailed as exc:
                failure = exc
        if record is not None:
            values = [replace(v, current=_remote_value(record, v.field)) for v in values]
        return Seen(key, coupling, source,
                    Presence.PRESENT if record is not None else Presence.ABSENT,
                    tuple(values), str(failure) if failure else None,
                    bool(failure and failure.transient),
                    etag=record.get("@odata.etag") if record else None,
                    version=remote_version(record, None))

    def _enact(self, action: Action, record_version: str | None = None) -> None:
        """Turn one decision into the chunk's writes, intents and records to keep."""
        px, a, c = self.px, action, action.coupling
        if a.kind is Kind.SKIP:
            px.count("skipped")
        elif a.kind is Kind.FAIL:
            self._fail_record(c, a.key, a.message, transient=a.transient)
        elif a.kind is Kind.CREATE:
            self._create(c, a.key, list(a.values))
        elif a.kind is Kind.UPDATE:
            assert c is not None and a.written is not None
            self.writes.append(_Write("update", a.key, c, list(a.values), set(a.written),
                                      set(a.left), c.remote_id, reconciled=a.reconciled,
                                      etag=a.etag))
        elif a.kind is Kind.UNCHANGED:
            assert c is not None and a.counter is not None
            px.count(a.counter)
            snapshot = unchanged_snapshot(px, c, list(a.values), set(a.left))
            if snapshot is not None:
                # With remote changes left for the remote→local pass, the stored version
                # stays old so that pass does not take the record for an echo.
                version = None if a.left else a.version
                self.successes.append(coupling_store.Success(c.id, version, None, snapshot))
        elif c is not None:
            self._enact_deletion(a, c)

    def _enact_deletion(self, a: Action, c: Coupling) -> None:
        if a.kind is Kind.DELETE:
            self.writes.append(_Write("delete", a.key, c, [], remote_id=c.remote_id,
                                      etag=a.etag))
        elif a.kind is Kind.GONE:
            self.gone.append(c.id)
        elif a.kind is Kind.DELETE_SOURCE:
            self.local_deletes.append((a.key, c.id))
        elif a.kind is Kind.UNCOUPLE:
            self.px.count("uncoupled")
            if not a.then_create:
                self.uncouple.append(c.id)
                return
            # Uncoupled and, as an uncoupled record of this mapping, created anew: the
            # coupling row is reused for the new record's intent.
            self._recreate(a, c)
        elif a.kind is Kind.RECREATE:
            self._recreate(a, c)
        elif a.kind is Kind.RESTORE:
            self.restore_locals.append(c)

    def _recreate(self, a: Action, c: Coupling) -> None:
        remote_id = new_id()
        self.restores.append((c.id, remote_id))
        self.writes.append(_Write("create", a.key, c, list(a.values), None, set(), remote_id))

    # -- decisions -----------------------------------------------------------------------
    def _values(self, row: Any, lookups: dict[int, dict[str, str]]) -> list[FieldValue]:
        """The remote values of one local row; any field that cannot be read, transformed
        or converted to its property's type fails this record alone, naming the field."""
        properties = self._properties()
        out = []
        for f in self.fields:
            if f.remote_property is None:
                continue
            try:
                out.append(self._value(f, row, lookups, properties.get(f.remote_property)))
            except (ValueError, TypeError, ArithmeticError) as exc:
                raise RecordFailed(value_failure(
                    self.px.mapping.local_table, row[self.px.local.key.name], f, exc)) from None
        return out

    def _value(self, f: FieldMapping, row: Any, lookups: dict[int, dict[str, str]],
               prop: PropertyInfo | None) -> FieldValue:
        if f.local_column is None:
            value = constant(f)
            return FieldValue(f, value, to_remote_value(value, prop))
        source = row[f.local_column]
        if isinstance(source, Unreadable):
            raise ValueRefused(str(source))
        if f.lookup_mapping:
            return FieldValue(f, source, self._lookup(f, source, lookups[f.id]))
        wanted = transform(f, source, TO, self.max_lengths.get(f.remote_property or ""))
        return FieldValue(f, source, to_remote_value(wanted, prop))

    def _properties(self) -> dict[str, PropertyInfo]:
        info = metadata.for_client(self.px.client).get(self.px.mapping.entity_set)
        return info.properties if info is not None else {}

    def _lookup(self, f: FieldMapping, source: Any, resolved: dict[str, str]) -> str | None:
        if source in (None, ""):
            return None
        remote_id = resolved.get(str(source))
        if remote_id is None and not f.clear_value_on_failed_sync:
            # Retried by every pass and never skipped: the referenced record may be
            # coupled by its own mapping's next run.
            raise RecordFailed(uncoupled_message(f, source, self.px.lookups.target(f)),
                               transient=True)
        return remote_id

    def _create(self, coupling: Coupling | None, key: str, values: list[FieldValue]) -> None:
        px = self.px
        if coupling is None:
            if px.mapping.sync_only_coupled and not self.force:
                px.count("skipped")
                return
            remote_id = new_id()
            self.intents.append((key, remote_id))
        else:
            remote_id = coupling.remote_id
        self.writes.append(_Write("create", key, coupling, values, None, set(), remote_id))

    def _fail_record(self, coupling: Coupling | None, key: str, message: str, *,
                     transient: bool = False) -> None:
        if coupling is None:
            if self.px.mapping.sync_only_coupled:
                self.px.count("skipped")
                return
            # Track the failure of a record that has no counterpart yet on an intent, so
            # that it is retried first next time and skipped when it fails the same way.
            remote_id = new_id()
            self.intents.append((key, remote_id))
        self.failures.append(_Failure(coupling, key, message, transient))

    # -- sending and recording ----------------------------------------------------------
    def finish(self) -> None:
        """Send the writes and record their results (after :meth:`prepare`)."""
        px = self.px
        ops = [self._operation(n, w) for n, w in enumerate(self.writes)]
        results = px.client.batch(ops) if ops else []
        with px.engine.begin() as conn:
            fresh = coupling_store.by_local_ids(conn, px.mapping.name,
                                                [k for k, _ in self.intents])
            for result in results:
                self._record(conn, self.writes[result.ref], result, fresh)
            for f in self.failures:
                px.fail(conn, f.coupling or fresh.get(f.key), f.message, local_id=f.key,
                        transient=f.transient)
            coupling_store.record_successes(conn, TO, px.job_id, self.successes)
            px.count("deleted", coupling_store.delete(conn, self.gone))
            coupling_store.delete(conn, self.uncouple)
            if self.local_deletes:
                mark_own_writes(conn)
                for key, _ in self.local_deletes:
                    px.local.delete(conn, key)
                coupling_store.delete(conn, [cid for _, cid in self.local_deletes])
                px.count("deleted", len(self.local_deletes))
            px.flush(conn)
        if self.existing:
            self._reconcile_existing()
        if self.changed:
            self._decide_again()
        if self.restore_locals:
            restore_local(px, self.restore_locals)
        failure = connection_failure(results)
        if failure is not None:
            raise failure  # after recording what the service confirmed

    def prepare_decided(self) -> None:
        """:meth:`prepare` for a chunk whose decisions were made by hand."""
        self._commit_intents()

    def _commit_intents(self) -> None:
        """The ids of records about to be created, and the values sent, committed before
        they are sent: a later pass that finds the record reconciles against them."""
        px = self.px
        creates = {w.key: w for w in self.writes if w.kind == "create"}
        # An update's outcome may be lost too: what it leaves is committed with the
        # intents, so a later pass recognises the CRM's values as crmsync's own write.
        pending = {w.coupling.id: new_snapshot(w.coupling.synced_values, w.values,
                                               pass_direction=TO, written=w.written,
                                               left=w.left or set())
                   for w in self.writes if w.kind == "update" and w.coupling is not None}
        if not creates and not self.intents and not pending and not self.restores:
            return
        snapshots = {key: new_snapshot(None, w.values, pass_direction=TO, written=None,
                                       left=set()) for key, w in creates.items()}
        new = {key for key, _ in self.intents}
        with px.engine.begin() as conn:
            coupling_store.save_pending(conn, pending)
            coupling_store.add_intents(conn, px.mapping.name, self.intents,
                                       CouplingState.CREATING_REMOTE, snapshots)
            for coupling_id, remote_id in self.restores:
                coupling_store.set_remote_id(conn, coupling_id, remote_id,
                                             CouplingState.CREATING_REMOTE)
            coupling_store.save_intent_snapshots(conn, px.mapping.name, {
                key: s for key, s in snapshots.items() if key not in new})

    def _reconcile_existing(self) -> None:
        """Creates answered "already exists" or refused with a 5xx: the record is read back;
        when the service has it, it is compared field by field and only what differs is
        sent. Nothing is assumed about what it holds."""
        px = self.px
        found = _by_key(px, px.remote.read_by_keys([w.remote_id for w, _ in self.existing],
                                                   select=px.remote_select()))
        again = _Chunk(px, [], set(), self.max_lengths)
        for w, refused in self.existing:
            assert w.coupling is not None
            record = found.get(w.remote_id.lower())
            if record is None:
                # Refused with a 5xx and not there: may pass. Answered "already exists" yet
                # no record has this id: another record holds one of its alternate keys
                # (Dataverse answers a duplicate accountnumber so), which lasts.
                again.failures.append(_Failure(
                    w.coupling, w.key, refused or f"the service refused to create "
                    f"{px.mapping.entity_set}({w.remote_id}) as a duplicate, and has no "
                    "record with that id: another record holds the same alternate key "
                    f"(e.g. a number); couple to it with `crmsync couple {px.mapping.name} "
                    f"{w.key} <its id>` or change the value", transient=refused is not None))
                continue
            # An earlier attempt created it, with values not known: no snapshot.
            again._decide_one(w, replace(w.coupling, synced_values=None), record,
                              reconciled=True)
        again.prepare_decided()
        again.finish()

    def _decide_again(self) -> None:
        """Updates refused because the record changed in the CRM since it was read: read
        again and decided again, so a field changed on one side flows and a field changed on
        both is a conflict; never overwritten blindly. A second refusal waits for the next
        pass."""
        px = self.px
        found = _by_key(px, px.remote.read_by_keys([w.remote_id for w in self.changed],
                                                   select=px.remote_select()))
        again = _Chunk(px, [], set(), self.max_lengths)
        again.second_look = True
        for w in self.changed:
            assert w.coupling is not None
            again._decide_one(w, w.coupling, found.get(w.remote_id.lower()),
                              reconciled=w.reconciled)
        again.prepare_decided()
        again.finish()

    def _decide_one(self, w: _Write, coupling: Coupling, record: dict[str, Any] | None, *,
                    reconciled: bool) -> None:
        """Decide a write's record again from a fresh read of it."""
        values = [replace(v, current=_remote_value(record, v.field)) if record else v
                  for v in w.values]
        seen = Seen(w.key, coupling, Presence.PRESENT,
                    Presence.PRESENT if record is not None else Presence.ABSENT,
                    tuple(values), etag=record.get("@odata.etag") if record else None,
                    version=remote_version(record, None))
        policy = Policy.of(self.px.mapping)
        self._enact(update(seen, coupling, policy, TO, reconciled=reconciled)
                    if record is not None else decide(seen, policy, TO))

    def _operation(self, n: int, w: _Write) -> Operation:
        if w.kind == "delete":
            return Operation("delete", self.px.remote, w.remote_id, etag=w.etag, ref=n)
        chosen = (w.values if w.written is None
                  else [v for v in w.values if v.field.key in w.written])
        return Operation(w.kind, self.px.remote, w.remote_id, _payload(self.px, chosen,
                         create=w.kind == "create"), etag=w.etag, ref=n)

    def _record(self, conn: Connection, w: _Write, result: OperationResult,
                fresh: dict[str, Coupling]) -> None:
        px = self.px
        coupling = w.coupling or fresh.get(w.key)
        if result.unknown:
            return  # not confirmed: the intent stays and the next pass reads it back
        if not result.ok:
            message = write_failure(result)
            if result.status == 412 and w.etag is not None and w.kind != "create":
                if not self.second_look and w.kind == "update":
                    self.changed.append(w)
                    return
                message = (f"{px.mapping.entity_set}({w.remote_id}) changed in the CRM while "
                           "this pass wrote it (its ETag no longer matched); the next pass "
                           "reads it again")
                px.fail(conn, coupling, message, local_id=w.key, remote_id=w.remote_id,
                        transient=True)
                return
            if w.kind == "create" and result.transient and coupling is not None:
                # Some services answer a duplicate key with a 500: whether the record is
                # there is read, not inferred from the status.
                self.existing.append((replace(w, coupling=coupling), message))
                return
            px.fail(conn, coupling, message, local_id=w.key, remote_id=w.remote_id,
                    transient=result.transient)
            return
        assert coupling is not None
        if w.kind == "create" and result.already_existed:
            self.existing.append((replace(w, coupling=coupling), None))
            return
        if w.kind == "delete":
            coupling_store.delete(conn, [coupling.id])
            px.count("deleted")
            return
        old = None if w.kind == "create" else coupling.synced_values
        snapshot = new_snapshot(old, w.values, pass_direction=TO, written=w.written,
                                left=w.left or set())
        px.count("inserted" if w.kind == "create" or w.reconciled else "modified")
        # The post-write version lets the remote→local pass recognise this write's echo;
        # when remote changes were left for that pass, the old version is kept instead.
        version = None if w.left else remote_version(result.record, result.etag)
        self.successes.append(coupling_store.Success(
            coupling.id, version, None if w.left else result.modified_on, snapshot))


def _remote_value(record: dict[str, Any], f: FieldMapping) -> Any:
    name = f.remote_read_name
    value = record.get(name) if name else None
    if f.lookup_mapping and isinstance(value, str):
        return value.lower()
    return value


def _payload(px: PassContext, values: list[FieldValue], *, create: bool) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for v in values:
        f = v.field
        assert f.remote_property is not None
        if f.lookup_mapping:
            if v.wanted is None and (f.not_null or create):
                continue
            bind = f.remote_bind_property or f.remote_property
            target = px.lookups.target(f).entity_set
            body[f"{bind}@odata.bind"] = px.remote.bind(target, v.wanted) if v.wanted else None
        else:
            body[f.remote_property] = v.wanted
    return body


def _by_key(px: PassContext, records: Any) -> dict[str, dict[str, Any]]:
    return {str(r[px.mapping.remote_key]).lower(): r for r in records}
