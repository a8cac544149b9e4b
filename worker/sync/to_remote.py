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

from collections.abc import Callable
from dataclasses import replace
from itertools import chain
from typing import Any

from worker.sync import capture, metadata, runner
from worker.sync import couplings as coupling_store
from worker.sync.context import (
    PassContext,
    RecordFailed,
    chunks,
    remote_version,
    unique,
)
from worker.sync.decide import Action, Policy, Presence, Seen, decide, value_fields
from worker.sync.local import Unreadable
from worker.sync.lookups import uncoupled_message
from worker.sync.mapped import by_key, remote_value
from worker.sync.metadata import PropertyInfo
from worker.sync.model import Coupling, CouplingState, DeletionConflict, Direction, FieldMapping
from worker.sync.pipeline import ChunkPipeline
from worker.sync.transfer import FieldValue, constant
from worker.sync.values import ValueRefused, to_remote_converter, value_failure
from worker.sync.values import to_remote as to_remote_value

TO = Direction.TO_INTEGRATION


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
        changes = capture.collect(conn, px.mapping, px.marks, px.local, px.where, full=full)
    done = set(first) | px.failed_keys
    px.expect(None if changes.size is None else len(first) + changes.size)
    work = chain(((chunk, None) for chunk in chunks(first)), (
        (chunk, chunk[-1]) for chunk in chunks(k for k in changes.keys if k not in done)))
    with ChunkPipeline(px.engine, changes.commit_progress) as pipeline:
        for keys, progress in work:
            px.check_cancelled()
            px.keep_statistics()
            actions = _Chunk(px, keys, changes.deleted, max_lengths).read_and_decide()
            pipeline.send(runner.prepare(px, actions), progress)
    px.keep_statistics()  # for the remote→local pass's probes, next
    with px.engine.begin() as conn:
        changes.commit_mark(conn)
    return changes.resumed


def run_records(px: PassContext, keys: list[str], *, force: bool,
                max_lengths: dict[str, int]) -> None:
    """Synchronize these local records now (NAV's "Synchronize Now"), skipped or not.
    ``force``: the ERP's values win over whatever changed in the CRM (settles an update
    conflict); an uncoupled record is created."""
    runner.apply(px, _Chunk(px, keys, set(), max_lengths, force=force).read_and_decide())


def decide_chunk(px: PassContext, keys: list[str], max_lengths: dict[str, int], *,
                 read: dict[str, dict[str, Any]] | None = None) -> list[Action]:
    """What the pass would do to these local records, read only (``sync --plan``,
    ``crmsync audit``); ``read`` receives the CRM records read, by lower-case key."""
    chunk = _Chunk(px, keys, set(), max_lengths)
    actions = chunk.read_and_decide()
    if read is not None:
        read.update(chunk.current)
    return actions


class _Chunk:
    """The read and decide steps of one chunk of local records."""

    def __init__(self, px: PassContext, keys: list[str], deleted: set[str],
                 max_lengths: dict[str, int], *, force: bool = False) -> None:
        self.px = px
        self.force = force
        self.keys = keys
        self.deleted = deleted
        self.max_lengths = max_lengths
        self.fields = px.mapping.fields_for(TO)
        self.current: dict[str, dict[str, Any]] = {}  # the CRM records read, by key
        self.properties: dict[str, PropertyInfo] | None = None
        self.converters: dict[int, Callable[[Any], Any]] | None = None

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
        current = self.current = by_key(
            px, px.remote.read_by_keys(remote_ids, select=px.remote_select())
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
                values = self._values(row, lookups,
                                      value_fields(self.fields, coupling, record is not None))
            except RecordFailed as exc:
                failure = exc
        if record is not None:
            values = [replace(v, current=remote_value(record, v.field)) for v in values]
        return Seen(key, coupling, source,
                    Presence.PRESENT if record is not None else Presence.ABSENT,
                    tuple(values), str(failure) if failure else None,
                    bool(failure and failure.transient),
                    etag=record.get("@odata.etag") if record else None,
                    version=remote_version(record, None))

    def _values(self, row: Any, lookups: dict[int, dict[str, str]],
                fields: list[FieldMapping]) -> list[FieldValue]:
        """The remote values of one local row; any field that cannot be read, transformed
        or converted to its property's type fails this record alone, naming the field."""
        converters = self._converters()
        out = []
        for f in fields:
            if f.remote_property is None:
                continue
            try:
                convert = converters.get(f.id)
                if convert is None:
                    out.append(self._value(f, row, lookups))
                else:
                    source = row[f.local_column]
                    out.append(FieldValue(f, source, convert(source)))
            except (ValueError, TypeError, ArithmeticError) as exc:
                raise RecordFailed(value_failure(
                    self.px.mapping.local_table, row[self.px.local.key.name], f, exc)) from None
        return out

    def _value(self, f: FieldMapping, row: Any, lookups: dict[int, dict[str, str]]
               ) -> FieldValue:
        """A field that is not a local column's value converted: a constant, a lookup."""
        if f.local_column is None:
            value = constant(f)
            return FieldValue(f, value, to_remote_value(
                value, self._properties().get(f.remote_property or "")))
        source = row[f.local_column]
        if isinstance(source, Unreadable):
            raise ValueRefused(str(source))
        return FieldValue(f, source, self._lookup(f, source, lookups[f.id]))

    def _converters(self) -> dict[int, Callable[[Any], Any]]:
        """Each local column's converter to its property (but lookups'), chosen once a
        chunk from the field, its rule and the service's facets of its property."""
        if self.converters is None:
            properties = self._properties()
            self.converters = {
                f.id: to_remote_converter(f, properties.get(f.remote_property or ""),
                                          self.max_lengths.get(f.remote_property or ""))
                for f in self.fields if f.local_column is not None and not f.lookup_mapping}
        return self.converters

    def _properties(self) -> dict[str, PropertyInfo]:
        if self.properties is None:  # the service's facets, looked up once a chunk
            info = metadata.for_client(self.px.client).get(self.px.mapping.entity_set)
            self.properties = info.properties if info is not None else {}
        return self.properties

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

