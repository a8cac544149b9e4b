"""Every Prometheus metric crmsync exports, and the hooks that update them.

Per-process series (runs, durations, records, requests) are counted by the process that did
the work; sum them across workers. Cluster series (entries by status, sync lag, skipped
couplings, worker heartbeats) are read from the database at scrape time by every worker, so
each worker reports the same values: aggregate them with ``max`` (the dashboard and alert
rules do), never ``sum``. Labels stay low-cardinality: mapping, job kind, direction,
outcome, method, status class — never a record id.
"""

from __future__ import annotations

import logging
import time
from collections import Counter as CounterType
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy.engine import Engine

from worker import __version__
from worker.queue.manager import Claim, Outcome, Rescued
from worker.queue.models import EntryStatus
from worker.runtime.hooks import RunHooks
from worker.sync.model import Direction

log = logging.getLogger(__name__)

REGISTRY = CollectorRegistry(auto_describe=True)

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

RESULTS = ("inserted", "modified", "deleted", "unchanged", "skipped", "failed", "coupled",
           "uncoupled")


class MetricsHooks(RunHooks):
    """Job queue runs → metrics."""

    def __init__(self) -> None:
        self._last_heartbeat: float | None = None
        BUILD_INFO.labels(__version__).set(1)
        HEARTBEAT_AGE.set_function(lambda: self.heartbeat_age() or 0.0)

    def run_started(self, claim: Claim) -> None:
        lag = (claim.started_at - claim.scheduled_for).total_seconds()
        START_LAG.labels(claim.entry.job_kind.value).observe(max(lag, 0.0))
        RUNNING.inc()

    def run_finished(self, claim: Claim, outcome: Outcome, seconds: float) -> None:
        entry = claim.entry
        mapping = entry.mapping_name or ""
        JOB_RUNS.labels(entry.job_kind.value, mapping, outcome.status.value).inc()
        JOB_DURATION.labels(entry.job_kind.value, mapping).observe(seconds)
        RUNNING.dec()

    def run_rescued(self, rescued: Rescued) -> None:
        RESCUED.inc()

    def heartbeat(self, healthy: bool) -> None:
        if healthy:
            self._last_heartbeat = time.monotonic()

    def heartbeat_age(self) -> float | None:
        return None if self._last_heartbeat is None else time.monotonic() - self._last_heartbeat


class PassMetrics:
    """Synchronization passes → metrics (the sync engine's pass observer)."""

    def pass_finished(self, mapping: str, direction: Direction, counts: CounterType[str],
                      error: str | None) -> None:
        for result in RESULTS:
            RECORDS.labels(mapping, direction.value, result).inc(counts.get(result, 0))

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


class ClusterCollector(Collector):
    """Gauges that describe the whole cluster, read from the database at scrape time and
    cached for a few seconds so that frequent scrapes cost one set of queries."""

    def __init__(self, engine: Engine, cache_seconds: float = 5.0) -> None:
        self.engine = engine
        self.cache_seconds = cache_seconds
        self._cached: list[Any] = []
        self._at = 0.0

    def describe(self) -> Iterator[Any]:
        return iter(())

    def collect(self) -> Iterator[Any]:
        if time.monotonic() - self._at > self.cache_seconds:
            try:
                self._cached = list(self._read())
            except Exception as exc:  # the scrape must not fail because the database did
                log.warning("cluster metrics unavailable", extra={"error": str(exc)})
                self._cached = []
            self._at = time.monotonic()
        return iter(self._cached)

    def _read(self) -> Iterator[Any]:
        from worker.sync.capture import pending_change_age

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
            ages = pending_change_age(conn)
        yield _gauge("crmsync_job_queue_entries", "Job queue entries by status", "status",
                     [(st.value, by_status.get(st.value, 0)) for st in EntryStatus])
        yield _gauge("crmsync_skipped_couplings", "Couplings skipped after repeated failures",
                     "mapping", skipped)
        yield _gauge("crmsync_sync_lag_seconds",
                     "Age of the oldest local change not yet read by the mapping", "mapping",
                     [(name, ages.get(name, 0.0)) for name in mappings])
        yield _gauge("crmsync_worker_heartbeat_age_seconds",
                     "Seconds since each registered worker's last heartbeat", "worker", workers)
        yield GaugeMetricFamily("crmsync_workers", "Registered workers (cluster)",
                                value=float(len(workers)))


def _gauge(name: str, text: str, label: str, pairs: Any) -> GaugeMetricFamily:
    """A cluster gauge family: every worker reports the same values (aggregate with max)."""
    family = GaugeMetricFamily(name, f"{text} (cluster; aggregate with max)", labels=[label])
    for value_label, value in pairs:
        family.add_metric([str(value_label)], float(value))
    return family


def prime(engine: Engine) -> None:
    """Create the per-mapping series at 0, so that rate() and increase() see the first
    failure of a mapping after a restart (a counter born at 1 has no increase)."""
    from worker.queue.models import RunStatus

    with engine.connect() as conn:
        names = conn.scalars(sa.text(
            "SELECT name FROM crmsync.integration_table_mappings WHERE enabled")).all()
    for name in names:
        for outcome in (RunStatus.SUCCESS, RunStatus.ERROR, RunStatus.ABANDONED):
            JOB_RUNS.labels("sync_mapping", name, outcome.value)
        for direction in Direction:
            if direction is not Direction.BIDIRECTIONAL:
                for result in RESULTS:
                    RECORDS.labels(name, direction.value, result)


def install_cluster_collector(engine: Engine) -> ClusterCollector:
    collector = ClusterCollector(engine)
    REGISTRY.register(collector)
    return collector
