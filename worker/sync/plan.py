"""``crmsync sync --plan``: what a run would do, from the read and decide steps of its passes
alone. Only GET requests reach the CRM, nothing is written to either side, and no crmsync
row changes (no sync job, no coupling, no mark): the local changes are peeked at, matches
are proposed, not coupled. BC's "Dataverse Full Synch. Review", before every run.

The counters are those of the sync job log, so a run that follows with no edits in between
logs what the plan said. Two figures a plan cannot know: how a CRM answers (a refused write,
a record changed between the plan and the run), and, under ``--full``, the CRM's copies of
records the local→remote pass is about to write, which the run's remote→local pass then
reads again and counts as unchanged."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

from worker.errors import CrmsyncError
from worker.remote.errors import RemoteDeltaExpired
from worker.sync import capture, from_remote, joblog, mappings, to_remote
from worker.sync import couplings as coupling_store
from worker.sync.check import require_valid
from worker.sync.context import PassContext, chunks, unique
from worker.sync.decide import Action, Kind
from worker.sync.engine import SyncEngine, passes
from worker.sync.model import Direction, TableMapping
from worker.sync.order import topological_order
from worker.sync.transfer import canonical

TO, FROM = Direction.TO_INTEGRATION, Direction.FROM_INTEGRATION
EXAMPLES = 20
COUNTERS = ("inserted", "modified", "deleted", "unchanged", "skipped", "failed", "coupled",
            "uncoupled")


@dataclass
class PassPlan:
    """What one pass of one mapping would do."""

    mapping: str
    direction: Direction
    counts: Counter[str] = field(default_factory=Counter)
    conflicts: int = 0
    examples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"mapping": self.mapping, "direction": self.direction.value}
        doc.update({k: self.counts[k] for k in COUNTERS})
        doc["conflicts"] = self.conflicts
        doc["examples"] = self.examples
        if self.error is not None:
            doc["error"] = self.error
        return doc

    def note(self, counter: str, example: dict[str, Any], n: int = 1) -> None:
        self.counts[counter] += n
        shown = self.examples.setdefault(counter, [])
        if len(shown) < EXAMPLES:
            shown.append(example)


def plan_run(sync: SyncEngine, names: Sequence[str] | None, *, full: bool = False
             ) -> list[PassPlan]:
    """The plan of ``sync`` for these mappings (None: every enabled one), in the order the
    run would take them."""
    deps = mappings.dependencies(sync.engine)
    order = topological_order(deps)
    if names is not None:
        unknown = sorted(set(names) - set(deps))
        if unknown:
            raise mappings.MappingNotFound(f"no enabled mapping named {', '.join(unknown)}")
        order = [n for n in order if n in set(names)]
    plans: list[PassPlan] = []
    for name in order:
        plans.extend(_plan_mapping(sync, name, full=full))
    return plans


def _plan_mapping(sync: SyncEngine, name: str, *, full: bool) -> list[PassPlan]:
    mapping, marks = mappings.load_with_marks(sync.engine, name)
    directions = passes(mapping.direction)
    waiting_for = joblog.failed_parents(sync.engine, name)
    if waiting_for:
        return [PassPlan(name, d, error=f"not run: {', '.join(waiting_for)} (which it depends "
                         "on) failed in its last run") for d in directions]
    try:
        require_valid(sync.engine, sync.clients, name, sync.tables)
    except CrmsyncError as exc:
        return [PassPlan(name, d, error=str(exc)) for d in directions]
    plans = []
    for direction in directions:
        plan = PassPlan(name, direction)
        px = sync.context(mapping, direction, 0, lambda: None, None, marks)
        try:
            if direction is TO:
                _plan_to_remote(sync, px, plan, full=full)
            else:
                _plan_from_remote(px, plan, full=full)
        except CrmsyncError as exc:
            plan.error = str(exc)
        plans.append(plan)
    return plans


def _plan_to_remote(sync: SyncEngine, px: PassContext, plan: PassPlan, *, full: bool) -> None:
    mapping = px.mapping
    lengths = sync.clients.max_lengths(mapping.connection_name, mapping.entity_set)
    with px.engine.connect() as conn:
        retry = coupling_store.to_retry(conn, mapping.name, TO)
        keys, _ = capture.peek(conn, mapping, px.marks, px.local, px.where, full=full)
    first = unique(c.local_id for c in retry)
    done = set(first)
    for chunk in chunks(chain(first, (k for k in keys if k not in done))):
        for action in to_remote.decide_chunk(px, chunk, lengths):
            _note(plan, mapping, action)


def _plan_from_remote(px: PassContext, plan: PassPlan, *, full: bool) -> None:
    mapping = px.mapping
    decided: set[str] = set()
    for records in chunks(_remote_records(px, full=full, deleted=plan)):
        fresh = [r for r in records if str(r[mapping.remote_key]).lower() not in decided]
        decided.update(str(r[mapping.remote_key]).lower() for r in fresh)
        if not fresh:
            continue
        actions, matched = from_remote.decide_chunk(px, fresh, count_seen=full)
        for local_id, remote_id in matched:
            plan.note("coupled", {"local_id": local_id, "crm_id": remote_id})
        for action in actions:
            _note(plan, mapping, action)


def _remote_records(px: PassContext, *, full: bool, deleted: PassPlan
                    ) -> Iterator[dict[str, Any]]:
    """The CRM records the pass would read: retries first, then the changes."""
    mapping = px.mapping
    with px.engine.connect() as conn:
        retry = coupling_store.to_retry(conn, mapping.name, FROM)
    if retry:
        yield from px.remote.read_by_keys([c.remote_id for c in retry],
                                          select=px.remote_select())
    if px.client.settings.dialect.change_tracking and not mapping.remote_filter:
        yield from _feed(px, full=full, deleted=deleted)
        return
    since = None if full else px.marks.remote_modified_since
    yield from px.remote.read_modified_since(
        since, select=px.remote_select(), filter=mapping.remote_filter,
        overlap=from_remote.OVERLAP,
        after=since is not None and px.marks.remote_modified_complete)


def _feed(px: PassContext, *, full: bool, deleted: PassPlan) -> Iterator[dict[str, Any]]:
    with px.engine.connect() as conn:
        link = None if full else mappings.delta_link(conn, px.mapping.name)
    try:
        yield from _feed_pages(px, link, deleted)
    except RemoteDeltaExpired:
        yield from _feed_pages(px, None, deleted)


def _feed_pages(px: PassContext, link: str | None, deleted: PassPlan
                ) -> Iterable[dict[str, Any]]:
    feed = px.remote.read_changes(link, select=px.remote_select())
    for page in feed.pages():
        gone = [c.key for c in page if c.record is None]
        for action in from_remote.decide_deleted(px, gone) if gone else []:
            _note(deleted, px.mapping, action)
        yield from (c.record for c in page if c.record is not None)


def _note(plan: PassPlan, mapping: TableMapping, action: Action) -> None:
    counters = _counters(action, plan.direction)
    if not counters:
        return
    example = _example(mapping, action, plan.direction)
    for counter in counters:
        plan.note(counter, example)
    if action.conflicts:
        plan.conflicts += 1


def _counters(action: Action, direction: Direction) -> list[str]:
    """The job log's counters the run would add for this action."""
    if action.kind is Kind.RECREATE:
        return ["inserted"]
    if action.kind is Kind.RESTORE:
        return ["inserted"] if direction is TO else []
    if action.kind is Kind.UNCOUPLE and action.then_create:
        return ["uncoupled", "inserted"]
    return [action.counter] if action.counter else []


def _example(mapping: TableMapping, action: Action, direction: Direction) -> dict[str, Any]:
    c = action.coupling
    doc: dict[str, Any] = {}
    business = _business_key(mapping, action, direction)
    if business is not None:
        doc["business_key"] = business
    if c is not None:
        doc["local_id"], doc["crm_id"] = c.local_id, c.remote_id
    elif direction is TO:
        doc["local_id"] = action.key
    else:
        doc["crm_id"] = action.key
    shown = action.values if action.kind in (Kind.CREATE, Kind.RECREATE) else [
        v for v in action.values
        if (action.written and v.field.key in action.written) or v.field in action.conflicts]
    fields = {v.field.label: [canonical(v.current), canonical(v.wanted)] for v in shown
              if v.wanted is not None or action.kind not in (Kind.CREATE, Kind.RECREATE)}
    if fields and action.kind is not Kind.NOTHING:
        doc["fields"] = fields
    if action.message:
        doc["message"] = action.message
    return doc


def _business_key(mapping: TableMapping, action: Action, direction: Direction) -> Any:
    column = mapping.business_key_column
    for v in action.values:
        if column and v.field.local_column == column:
            return canonical(v.source if direction is TO else (v.current or v.wanted))
    return None
