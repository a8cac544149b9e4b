"""The CRM side's writer (``sides.Writer``): the writes of a chunk of the local→remote pass,
and the CRM records the remote→local pass's decisions delete or mark to be created again.
Creates go with their intents (id and values committed before they are sent), updates with
what they leave (committed too, so a lost answer is recognised), deletes with the record's
ETag; the outcomes are recorded with the couplings and the job log; creates answered
"already exists" and updates refused by a changed ETag are read back and decided again.
What is assumed of a write is only what the service confirmed or was read to hold."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy.engine import Connection

from worker.db.engine import asynchronous_commit
from worker.remote.batch import Kind as WriteKind
from worker.remote.batch import Operation, OperationResult, connection_failure
from worker.sync import couplings as coupling_store
from worker.sync.context import (
    PassContext,
    new_id,
    remote_version,
    unchanged_snapshot,
    write_failure,
)
from worker.sync.couplings import NewCouplings
from worker.sync.decide import Action, Kind, Policy, Presence, Seen, decide, update
from worker.sync.mapped import by_key, remote_value
from worker.sync.model import Coupling, CouplingState, Direction
from worker.sync.sides import Again, Answer, Finished
from worker.sync.transfer import FieldValue, new_snapshot

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
    # The snapshot a create or update leaves when the service applies it: made once, for
    # the intent committed before sending, and stored as it is when the write succeeds.
    sent: dict[str, Any] | None = None
    # The coupling's column the intent committed ``sent`` in (None: not committed), which
    # a success keeps rather than sending the snapshot again.
    stored: coupling_store.Kept | None = None


@dataclass(frozen=True)
class _Failure:
    coupling: Coupling | None
    key: str
    message: str
    transient: bool = False


class RemoteWriter:
    """What one chunk of the local→remote pass writes: its decisions turned into CRM writes,
    intents and records to keep (``enact``), the intents committed before anything is sent
    (``commit_intents``), then the writes sent as $batch and their outcomes recorded with the
    job log in one transaction (``finish``)."""

    def __init__(self, px: PassContext, *, second_look: bool = False) -> None:
        self.px = px
        self.writes: list[_Write] = []
        self.intents: list[tuple[str, str]] = []  # (local id, chosen remote id)
        self.failures: list[_Failure] = []
        # Creates answered "already exists", or refused by the service (a 5xx): read back,
        # then reconciled when the service has the record, else failed with the message.
        self.existing: list[tuple[_Write, str | None]] = []
        self.successes: list[coupling_store.Success] = []
        self.uncouple: list[int] = []  # already counted
        self.restores: list[tuple[int, str]] = []  # (coupling id, new remote id)
        self.gone: list[int] = []  # deleted on both sides: only the coupling is left
        # Writes refused because the record changed since it was read (412 on If-Match):
        # read again and decided again once; ``second_look``: this chunk is that decision.
        self.changed: list[_Write] = []
        self.second_look = second_look
        self.fresh = NewCouplings.none()  # the intents' couplings, by local id

    def enact(self, action: Action) -> None:
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
            # The CRM record was deleted (seen by the remote→local pass): a new id is
            # committed as its intent, and the next local→remote pass creates it.
            self.restores.append((c.id, new_id()))

    def _recreate(self, a: Action, c: Coupling) -> None:
        remote_id = new_id()
        self.restores.append((c.id, remote_id))
        self.writes.append(_Write("create", a.key, c, list(a.values), None, set(), remote_id))

    # -- decisions -----------------------------------------------------------------------
    def _create(self, coupling: Coupling | None, key: str, values: list[FieldValue]) -> None:
        if coupling is None:  # decided to be created: its id is chosen now
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
    def finish(self) -> Finished:
        """Send the writes and record their results (after :meth:`commit_intents`); the
        records to decide again, and a connection failure, go back to the runner."""
        px = self.px
        ops = [_operation(px, n, w) for n, w in enumerate(self.writes)]
        results = px.client.batch(ops) if ops else []
        with px.chunk_transaction() as conn:
            asynchronous_commit(conn)  # what it loses in a crash, the intents find again
            fresh = self.fresh
            for result in results:
                self._record(conn, self.writes[result.ref], result, fresh)
            for f in self.failures:
                px.fail(conn, f.coupling or fresh.get(f.key), f.message, local_id=f.key,
                        transient=f.transient)
            coupling_store.record_successes(conn, TO, px.job_id, self.successes)
            px.count("deleted", coupling_store.delete(conn, self.gone))
            coupling_store.delete(conn, self.uncouple)
        again = []
        if self.existing:
            again.append(Again(reconciled(px, self.existing)))
        if self.changed:
            again.append(Again(decided_again(px, self.changed), second_look=True))
        return Finished(again, connection_failure(results))

    def commit_intents(self) -> None:
        """The ids of records about to be created, and the values sent, committed before
        they are sent: a later pass that finds the record reconciles against them."""
        px = self.px
        for w in self.writes:
            w.sent = _sent(w)
        creates = {w.key: w for w in self.writes if w.kind == "create"}
        pending, recognised = _pending(self.writes)
        if not creates and not self.intents and not pending and not self.restores:
            return
        snapshots = {key: w.sent for key, w in creates.items() if w.sent is not None}
        new = {key for key, _ in self.intents}
        with px.engine.begin() as conn:
            with_pending = coupling_store.save_pending(conn, pending, recognised)
            self.fresh = coupling_store.add_intents(conn, px.mapping.name, self.intents,
                                                    CouplingState.CREATING_REMOTE, snapshots)
            for coupling_id, remote_id in self.restores:
                coupling_store.set_remote_id(conn, coupling_id, remote_id,
                                             CouplingState.CREATING_REMOTE)
            in_flight = coupling_store.save_intent_snapshots(conn, px.mapping.name, {
                key: s for key, s in snapshots.items() if key not in new})
        _note_stored(self.writes, in_flight | set(self.fresh.ids), with_pending)

    def _record(self, conn: Connection, w: _Write, result: OperationResult,
                fresh: NewCouplings) -> None:
        answer = answer_of(result)
        if answer is Answer.UNKNOWN:
            return  # not confirmed: the intent stays and the next pass reads it back
        if answer is not Answer.CONFIRMED or w.kind == "delete" or (
                w.kind == "create" and result.already_existed):
            self._record_other(conn, w, result, answer, w.coupling or fresh.get(w.key))
            return
        # A create or update the service applied (most of a chunk: only the coupling's id
        # is needed, and an update's coupling is the one it was decided from).
        coupling_id = w.coupling.id if w.coupling is not None else fresh.ids[w.key]
        self.px.count("inserted" if w.kind == "create" or w.reconciled else "modified")
        self.successes.append(_success(w, coupling_id, result))

    def _record_other(self, conn: Connection, w: _Write, result: OperationResult,
                      answer: Answer, coupling: Coupling | None) -> None:
        """A write refused or failed, a create answered "already exists", a delete done."""
        px = self.px
        if answer is not Answer.CONFIRMED:
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
            if w.kind == "create" and answer is Answer.FAILED and coupling is not None:
                # Some services answer a duplicate key with a 500: whether the record is
                # there is read, not inferred from the status.
                self.existing.append((replace(w, coupling=coupling), message))
                return
            px.fail(conn, coupling, message, local_id=w.key, remote_id=w.remote_id,
                    transient=answer is Answer.FAILED)
            return
        assert coupling is not None
        if w.kind == "delete":
            coupling_store.delete(conn, [coupling.id])
            px.count("deleted")
            return
        self.existing.append((replace(w, coupling=coupling), None))  # "already exists"


def _success(w: _Write, coupling_id: int, result: OperationResult) -> coupling_store.Success:
    """What a create or update the service applied leaves on its coupling."""
    # The post-write version lets the remote→local pass recognise this write's echo; when
    # remote changes were left for that pass, the old version is kept instead.
    version = None if w.left else remote_version(result.record, result.etag)
    modified_on = None if w.left else result.modified_on
    if w.stored is not None:  # the snapshot its intent committed, kept as it is
        return coupling_store.Success(coupling_id, version, modified_on, None, kept=w.stored)
    old = None if w.kind == "create" or w.coupling is None else w.coupling.synced_values
    snapshot = w.sent if w.sent is not None else new_snapshot(
        old, w.values, pass_direction=TO, written=w.written, left=w.left or set())
    return coupling_store.Success(coupling_id, version, modified_on, snapshot)


def _note_stored(writes: list[_Write], creates: set[str], updates: set[int]) -> None:
    """Note on each write the column its intent committed its snapshot in: creates by local
    id (``synced_values``), updates by coupling id (``pending_values``)."""
    for w in writes:
        if w.sent is None:
            continue
        if w.kind == "create" and w.key in creates:
            w.stored = "synced_values"
        elif w.kind == "update" and w.coupling is not None and w.coupling.id in updates:
            w.stored = "pending_values"


def _pending(writes: list[_Write]) -> tuple[dict[int, dict[str, Any]],
                                           dict[int, Mapping[str, Any] | None]]:
    """What the chunk's updates leave, by coupling id: an update's outcome may be lost too,
    and what it leaves is committed with the intents, so a later pass recognises the CRM's
    values as crmsync's own write. And the snapshots that recognised an earlier such write
    (decided from its pending values): kept with the new, so that write stays recognised."""
    updates = [w for w in writes if w.kind == "update" and w.coupling is not None]
    pending = {w.coupling.id: w.sent for w in updates
               if w.coupling is not None and w.sent is not None}
    recognised = {w.coupling.id: w.coupling.synced_values for w in updates
                  if w.coupling is not None and w.coupling.pending_values is not None}
    return pending, recognised


def _sent(w: _Write) -> dict[str, Any] | None:
    """The snapshot a create or update leaves when the service applies it."""
    if w.kind == "create" or (w.kind == "update" and w.coupling is not None):
        old = w.coupling.synced_values if w.kind == "update" and w.coupling else None
        return new_snapshot(old, w.values, pass_direction=TO, written=w.written,
                            left=w.left or set())
    return None


def answer_of(result: OperationResult) -> Answer:
    """The service's answer to one write, from its result alone: no answer is unknown;
    throttling, a 5xx or a connection failure may pass; any other refusal lasts."""
    if result.unknown:
        return Answer.UNKNOWN
    if result.ok:
        return Answer.CONFIRMED
    return Answer.FAILED if result.transient else Answer.REFUSED


def reconciled(px: PassContext, existing: list[tuple[_Write, str | None]]) -> list[Action]:
    """Creates answered "already exists" or refused with a 5xx: the record is read back;
    when the service has it, it is compared field by field and only what differs is sent
    (decided as an update). Nothing is assumed about what it holds."""
    found = by_key(px, px.remote.read_by_keys([w.remote_id for w, _ in existing],
                                               select=px.remote_select()))
    actions = []
    for w, refused in existing:
        assert w.coupling is not None
        record = found.get(w.remote_id.lower())
        if record is None:
            # Refused with a 5xx and not there: may pass. Answered "already exists" yet
            # no record has this id: another record holds one of its alternate keys
            # (Dataverse answers a duplicate accountnumber so), which lasts.
            actions.append(Action(
                Kind.FAIL, w.key, w.coupling, message=refused or "the service refused to "
                f"create {px.mapping.entity_set}({w.remote_id}) as a duplicate, and has no "
                "record with that id: another record holds the same alternate key "
                f"(e.g. a number); couple to it with `crmsync couple {px.mapping.name} "
                f"{w.key} <its id>` or change the value", transient=refused is not None))
            continue
        # An earlier attempt created it, with values not known: no snapshot.
        actions.append(_decide_one(px, w, replace(w.coupling, synced_values=None), record,
                                   reconciled=True))
    return actions


def decided_again(px: PassContext, changed: list[_Write]) -> list[Action]:
    """Updates refused because the record changed in the CRM since it was read: read again
    and decided again, so a field changed on one side flows and a field changed on both is
    a conflict; never overwritten blindly. A second refusal waits for the next pass."""
    found = by_key(px, px.remote.read_by_keys([w.remote_id for w in changed],
                                               select=px.remote_select()))
    actions = []
    for w in changed:
        assert w.coupling is not None
        actions.append(_decide_one(px, w, w.coupling, found.get(w.remote_id.lower()),
                                   reconciled=w.reconciled))
    return actions


def _decide_one(px: PassContext, w: _Write, coupling: Coupling, record: dict[str, Any] | None,
                *, reconciled: bool) -> Action:
    """Decide a write's record again from a fresh read of it."""
    values = [replace(v, current=remote_value(record, v.field)) if record else v
              for v in w.values]
    seen = Seen(w.key, coupling, Presence.PRESENT,
                Presence.PRESENT if record is not None else Presence.ABSENT,
                tuple(values), etag=record.get("@odata.etag") if record else None,
                version=remote_version(record, None))
    policy = Policy.of(px.mapping)
    return (update(seen, coupling, policy, TO, reconciled=reconciled)
            if record is not None else decide(seen, policy, TO))


def _operation(px: PassContext, n: int, w: _Write) -> Operation:
    """A write as the client sends it (``ref``: its place in the chunk's writes)."""
    if w.kind == "delete":
        return Operation("delete", px.remote, w.remote_id, etag=w.etag, ref=n)
    chosen = (w.values if w.written is None
              else [v for v in w.values if v.field.key in w.written])
    return Operation(w.kind, px.remote, w.remote_id,
                     _payload(px, chosen, create=w.kind == "create"), etag=w.etag, ref=n)


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

