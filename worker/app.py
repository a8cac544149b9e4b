"""The composition root: one :class:`App` per process, built by the command that runs
(``crmsync run``, ``crmsync demo``, a ``crmsync sync`` …), holds the database engine, the
OData clients, the sync engine, the metrics and the job handlers, and hands each part what
it uses. Nothing below it keeps engines or clients in module state, so what one process
shares is visible here:

- one HTTP session, request budget and ``$metadata`` per connection, shared by every run,
  the remote probe and the webhook (``Clients``); the connection's settings are read
  again at every use, so a rotated secret takes effect at the next run;
- one sync engine (its reflected tables and trusted checks) for every run;
- the metrics attached to the clients (requests), the sync engine (passes) and the worker
  (runs).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy.engine import Engine

from worker.jobs import JobHandler, Services, load_handlers
from worker.metrics import (
    ClusterCollector,
    ConnectionMetrics,
    MetricsHooks,
    PassMetrics,
    SyncReads,
    install_cluster_collector,
)
from worker.observers import RunHooks
from worker.queue.models import JobKind
from worker.runtime.webhook import WebhookReceiver
from worker.runtime.worker import Worker, WorkerConfig
from worker.sync.audit import drift_by_mapping
from worker.sync.capture import pending_change_age
from worker.sync.clients import Clients
from worker.sync.engine import SyncEngine
from worker.sync.progress import BOARD, PassObservers, ProgressLog

SYNC_READS = SyncReads(change_ages=pending_change_age, drift=drift_by_mapping)


class App:
    """crmsync's parts for one process and one database. ``plugins``: modules whose
    ``register(handlers)`` adds or replaces job handlers (``CRMSYNC_PLUGINS``)."""

    def __init__(self, engine: Engine, *, plugins: Iterable[str] = (),
                 pass_observers: Sequence[object] | None = None) -> None:
        self.engine = engine
        self.clients = Clients(observers=ConnectionMetrics)
        # Besides the metrics, who hears how far each pass is: by default a log line every
        # 30 s and the process's board (the worker's sd_notify STATUS=); a command its own.
        shown = (ProgressLog(), BOARD) if pass_observers is None else pass_observers
        self.sync = SyncEngine(engine, self.clients, PassObservers([PassMetrics(), *shown]))
        self.services = Services(engine, self.clients, self.sync)
        self.handlers: dict[JobKind, JobHandler] = load_handlers(plugins)
        self._run_metrics: MetricsHooks | None = None

    @property
    def run_metrics(self) -> MetricsHooks:
        """The job queue runs' metrics (made at first use: they register the process'
        heartbeat gauge)."""
        if self._run_metrics is None:
            self._run_metrics = MetricsHooks(self.engine)
        return self._run_metrics

    def worker(self, config: WorkerConfig | None = None, *, identity: str | None = None,
               hooks: Sequence[RunHooks] = ()) -> Worker:
        """The worker loop on these services and handlers, with the run metrics attached."""
        return Worker(self.services, self.handlers, config, identity=identity,
                      hooks=[self.run_metrics, *hooks])

    def webhooks(self) -> WebhookReceiver:
        """The webhook receiver (not started), waking entries through the runs' clients."""
        return WebhookReceiver(self.engine, self.clients)

    def cluster_collector(self, cache_seconds: float = 5.0) -> ClusterCollector:
        """The cluster gauges, read through the sync tables' owners (not registered)."""
        return ClusterCollector(self.engine, SYNC_READS, cache_seconds)

    def install_cluster_metrics(self) -> ClusterCollector:
        """The cluster gauges on the metrics registry (what a metrics endpoint serves)."""
        return install_cluster_collector(self.engine, SYNC_READS)

    def close(self) -> None:
        """Close the clients' HTTP sessions (the engine is the caller's to dispose)."""
        self.clients.close()
