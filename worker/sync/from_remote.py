"""The remote→local pass (NAV: FromIntegrationTable) of one mapping run.

Order of work: couplings that failed last time (not skipped) and local creates in flight,
then the remote records modified since the high-water mark, read inclusively with an
overlap (modified-on has whole seconds and many records share a stamp) and deduplicated by
the couplings' snapshots. Local writes of a chunk go in one transaction marked as crmsync's
own (the capture triggers skip them), each record in a savepoint so one bad row fails alone."""

from __future__ import annotations

import logging
from contextlib import closing
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from worker.remote.client import parse_datetime
from worker.remote.errors import RemoteDeltaExpired
from worker.sync import couplings as coupling_store
from worker.sync import mappings as mapping_store
from worker.sync import runner
from worker.sync.context import (
    CHUNK,
    PassContext,
    RecordFailed,
    chunks,
    remote_version,
)
from worker.sync.decide import (
    Action,
    Kind,
    Policy,
    Presence,
    Seen,
    decide,
    proposed_coupling,
    value_fields,
)
from worker.sync.mapped import local_values
from worker.sync.matches import match_records
from worker.sync.model import Coupling, CouplingState, Direction
from worker.sync.pipeline import read_ahead
from worker.sync.transfer import (
    FieldValue,
)
from worker.sync.values import unreadable_message

log = logging.getLogger(__name__)
FROM = Direction.FROM_INTEGRATION
OVERLAP = timedelta(seconds=1)
# How long after a stamp the service's clock must be before no write stamped earlier can
# still be committing (Dataverse writes take milliseconds; a long margin costs nothing).
SETTLED = timedelta(seconds=10)


def run(px: PassContext, *, full: bool) -> None:
    mapping = px.mapping
    with px.engine.connect() as conn:
        retry = coupling_store.to_retry(conn, mapping.name, FROM)
    retried: set[tuple[str, str | None]] = set()
    if retry:
        found = list(px.remote.read_by_keys([c.remote_id for c in retry],
                                            select=px.remote_select()))
        _drop_vanished_intents(px, retry, found)
        for chunk in chunks(found):
            _Chunk(px, chunk, count_seen=full).run()
        # Read again by the changes below as they were here: decided once per pass.
        retried = {_version_key(px, r) for r in found}
    if px.client.settings.dialect.change_tracking and not mapping.remote_filter:
        _run_change_tracking(px, full=full, retried=retried)
        return
    marks = px.marks
    since = None if full else marks.remote_modified_since
    newest: datetime | None = None
    # After the local→remote pass wrote many records, most of what this read returns are
    # their echoes: read key, stamp and version first, the whole record only of the others.
    thin = not full and px.written_before >= CHUNK
    stream = px.remote.read_modified_since(
        since, select=_thin_select(px) if thin else px.remote_select(),
        filter=mapping.remote_filter, overlap=OVERLAP,
        after=since is not None and marks.remote_modified_complete, on_count=px.expect)
    with closing(read_ahead(chunks(stream))) as ahead:  # the next page read meanwhile
        for chunk in ahead:
            px.check_cancelled()
            px.keep_statistics()
            _Chunk(px, _not_in(px, chunk, retried), count_seen=full, thin=thin).run()
            stamps = [parse_datetime(r.get(mapping.remote_modified_on)) for r in chunk]
            newest = max([s for s in stamps if s] + ([newest] if newest else []),
                         default=None)
            if newest is not None and (marks.remote_modified_since is None
                                       or newest > marks.remote_modified_since):
                # Records come in (modified-on, key) order and the next read overlaps by a
                # second, deduplicated by stored versions: the mark may advance per chunk,
                # so a pass that is killed is resumed about where it stopped.
                with px.engine.begin() as conn:
                    mapping_store.save_remote_modified_since(conn, mapping.name, newest)
    _settle_mark(px, newest or since, stream.server_time)


def _settle_mark(px: PassContext, mark: datetime | None, server_time: datetime | None) -> None:
    """When this read began SETTLED after the mark by the service's own clock, every record
    stamped at or before the mark had committed and was read: the next read starts after
    the mark instead of re-reading its last second (one statement, only when it changes)."""
    if mark is None or server_time is None or server_time < mark + SETTLED:
        return
    if px.marks.remote_modified_complete and mark == px.marks.remote_modified_since:
        return
    with px.engine.begin() as conn:
        mapping_store.save_remote_modified_since(conn, px.mapping.name, mark, complete=True)


def _thin_select(px: PassContext) -> list[str]:
    """What tells an echo from a change: the key, the modified-on stamp (the mark) and the
    version (``@odata.etag`` comes with every record; ``versionnumber`` where it is read)."""
    wanted = {px.mapping.remote_key, px.mapping.remote_modified_on}
    return sorted(wanted | ({"versionnumber"} & set(px.remote_select())))


def _version_key(px: PassContext, record: dict[str, Any]) -> tuple[str, str | None]:
    return str(record[px.mapping.remote_key]).lower(), remote_version(record, None)


def _not_in(px: PassContext, records: list[dict[str, Any]],
            decided: set[tuple[str, str | None]]) -> list[dict[str, Any]]:
    """The records not decided already in this pass at the same version."""
    if not decided:
        return records
    return [r for r in records if _version_key(px, r) not in decided]


def _run_change_tracking(px: PassContext, *, full: bool,
                         retried: set[tuple[str, str | None]]) -> None:
    """Dataverse change tracking: the delta link returns changed and deleted records. An
    expired link means a full reconcile: every record is read again, and coupled records
    that are no longer there count as deleted."""
    with px.engine.connect() as conn:
        link = None if full else mapping_store.delta_link(conn, px.mapping.name)
    try:
        seen = _apply_feed(px, link, retried)
    except RemoteDeltaExpired:
        log.warning("change tracking token expired; reconciling all records",
                    extra={"mapping": px.mapping.name})
        link = None
        seen = _apply_feed(px, None, retried)
    if link is None and seen is not None:
        with px.engine.connect() as conn:
            coupled = coupling_store.all_coupled_remote_ids(conn, px.mapping.name)
        gone = [r for r in coupled if r.lower() not in seen]
        if gone:
            _remote_deleted(px, gone)


def _apply_feed(px: PassContext, link: str | None,
                retried: set[tuple[str, str | None]]) -> set[str] | None:
    """Apply one change feed; returns the keys of the records read when it was a full read."""
    if link is None:
        _expect_every_record(px, retried)
    feed = px.remote.read_changes(link, select=px.remote_select())
    seen: set[str] = set()
    for page in feed.pages():
        px.check_cancelled()
        px.keep_statistics()
        records = [c.record for c in page if c.record is not None]
        deleted = [c.key for c in page if c.record is None]
        for chunk in chunks(_not_in(px, records, retried)):
            _Chunk(px, chunk).run()
        if deleted:
            _remote_deleted(px, deleted)
        if link is None:
            seen.update(str(r[px.mapping.remote_key]).lower() for r in records)
    with px.engine.begin() as conn:
        mapping_store.save_delta_link(conn, px.mapping.name, feed.delta_link)
    return seen if link is None else None


def _expect_every_record(px: PassContext, retried: set[tuple[str, str | None]]) -> None:
    """The total of a change-tracking read of every record, where the dialect counts reads:
    the set's ``$count`` (Dataverse's stops at 5,000) on one page of keys asked apart, as
    Dataverse documents ``$count`` on plain reads only. A delta read has no total: its
    link is the service's own and takes no option. The records decided already in this
    pass come again in the feed and are skipped there: not to do twice."""
    if not px.client.settings.dialect.count_reads:
        return
    pages = px.remote.read_pages(
        select=[px.mapping.remote_key],
        on_count=lambda n, capped: px.expect(max(0, n - len(retried)), at_least=capped))
    next(pages, None)  # the first page has the count; the others are not asked for


def _remote_deleted(px: PassContext, remote_ids: list[str]) -> None:
    """Records deleted in the CRM, by the mapping's deletion policy (``decide.deletion``);
    couplings of creates that never completed are only forgotten."""
    with px.engine.connect() as conn:
        found = coupling_store.by_remote_ids(conn, px.mapping.name, remote_ids)
    lower = {k.lower(): c for k, c in found.items()}
    couplings = [c for c in (found.get(r) or lower.get(r.lower()) for r in remote_ids) if c]
    unfinished = [c.id for c in couplings if c.state is not CouplingState.COUPLED]
    if unfinished:
        with px.engine.begin() as conn:
            coupling_store.delete(conn, unfinished)
    runner.apply(px, _deleted_actions(px, [c for c in couplings
                                           if c.state is CouplingState.COUPLED]))


def _deleted_actions(px: PassContext, couplings: list[Coupling]) -> list[Action]:
    policy = Policy.of(px.mapping)
    return [decide(Seen(c.remote_id, c, Presence.ABSENT, Presence.PRESENT), policy, FROM)
            for c in couplings]


def _drop_vanished_intents(px: PassContext, retry: list[Coupling],
                           found: list[dict[str, Any]]) -> None:
    present = {str(r[px.mapping.remote_key]).lower() for r in found}
    gone = [c.id for c in retry if c.state is CouplingState.CREATING_LOCAL
            and c.remote_id.lower() not in present]
    if gone:
        with px.engine.begin() as conn:
            coupling_store.delete(conn, gone)


def run_records(px: PassContext, remote_ids: list[str], *, force: bool) -> int:
    """Synchronize these remote records now, skipped or not; ``force``: the CRM's values
    win over whatever changed in the ERP. Returns how many were found in the CRM."""
    records = list(px.remote.read_by_keys(remote_ids, select=px.remote_select()))
    if records:
        _Chunk(px, records, count_seen=True, force=force).run()
    return len(records)


def decide_chunk(px: PassContext, records: list[dict[str, Any]], *, count_seen: bool,
                 force: bool = False) -> tuple[list[Action], list[tuple[str, str]]]:
    """What the pass would do to these CRM records, read only (``sync --plan``; ``force``:
    every record decided with its values, none taken for an echo, for ``crmsync audit``):
    the actions, and the (local id, remote id) pairs it would couple by matching values."""
    chunk = _Chunk(px, records, count_seen=count_seen, force=force)
    return chunk.read_and_decide(commit_matches=False), chunk.matched


def decide_deleted(px: PassContext, remote_ids: list[str]) -> list[Action]:
    """What the pass would do about records the CRM's change feed says were deleted."""
    with px.engine.connect() as conn:
        found = coupling_store.by_remote_ids(conn, px.mapping.name, remote_ids)
    return _deleted_actions(px, [c for c in found.values()
                                 if c.state is CouplingState.COUPLED])


class _Chunk:
    def __init__(self, px: PassContext, records: list[dict[str, Any]], *,
                 count_seen: bool = False, force: bool = False, thin: bool = False) -> None:
        self.px = px
        self.force = force
        # The records hold only what _thin_select reads: those that are not echoes are
        # read whole before anything is decided of them.
        self.thin = thin
        self.records = records
        # A full pass counts the records it found already in sync as unchanged; an
        # incremental one does not count its overlap re-reads and echoes.
        self.count_seen = count_seen
        self.fields = [f for f in px.mapping.fields_for(FROM) if f.local_column]
        self.all_records = list(records)
        self.matched: list[tuple[str, str]] = []  # (local id, remote id) coupled by value

    def _rid(self, record: dict[str, Any]) -> str:
        return str(record[self.px.mapping.remote_key])

    def run(self) -> None:
        runner.apply(self.px, self.read_and_decide(commit_matches=True), self.all_records)

    def read_and_decide(self, *, commit_matches: bool) -> list[Action]:
        """Read what the chunk's records need (couplings, matches, local rows, lookups) and
        decide each; ``commit_matches``: couple the records matched by value first (else
        they are decided as coupled without writing anything)."""
        px = self.px
        actions: list[Action] = []
        if self.thin:
            actions = self._read_unless_echo()
            if not self.records:
                return actions
        with px.engine.connect() as conn:
            cpl = coupling_store.by_remote_ids(conn, px.mapping.name,
                                               [self._rid(r) for r in self.records])
        if not self.force:
            # The overlap re-read and the echoes of crmsync's own writes cost nothing more
            # than this: no local read, no lookup, no transaction.
            seen = {id(r) for r in self.records if _already_synced(cpl.get(self._rid(r)), r)}
            actions += [Action(Kind.NOTHING, self._rid(r), cpl.get(self._rid(r)),
                               counter="unchanged" if self.count_seen else None)
                        for r in self.records if id(r) in seen]
            self.records = [r for r in self.records if id(r) not in seen]
            if not self.records:
                return actions
        cpl.update(self._matched(cpl, commit=commit_matches))
        with px.engine.connect() as conn:
            rows = px.local.fetch(conn, [c.local_id for c in cpl.values()
                                         if c.state is CouplingState.COUPLED])
            reverse = {f.id: px.lookups.to_local(conn, f, [r.get(f.remote_read_name or "")
                                                          for r in self.records])
                       for f in self.fields if f.lookup_mapping}
        policy = Policy.of(px.mapping)
        for record in self.records:
            seen_record = self._seen(record, cpl.get(self._rid(record)), rows, reverse)
            actions.append(decide(seen_record, policy, FROM, force=self.force))
        return actions

    def _seen(self, record: dict[str, Any], coupling: Coupling | None, rows: dict[str, Any],
              reverse: dict[int, dict[str, object]]) -> Seen:
        px = self.px
        row = rows.get(coupling.local_id) if coupling is not None \
            and coupling.state is CouplingState.COUPLED else None
        values: list[FieldValue] = []
        failure: RecordFailed | None = None
        unreadable = None
        if not (coupling is not None and coupling.skipped and not self.force):
            try:
                values = local_values(px, value_fields(self.fields, coupling, row is not None),
                                      record, reverse)
            except RecordFailed as exc:
                failure = exc
        if row is not None and coupling is not None:
            values = [replace(v, current=row[v.field.local_column]) for v in values]
            unreadable = unreadable_message(px.mapping.local_table, coupling.local_id, row,
                                            self.fields)
        return Seen(self._rid(record), coupling, Presence.PRESENT,
                    Presence.PRESENT if row is not None else Presence.ABSENT, tuple(values),
                    str(failure) if failure else None, bool(failure and failure.transient),
                    etag=record.get("@odata.etag"), unreadable=unreadable,
                    version=remote_version(record, None))

    def _read_unless_echo(self) -> list[Action]:
        """The thin records' echoes (decided as nothing to do), and the others read whole
        into ``records`` (a record gone meanwhile is simply not there)."""
        px = self.px
        with px.engine.connect() as conn:
            echo_ids = coupling_store.echoes(conn, px.mapping.name, {
                self._rid(r): remote_version(r, None) for r in self.records})
        others = [self._rid(r) for r in self.records if self._rid(r) not in echo_ids]
        self.records = list(px.remote.read_by_keys(others, select=px.remote_select())) \
            if others else []
        self.all_records = self.records
        return [Action(Kind.NOTHING, rid, None) for rid in echo_ids]

    # -- decisions -----------------------------------------------------------------------
    def _matched(self, cpl: dict[str, Coupling], *, commit: bool) -> dict[str, Coupling]:
        """Match-based coupling of records with no counterpart yet (when the mapping would
        create one): a unique local match by ``decide.match_key`` is coupled instead of
        creating a duplicate. ``commit``: the couplings are written (else made up, for a
        plan)."""
        px = self.px
        records = [r for r in self.records if self._rid(r) not in cpl]
        fields = px.mapping.match_fields
        if not records or not fields or px.mapping.sync_only_coupled:
            return {}
        with px.engine.connect() as conn:
            self.matched = match_records(conn, px.local, px.mapping.name, fields, records,
                                         self._rid)
        if not self.matched or not commit:
            return {rid: proposed_coupling(px.mapping.name, lid, rid)
                    for lid, rid in self.matched}
        with px.engine.begin() as conn:
            for local_id, remote_id in self.matched:
                coupling_store.add_coupled(conn, px.mapping.name, local_id, remote_id)
            px.count("coupled", len(self.matched))
            return coupling_store.by_remote_ids(conn, px.mapping.name,
                                                [r for _, r in self.matched])


def _already_synced(coupling: Coupling | None, record: dict[str, Any]) -> bool:
    return (coupling is not None and coupling.state is CouplingState.COUPLED
            and coupling.last_result_from != "failure" and coupling.remote_version is not None
            and coupling.remote_version == remote_version(record, None))


