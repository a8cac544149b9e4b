"""Every Prometheus metric crmsync exports, and the hooks that update them. It depends on
the ground floor alone (the observer protocols it implements, the vocabularies it labels
with); what it reads of the database it reads itself, or is handed.

Per-process series (runs, durations, records, requests) are counted by the process that did
the work; sum them across workers. Cluster series (entries by status, sync lag, skipped
couplings, worker heartbeats) are read from the database at scrape time by every worker, so
each worker reports the same values: aggregate them with ``max`` (the dashboard and alert
rules do), never ``sum``. Labels stay low-cardinality: mapping, job queue entry, job kind,
direction, outcome, method, status class — never a record id.

Every labelled series whose label values are known at start (the enabled mappings, their
connections, the job kinds, the entries) exists from the first scrape at 0, so a panel shows
0 rather than "No data" and ``rate()`` sees the first event. The process' own memory, CPU
time and descriptors come as the standard ``process_*`` series; the ``_created`` series of
counters and histograms are not exported (nothing reads them).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter as CounterType
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy.engine import Connection, Engine

from worker import __version__
from worker.observers import ObservedOutcome, ObservedPass, ObservedRescue, ObservedRun, RunHooks
from worker.vocabulary import Direction, EntryStatus, JobKind, RunStatus

log = logging.getLogger(__name__)

disable_created_metrics()
REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)

BUILD_INFO = Gauge("crmsync_build_info", "crmsync version of this process", ["version"],
                   registry=REGISTRY)
JOB_RUNS = Counter("crmsync_job_runs_total", "Job queue runs by kind, mapping and outcome",
                   ["job_kind", "mapping", "outcome"], registry=REGISTRY)
JOB_DURATION = Histogram(
    "crmsync_job_run_duration_seconds", "Duration of job queue runs",
    ["job_kind", "mapping"], registry=REGISTRY,
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 3600))
START_LAG = Histogram(
    "crmsync_job_start_lag_seconds", "Start time minus scheduled time of job queue runs",
    ["job_kind"], registry=REGISTRY,
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300))
RECORDS = Counter("crmsync_sync_records_total",
                  "Records handled by synchronization passes, by result",
                  ["mapping", "direction", "result"], registry=REGISTRY)
LAST_SUCCESS = Gauge("crmsync_mapping_last_success_timestamp_seconds",
                     "When this process last finished a mapping run without error",
                     ["mapping"], registry=REGISTRY)
REQUESTS = Counter("crmsync_remote_requests_total", "HTTP requests to the CRM",
                   ["connection", "method", "status_class"], registry=REGISTRY)
REQUEST_DURATION = Histogram(
    "crmsync_remote_request_duration_seconds", "Duration of HTTP requests to the CRM",
    ["connection", "method"], registry=REGISTRY,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
THROTTLED = Counter("crmsync_remote_throttled_seconds_total",
                    "Time the connection stopped sending because the CRM throttled it",
                    ["connection"], registry=REGISTRY)
RESCUED = Counter("crmsync_abandoned_runs_rescued_total",
                  "Runs of dead workers rescued by this process", registry=REGISTRY)
HEARTBEAT_AGE = Gauge("crmsync_worker_last_heartbeat_age_seconds",
                      "Seconds since this process last wrote its heartbeat", registry=REGISTRY)
RUNNING = Gauge("crmsync_worker_running_jobs", "Runs in progress in this process",
                registry=REGISTRY)

CHANGE_TO_SYNC = Histogram(
    "crmsync_change_to_sync_seconds",
    "Time from a change's commit (ERP) or modified-on (CRM) to the end of the pass that "
    "carried it", ["mapping", "direction"], registry=REGISTRY,
    buckets=(1, 2.5, 5, 10, 20, 30, 45, 60, 120, 300, 600, 1800, 3600, 4 * 3600, 12 * 3600,
             24 * 3600))
PROBES = Counter("crmsync_remote_probes_total",
                 "Remote probes of entries on inactivity hold, by result (nothing, changed, "
                 "error)", ["mapping", "result"], registry=REGISTRY)
WEBHOOK_CALLS = Counter("crmsync_webhook_calls_total",
                        "Webhook calls from the CRM, by connection and HTTP status answered",
                        ["connection", "status"], registry=REGISTRY)

REQUEST_METHODS = ("GET", "POST", "PATCH", "DELETE")
STATUS_CLASSES = ("2xx", "3xx", "4xx", "5xx", "error")
PROBE_RESULTS = ("nothing", "changed", "error")
WEBHOOK_STATUSES = ("202", "400", "401", "411", "413", "503")  # what the receiver answers
RESULTS = ("inserted", "modified", "deleted", "unchanged", "skipped", "failed", "coupled",
           "uncoupled")


class MetricsHooks(RunHooks):
    """Job queue runs → metrics. With ``engine``, also the freshness of what sync runs
    carried (``crmsync_change_to_sync_seconds``, a few short queries per run)."""

    def __init__(self, engine: Engine | None = None) -> None:
        self._last_heartbeat: float | None = None
        self._freshness = Freshness(engine) if engine is not None else None
        BUILD_INFO.labels(__version__).set(1)
        HEARTBEAT_AGE.set_function(lambda: self.heartbeat_age() or 0.0)

    def run_started(self, claim: ObservedRun) -> None:
        lag = (claim.started_at - claim.scheduled_for).total_seconds()
        START_LAG.labels(claim.entry.job_kind.value).observe(max(lag, 0.0))
        RUNNING.inc()
        if self._freshness is not None:
            self._freshness.run_started(claim)

    def run_finished(self, claim: ObservedRun, outcome: ObservedOutcome,
                     seconds: float) -> None:
        entry = claim.entry
        mapping = entry.mapping_name or ""
        JOB_RUNS.labels(entry.job_kind.value, mapping, outcome.status.value).inc()
        JOB_DURATION.labels(entry.job_kind.value, mapping).observe(seconds)
        RUNNING.dec()
        if self._freshness is not None:
            self._freshness.run_finished(claim)

    def run_rescued(self, rescued: ObservedRescue) -> None:
        RESCUED.inc()

    def heartbeat(self, healthy: bool) -> None:
        if healthy:
            self._last_heartbeat = time.monotonic()

    def heartbeat_age(self) -> float | None:
        return None if self._last_heartbeat is None else time.monotonic() - self._last_heartbeat


_PENDING_LOCAL = sa.text(
    """
    SELECT m.name, extract(epoch FROM min(c.changed_at)) AS changed
      FROM crmsync.integration_table_mappings m
      JOIN crmsync.local_changes c ON c.table_name = m.local_table
     WHERE (m.name = :name OR CAST(:name AS text) IS NULL) AND m.enabled
       AND m.change_capture = 'trigger' AND m.local_snapshot IS NOT NULL
       AND c.xid >= pg_snapshot_xmin(CAST(m.local_snapshot AS pg_snapshot))
       AND NOT pg_visible_in_snapshot(c.xid, CAST(m.local_snapshot AS pg_snapshot))
     GROUP BY m.name, c.row_key
     LIMIT 10000
    """)
_REMOTE_INCREMENTAL = sa.text(
    "SELECT name FROM crmsync.integration_table_mappings "
    "WHERE (name = :name OR CAST(:name AS text) IS NULL) AND enabled "
    "AND (remote_modified_since IS NOT NULL OR delta_link IS NOT NULL)")
_PASSES = sa.text(
    """
    SELECT id, mapping_name, direction, extract(epoch FROM finished_at) AS finished
      FROM crmsync.sync_jobs
     WHERE job_queue_log_entry_id = :log AND finished_at IS NOT NULL
       AND (message IS NULL OR message NOT LIKE 'failed:%')
    """)
_REMOTE_CARRIED = sa.text(
    "SELECT extract(epoch FROM j.finished_at - c.remote_modified_on) "
    "FROM crmsync.couplings c JOIN crmsync.sync_jobs j ON j.id = c.last_job_from "
    "WHERE j.id = :job AND c.mapping_name = j.mapping_name "
    "AND c.remote_modified_on IS NOT NULL")


@dataclass
class _Pending:
    local: dict[str, list[float]] = field(default_factory=dict)  # mapping -> change times
    remote: set[str] = field(default_factory=set)  # mappings whose CRM read is incremental


class Freshness:
    """``crmsync_change_to_sync_seconds``: when a sync run starts, the commit times of the
    local changes its local→remote passes will carry are noted (the change log is pruned
    once read); when it ends, each successful pass observes pass end minus change time:
    the noted local times, and the CRM modified-on of each record a remote→local pass
    wrote. Full synchronizations and first reads carry old records, not changes: left out.
    The noting is one query on the claiming thread, so it reads at most 10,000 change times
    (a sample of a bulk change)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._pending: dict[int, _Pending] = {}
        self._lock = threading.Lock()

    def run_started(self, claim: ObservedRun) -> None:
        entry = claim.entry
        if entry.job_kind.value not in ("sync_mapping", "sync_all_modified") \
                or entry.parameters.get("full"):
            return
        pending = _Pending()
        try:
            with self.engine.connect() as conn:
                for name, changed in conn.execute(_PENDING_LOCAL, {"name": entry.mapping_name}):
                    pending.local.setdefault(name, []).append(float(changed))
                pending.remote = set(conn.scalars(_REMOTE_INCREMENTAL,
                                                  {"name": entry.mapping_name}))
        except Exception as exc:  # a metric never fails a run
            log.debug("freshness: change times unavailable", extra={"error": str(exc)})
            return
        with self._lock:
            self._pending[claim.log_id] = pending

    def run_finished(self, claim: ObservedRun) -> None:
        with self._lock:
            pending = self._pending.pop(claim.log_id, None)
        if pending is None:
            return
        try:
            with self.engine.connect() as conn:
                for job in conn.execute(_PASSES, {"log": claim.log_id}).all():
                    self._observe(conn, job, pending)
        except Exception as exc:
            log.debug("freshness: passes unavailable", extra={"error": str(exc)})

    @staticmethod
    def _observe(conn: Connection, job: Any, pending: _Pending) -> None:
        histogram = CHANGE_TO_SYNC.labels(job.mapping_name, job.direction)
        if job.direction == Direction.TO_INTEGRATION.value:
            ages = [float(job.finished) - t for t in pending.local.get(job.mapping_name, ())]
        elif job.mapping_name in pending.remote:
            ages = [float(a) for a in conn.scalars(_REMOTE_CARRIED, {"job": job.id})]
        else:
            ages = []
        for age in ages:
            histogram.observe(max(age, 0.0))


class PassMetrics:
    """Synchronization passes → metrics (the sync engine's pass observer). Records are
    counted chunk by chunk, as each chunk commits, so a long pass shows in Grafana while
    it runs rather than as one jump at its end."""

    def pass_progress(self, progress: ObservedPass, counts: CounterType[str]) -> None:
        for result in RESULTS:
            if counts.get(result):
                RECORDS.labels(progress.mapping, progress.direction.value,
                               result).inc(counts[result])

    def mapping_finished(self, mapping: str, ok: bool) -> None:
        if ok:
            LAST_SUCCESS.labels(mapping).set(time.time())


class ConnectionMetrics:
    """OData client requests of one connection → metrics (the client's RequestObserver)."""

    def __init__(self, connection: str) -> None:
        self.connection = connection

    def request_finished(self, method: str, status_class: str, seconds: float) -> None:
        REQUESTS.labels(self.connection, method, status_class).inc()
        REQUEST_DURATION.labels(self.connection, method).observe(seconds)

    def throttled(self, seconds: float) -> None:
        THROTTLED.labels(self.connection).inc(seconds)


@dataclass(frozen=True)
class SyncReads:
    """What the cluster gauges read through the sync tables' owners (handed in by the
    composition root, so that this module depends on none of them): per mapping, the age of
    its oldest local change not yet read (``sync.capture.pending_change_age``) and the
    records its last audit found drifted (``sync.audit.drift_by_mapping``)."""

    change_ages: Callable[[Connection], Mapping[str, float]]
    drift: Callable[[Connection], Iterable[tuple[str, int]]]


class ClusterCollector(Collector):
    """Gauges that describe the whole cluster, read from the database at scrape time and
    cached for a few seconds so that frequent scrapes cost one set of queries."""

    def __init__(self, engine: Engine, reads: SyncReads, cache_seconds: float = 5.0) -> None:
        self.engine = engine
        self.reads = reads
        self.cache_seconds = cache_seconds
        self._cached: list[Any] = []
        self._at = 0.0
        self._refresh = threading.Lock()  # concurrent scrapes of a stale cache: one read

    def describe(self) -> Iterator[Any]:
        return iter(())

    def collect(self) -> Iterator[Any]:
        with self._refresh:
            if time.monotonic() - self._at > self.cache_seconds:
                try:
                    self._cached = list(self._read())
                except Exception as exc:  # the scrape must not fail because the database did
                    log.warning("cluster metrics unavailable", extra={"error": str(exc)})
                    self._cached = []
                self._at = time.monotonic()
            return iter(self._cached)

    def _read(self) -> Iterator[Any]:
        with self.engine.connect() as conn:
            by_status: dict[str, int] = dict(conn.execute(sa.text(
                "SELECT status, count(*) FROM crmsync.job_queue_entries GROUP BY status")).all())
            skipped = conn.execute(sa.text(
                "SELECT m.name, count(c.id) FILTER (WHERE c.skipped) FROM "
                "crmsync.integration_table_mappings m LEFT JOIN crmsync.couplings c "
                "ON c.mapping_name = m.name GROUP BY m.name")).all()
            workers = conn.execute(sa.text(
                "SELECT id, extract(epoch FROM now() - heartbeat_at) FROM crmsync.workers"
            )).all()
            mappings = conn.scalars(sa.text(
                "SELECT name FROM crmsync.integration_table_mappings WHERE enabled")).all()
            ages = self.reads.change_ages(conn)
            drift = self.reads.drift(conn)
            entries = conn.execute(_ENTRIES).all()
        yield _gauge("crmsync_job_queue_entries", "Job queue entries by status", "status",
                     [(st.value, by_status.get(st.value, 0)) for st in EntryStatus])
        yield _gauge("crmsync_skipped_couplings", "Couplings skipped after repeated failures",
                     "mapping", skipped)
        yield _gauge("crmsync_sync_lag_seconds",
                     "Age of the oldest local change not yet read by the mapping", "mapping",
                     [(name, ages.get(name, 0.0)) for name in mappings])
        yield _gauge("crmsync_drift_records",
                     "Coupled records whose sides differ without a captured change, as the "
                     "mapping's last audit found them (crmsync audit)", "mapping", drift)
        yield _gauge("crmsync_worker_heartbeat_age_seconds",
                     "Seconds since each registered worker's last heartbeat", "worker", workers)
        yield GaugeMetricFamily("crmsync_workers", "Registered workers (cluster)",
                                value=float(len(workers)))
        yield from entry_gauges(entries)


# One row per job queue entry: what the per-entry gauges and the alert rules need.
_ENTRIES = sa.text(
    """
    SELECT e.id, coalesce(e.mapping_name, '') AS mapping, e.job_kind, e.status,
           coalesce(extract(epoch FROM e.run_interval), 0) AS run_interval,
           extract(epoch FROM e.job_timeout) AS job_timeout,
           CASE WHEN e.status = 'in_process'
                THEN coalesce(extract(epoch FROM now() - r.started_at), 0) ELSE 0 END AS running,
           CASE WHEN e.status IN ('ready', 'waiting') AND e.next_run_at < now()
                THEN extract(epoch FROM now() - e.next_run_at) ELSE 0 END AS overdue,
           extract(epoch FROM s.finished_at) AS last_success
      FROM crmsync.job_queue_entries e
      LEFT JOIN crmsync.job_queue_log_entries r ON r.id = e.current_log_id
      LEFT JOIN LATERAL (
            SELECT finished_at FROM crmsync.job_queue_log_entries l
             WHERE l.entry_id = e.id AND l.status = 'success'
             ORDER BY l.started_at DESC LIMIT 1) s ON true
     ORDER BY e.id
    """)

_ENTRY_LABELS = ["entry", "mapping", "job_kind"]


def entry_gauges(rows: Any) -> Iterator[GaugeMetricFamily]:
    """Per job queue entry: its status as a state set (one series per status, 1 for the
    current one), its run interval and job timeout, how long its current run has been going,
    how long it has been due without starting, and when it last succeeded."""
    def family(name: str, text: str, extra: list[str] | None = None) -> GaugeMetricFamily:
        return GaugeMetricFamily(name, f"{text} (cluster; aggregate with max)",
                                 labels=_ENTRY_LABELS + (extra or []))

    status = family("crmsync_job_queue_entry_status",
                    "Status of each job queue entry: 1 for the current one", ["status"])
    interval = family("crmsync_job_queue_entry_run_interval_seconds",
                      "Run interval of each job queue entry (0: not recurring)")
    timeout = family("crmsync_job_queue_entry_job_timeout_seconds",
                     "Job timeout of each job queue entry")
    running = family("crmsync_job_queue_entry_running_seconds",
                     "How long the entry's current run has been going (0: not running)")
    overdue = family("crmsync_job_queue_entry_overdue_seconds",
                     "How long a ready entry has been due without starting (0: not due)")
    success = family("crmsync_job_queue_entry_last_success_timestamp_seconds",
                     "When a run of the entry last succeeded (absent: never)")
    for row in rows:
        labels = [str(row.id), row.mapping, row.job_kind]
        for state in EntryStatus:
            status.add_metric([*labels, state.value], 1.0 if row.status == state.value else 0.0)
        interval.add_metric(labels, float(row.run_interval))
        timeout.add_metric(labels, float(row.job_timeout))
        running.add_metric(labels, max(float(row.running), 0.0))
        overdue.add_metric(labels, max(float(row.overdue), 0.0))
        if row.last_success is not None:
            success.add_metric(labels, float(row.last_success))
    yield from (status, interval, timeout, running, overdue, success)


def _gauge(name: str, text: str, label: str, pairs: Any) -> GaugeMetricFamily:
    """A cluster gauge family: every worker reports the same values (aggregate with max)."""
    family = GaugeMetricFamily(name, f"{text} (cluster; aggregate with max)", labels=[label])
    for value_label, value in pairs:
        family.add_metric([str(value_label)], float(value))
    return family


def prime(engine: Engine) -> None:
    """Create every labelled series whose labels are known now at 0 (the enabled mappings,
    their connections, the job kinds, the entries), so that a panel shows 0 instead of "No
    data" and rate() and increase() see the first event after a restart (a counter born at 1
    has no increase)."""
    with engine.connect() as conn:
        mappings = conn.execute(sa.text(
            "SELECT name, connection_name FROM crmsync.integration_table_mappings "
            "WHERE enabled")).all()
        entries = conn.execute(sa.text(
            "SELECT DISTINCT job_kind, coalesce(mapping_name, '') "
            "FROM crmsync.job_queue_entries")).all()
    _prime_runs(entries, [name for name, _ in mappings])
    for name, _ in mappings:
        for result in PROBE_RESULTS:
            PROBES.labels(name, result)
        for direction in (Direction.TO_INTEGRATION, Direction.FROM_INTEGRATION):
            for result in RESULTS:
                RECORDS.labels(name, direction.value, result)
            CHANGE_TO_SYNC.labels(name, direction.value)
    for connection in sorted({connection for _, connection in mappings}):
        THROTTLED.labels(connection)
        for status in WEBHOOK_STATUSES:
            WEBHOOK_CALLS.labels(connection, status)
        for method in REQUEST_METHODS:
            REQUEST_DURATION.labels(connection, method)
            for status_class in STATUS_CLASSES:
                REQUESTS.labels(connection, method, status_class)


def _prime_runs(entries: Any, mappings: list[str]) -> None:
    kinds_and_mappings = {(kind, mapping) for kind, mapping in entries}
    kinds_and_mappings |= {(JobKind.SYNC_MAPPING.value, name) for name in mappings}
    for kind, mapping in sorted(kinds_and_mappings):
        JOB_DURATION.labels(kind, mapping)
        for outcome in (RunStatus.SUCCESS, RunStatus.ERROR, RunStatus.ABANDONED):
            JOB_RUNS.labels(kind, mapping, outcome.value)
    for kind in JobKind:
        START_LAG.labels(kind.value)


def install_cluster_collector(engine: Engine, reads: SyncReads) -> ClusterCollector:
    """The cluster gauges on the registry, and every series whose labels are known now at 0
    (:func:`prime`): what a metrics endpoint serves."""
    prime(engine)
    collector = ClusterCollector(engine, reads)
    REGISTRY.register(collector)
    return collector
