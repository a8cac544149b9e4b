"""The remote probe: while a mapping's entry is on inactivity hold (NAV: 12-24 hours), ask
the CRM at the entry's ``run_interval`` (or the mapping's ``remote_probe_interval``) whether
anything changed since the remote→local pass's watermark, and wake the entry when it did.

A probe is the smallest read the service allows: ``$top=1&$select=<key>`` filtered by
``<modified-on> gt <watermark>`` (and the mapping's remote filter), or the first page of the
stored delta link (``odata.maxpagesize=1``) where change tracking is on; the delta link is
never advanced here, the pass does that. A probe that finds nothing costs that one request
and no local transaction: what the probes need is cached in memory and read again only when
``job_queue_entries`` changes (its NOTIFY), which also ends a hold, starts or finishes a run.

Probes run one after another on this one thread through the connection's shared client, so
they share the worker's request budget and throttle gate. An entry is not probed while it,
a mapping it depends on, or a ``sync_all_modified`` entry runs. Only one worker of a cluster
probes: the one holding a session advisory lock on its probe connection (the others retry
now and then; a wake is idempotent, so an overlap after a database restart is harmless)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from worker.db.engine import translate_errors
from worker.metrics import PROBES
from worker.queue.wake import wake
from worker.remote import filters, links, wire
from worker.remote.errors import RemoteProtocolError

if TYPE_CHECKING:
    from worker.remote.client import ODataClient
    from worker.sync.clients import Clients

log = logging.getLogger(__name__)

PROBE_LOCK_KEY = 0x63727072  # "crpr": the advisory lock of the cluster's one prober
Versions = set[tuple[str, str | None]]  # (remote key in lower case, etag or version)
MAX_SHOWN = 100  # more records than this at the watermark's second: probe with ``gt``

_TARGETS = sa.text(
    """
    SELECT e.id AS entry_id, m.name AS mapping, m.connection_name, m.entity_set,
           m.remote_key, m.remote_modified_on, m.remote_filter, m.remote_modified_since,
           m.delta_link,
           COALESCE(m.remote_probe_interval, e.run_interval, interval '30 minutes')
               AS interval,
           ARRAY(SELECT d.depends_on FROM crmsync.integration_table_mapping_dependencies d
                  WHERE d.mapping_name = m.name) AS parents
      FROM crmsync.job_queue_entries e
      JOIN crmsync.integration_table_mappings m ON m.name = e.mapping_name
     WHERE e.job_kind = 'sync_mapping' AND e.status = 'on_hold_inactivity' AND m.enabled
       AND m.direction IN ('from_integration', 'bidirectional')
    """
)
_AT_MARK = sa.text(
    """
    SELECT mapping_name, remote_id, remote_version FROM (
        SELECT c.mapping_name, c.remote_id, c.remote_version,
               row_number() OVER (PARTITION BY c.mapping_name) AS n
          FROM crmsync.couplings c
          JOIN crmsync.integration_table_mappings m ON m.name = c.mapping_name
         WHERE m.name = ANY(:names) AND c.remote_modified_on >= m.remote_modified_since
           AND c.state = 'coupled') AS at_mark
     WHERE n <= :limit
    """
)
_RUNNING = sa.text(
    "SELECT job_kind, mapping_name FROM crmsync.job_queue_entries WHERE status = 'in_process'")


@dataclass(frozen=True)
class ProbeTarget:
    """What one probe needs, cached from the entry and mapping rows."""

    entry_id: int
    mapping: str
    connection: str
    entity_set: str
    remote_key: str
    modified_on: str
    remote_filter: str | None
    since: datetime | None
    delta_link: str | None
    interval: timedelta
    parents: frozenset[str]

    @classmethod
    def from_row(cls, row: Any) -> ProbeTarget:
        return cls(row.entry_id, row.mapping, row.connection_name, row.entity_set,
                   row.remote_key, row.remote_modified_on, row.remote_filter,
                   row.remote_modified_since, row.delta_link, row.interval,
                   frozenset(row.parents or ()))


@dataclass(frozen=True)
class Running:
    """The runs in progress cluster-wide, as far as the probes care."""

    mappings: frozenset[str] = frozenset()
    everything: bool = False  # a sync_all_modified run touches every mapping

    def blocks(self, target: ProbeTarget) -> bool:
        return self.everything or target.mapping in self.mappings \
            or bool(target.parents & self.mappings)


def load_targets(conn: Connection) -> tuple[list[ProbeTarget], Running]:
    targets = [ProbeTarget.from_row(r) for r in conn.execute(_TARGETS)]
    rows = conn.execute(_RUNNING).all()
    running = Running(frozenset(r.mapping_name for r in rows if r.mapping_name),
                      any(r.job_kind == "sync_all_modified" for r in rows))
    return targets, running


def versions_at_mark(conn: Connection, mappings: Sequence[str]) -> dict[str, Versions | None]:
    """Per mapping, the versions its couplings stored for records at or after its remote
    watermark (None when more than MAX_SHOWN)."""
    found: dict[str, Versions | None] = {m: set() for m in mappings}
    for name, key, version in conn.execute(_AT_MARK, {"names": list(mappings),
                                                      "limit": MAX_SHOWN + 1}):
        versions = found[name]
        if versions is not None:
            versions.add((key.lower(), version))
            if len(versions) > MAX_SHOWN:
                found[name] = None
    return found


def wake_mappings(engine: Engine, mappings: Sequence[str], delay: timedelta) -> int:
    """Wake the sync entries of ``mappings`` (``wake.wake``'s rule) in a short transaction
    of its own (its NOTIFY wakes every worker)."""
    if not mappings:
        return 0
    with translate_errors(), engine.begin() as conn:
        return len(wake(conn, delay, mappings=mappings))


def probe(clients: Clients, target: ProbeTarget, shown: Versions | None) -> Versions | None:
    """One request: the record versions at or after the target's watermark that no run has
    been shown yet (empty: nothing changed), or None when the service only answers "some
    change" (a delta link, or too many records share the watermark's second).

    Modified-on has whole seconds: a record edited in the same second as the newest record
    the pass read carries the watermark itself, so ``gt`` would miss it. The read is
    ``ge`` and the versions found are compared with those already ``shown`` (the couplings'
    stored versions at the watermark, plus what earlier wakes showed a run)."""
    client = clients.get(target.connection)
    entity_set = client.entity_set(target.entity_set, target.remote_key, target.modified_on)
    if client.settings.dialect.change_tracking and not target.remote_filter \
            and target.delta_link:
        return _delta_probe(client, entity_set.url, target.delta_link)
    if target.since is None or shown is None:
        since = None if target.since is None else filters.gt(target.modified_on, target.since)
        top = 1
    else:
        since, top = filters.ge(target.modified_on, target.since), len(shown) + 1
    pages = entity_set.read_pages(select=[target.remote_key], top=top,
                                  filter=filters.and_(since, target.remote_filter))
    found = {(str(r.get(target.remote_key)).lower(), _version(r))
             for r in next(iter(pages), [])}
    return found - (shown or set())


def _delta_probe(client: ODataClient, set_url: str, delta_link: str) -> Versions | None:
    """The first page, of one record at most, of what changed since the stored delta link
    (the link itself is left for the pass to follow and advance)."""
    url = links.resolve(delta_link, set_url, client.base_url,
                        what="@odata.deltaLink (stored)")
    reply = client.transport.send("GET", url, accept={410}, headers={
        "Prefer": "odata.track-changes,odata.maxpagesize=1"})
    if reply.status == 410:
        return None  # the token expired: the pass must reconcile anyway
    doc = wire.parse_json(reply, "GET", url)
    if not isinstance(doc, dict) or not isinstance(doc.get("value"), list):
        raise RemoteProtocolError("the response has no 'value' array", status=reply.status,
                                  method="GET")
    return None if doc["value"] or doc.get("@odata.nextLink") else set()


def _version(record: dict[str, Any]) -> str | None:
    for name in ("@odata.etag", "versionnumber"):
        if record.get(name) is not None:
            return str(record[name])
    return None


class Prober(threading.Thread):
    """The worker's probe thread. ``invalidate()`` (on every job queue NOTIFY) makes it read
    its targets again before the next probe; otherwise it touches the database only to
    wake an entry or to retry for the cluster's probe lock."""

    def __init__(self, engine: Engine, wake_delay: timedelta, clients: Clients, *,
                 tick: float = 0.5, leader_retry: float = 15.0) -> None:
        super().__init__(name="crmsync-probe", daemon=True)
        self.engine = engine
        self.wake_delay = wake_delay
        self.clients = clients  # the runs' clients: one request budget per connection
        self._tick = tick
        self._leader_retry = leader_retry
        self._stop_event = threading.Event()
        self._dirty = threading.Event()
        self._dirty.set()
        self._conn: Connection | None = None
        self._next_leader_try = 0.0
        self._targets: list[ProbeTarget] = []
        self._running = Running()
        self._due: dict[int, float] = {}  # entry id -> monotonic time of its next probe
        # entry id -> (watermark, versions at it a run has seen or been woken for)
        self._shown: dict[int, tuple[datetime | None, Versions | None]] = {}
        self._failing: set[int] = set()

    @property
    def leader(self) -> bool:
        return self._conn is not None

    def invalidate(self) -> None:
        self._dirty.set()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop probing; wait up to ``timeout`` for the thread to give its lock back (a
        probe in flight finishes first)."""
        self._stop_event.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout)

    def run(self) -> None:
        try:
            while not self._stop_event.is_set():
                try:
                    self.step()
                except Exception:  # never let one bad answer end the probes
                    log.exception("remote probe step failed")
                self._stop_event.wait(self._tick)
        finally:
            self._release()

    def step(self, now: float | None = None) -> int:
        """One pass over the targets: probe those due at ``now`` (monotonic seconds; default
        the current time). Returns the number of probes sent."""
        try:
            if not self._lead():
                return 0
            if self._dirty.is_set():
                self._refresh()
        except Exception as exc:  # the database is away: retry later, as a follower
            log.warning("probe targets unavailable", extra={"error": str(exc)})
            self._release()
            return 0
        sent = 0
        now = time.monotonic() if now is None else now
        for target in self._targets:
            if self._stop_event.is_set() or self._dirty.is_set():
                break
            if self._due.get(target.entry_id, now) > now or self._running.blocks(target):
                continue
            self._due[target.entry_id] = now + target.interval.total_seconds()
            sent += 1
            self._probe(target)
        return sent

    def _probe(self, target: ProbeTarget) -> None:
        _, shown = self._shown.get(target.entry_id, (None, None))
        try:
            new = probe(self.clients, target, shown)
        except Exception as exc:  # one failing connection never stops the others' probes
            PROBES.labels(target.mapping, "error").inc()
            if target.entry_id not in self._failing:
                log.warning("remote probe failed", extra={"mapping": target.mapping,
                                                          "error": str(exc)})
            self._failing.add(target.entry_id)
            return
        self._failing.discard(target.entry_id)
        changed = new is None or bool(new)
        PROBES.labels(target.mapping, "changed" if changed else "nothing").inc()
        if not changed:
            return
        try:
            woken = wake_mappings(self.engine, [target.mapping], self.wake_delay)
        except Exception as exc:  # the database is away: probe (and wake) again soon
            log.warning("could not wake entry", extra={"mapping": target.mapping,
                                                       "error": str(exc)})
            self._due[target.entry_id] = time.monotonic() + self._leader_retry
            return
        if new and shown is not None:
            shown |= new  # the woken run reads them: not a change the next time
        log.info("remote change found; entry woken",
                 extra={"mapping": target.mapping, "entries": woken})

    def _lead(self) -> bool:
        """Hold the cluster's probe lock on this thread's own connection, or try again
        after ``leader_retry`` seconds."""
        if self._conn is not None:
            return True
        now = time.monotonic()
        if now < self._next_leader_try:
            return False
        self._next_leader_try = now + self._leader_retry
        conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            got = conn.scalar(sa.text("SELECT pg_try_advisory_lock(:k)"),
                              {"k": PROBE_LOCK_KEY})
        except Exception:
            conn.close()
            raise
        if not got:
            conn.close()
            return False
        self._conn = conn
        self._dirty.set()
        log.info("remote probes: this worker probes for the cluster")
        return True

    def _refresh(self) -> None:
        assert self._conn is not None
        self._dirty.clear()
        targets, running = load_targets(self._conn)
        now = time.monotonic()
        ids = {t.entry_id for t in targets}
        at_mark = versions_at_mark(self._conn, [t.mapping for t in targets])
        for t in targets:
            # A target newly on hold: its run has just read everything. A shorter interval
            # set meanwhile applies at once.
            soonest = now + t.interval.total_seconds()
            self._due[t.entry_id] = min(self._due.get(t.entry_id, soonest), soonest)
            mark, shown = self._shown.get(t.entry_id, (None, None))
            stored = at_mark.get(t.mapping)
            if mark != t.since or shown is None or stored is None:
                shown = stored
            else:
                shown |= stored
            self._shown[t.entry_id] = (t.since, shown if shown is None
                                       or len(shown) <= MAX_SHOWN else None)
        self._due = {k: v for k, v in self._due.items() if k in ids}
        self._shown = {k: v for k, v in self._shown.items() if k in ids}
        self._targets, self._running = targets, running

    def _release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.invalidate()  # ends the session (not back to the pool): the lock goes
                conn.close()
            except Exception:
                log.debug("probe connection close failed", exc_info=True)
