"""The worker loop: a stop event, a claim, a run, a record of the outcome.

Runs execute in daemon threads (at most ``concurrency`` at once). Everything that touches the
database is retried with backoff when the database is away, so the worker survives a
database restart and keeps its schedule (the schedule is in the database anyway)."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from sqlalchemy.engine import Engine

from worker import __version__
from worker.errors import DatabaseError, DatabaseUnavailable, JobError
from worker.jobs import JobHandler, RunContext, Services
from worker.observers import HookSet, RunHooks
from worker.queue.manager import Claim, Outcome, QueueManager
from worker.queue.models import JobKind, RunStatus
from worker.runtime.listener import CHANNEL, LOCAL_CHANGE_CHANNEL, Listener
from worker.runtime.liveness import Liveness
from worker.runtime.probe import Prober
from worker.runtime.recorder import OutcomeRecorder, Pending
from worker.runtime.timers import Timers

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerConfig:
    concurrency: int = 4
    lease: timedelta = timedelta(seconds=60)
    poll_interval: float = 2.0
    reap_interval: float = 10.0
    shutdown_timeout: float = 30.0
    # NAV pulls a sync entry forward to now + 30 s when a mapped local table changes.
    change_wake_delay: timedelta = timedelta(seconds=30)
    # Ask the CRM whether anything changed for entries on inactivity hold (runtime/probe.py).
    remote_probe: bool = False

    @property
    def heartbeat_interval(self) -> float:
        # At most a minute: other workers forget a worker silent for 5 minutes and rescue
        # the runs of a worker they do not know.
        return min(max(self.lease.total_seconds() / 4, 0.2), 60.0)

    @property
    def forget_workers_after(self) -> timedelta:
        return max(self.lease * 10, timedelta(minutes=5))


def make_identity() -> str:
    """host:pid:start-random, unique even when a pid is reused."""
    started = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    return f"{socket.gethostname()}:{os.getpid()}:{started}-{uuid.uuid4().hex[:6]}"


@dataclass
class _Run:
    claim: Claim
    cancelled: threading.Event
    deadline: float
    started: float
    thread: threading.Thread | None = None
    detached: bool = False  # outcome already recorded by the job-timeout check
    ended: float | None = None  # when the handler returned (recording is not run time)


@dataclass
class _Backoff:
    initial: float = 0.5
    maximum: float = 30.0
    current: float = field(default=0.0)

    def next(self) -> float:
        self.current = self.initial if self.current == 0 else min(self.current * 2, self.maximum)
        return self.current

    def reset(self) -> None:
        self.current = 0.0


class Worker:
    """One crmsync worker process' scheduler. Any number may share a database. Its runs
    and its remote probe use the process' ``services`` (``worker.app`` builds them)."""

    def __init__(
        self,
        services: Services,
        handlers: Mapping[JobKind, JobHandler],
        config: WorkerConfig | None = None,
        *,
        identity: str | None = None,
        hooks: Sequence[RunHooks] = (),
    ) -> None:
        engine = self.engine = services.engine
        self.services = services
        self.handlers = handlers
        self.config = config or WorkerConfig()
        self.id = identity or make_identity()
        self.manager = QueueManager(engine)
        self.hooks = HookSet(hooks)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._runs: dict[int, _Run] = {}
        self._timers = Timers()
        self._listener = Listener(_conninfo(engine), self._on_notify, self._stop,
                                  (CHANNEL, LOCAL_CHANGE_CHANNEL))
        self._changed_tables: set[str] = set()
        self.prober = Prober(engine, self.config.change_wake_delay, services.clients) \
            if self.config.remote_probe else None
        self._backoff = _Backoff()
        self._recorder = OutcomeRecorder(
            self.manager, self.id, self._stop, self._recorded,
            lambda exc: self._database_lost(exc, sleep=False))
        self.database_ok = False
        self.last_heartbeat: float | None = None
        self.started = threading.Event()
        self.loop = Liveness()

    # -- public -------------------------------------------------------------------------
    def run(self) -> None:
        """Block until stop() is called; then finish or release the runs in hand."""
        self._register()
        cfg = self.config
        self._timers.every("heartbeat", cfg.heartbeat_interval, self._heartbeat)
        self._timers.every("reaper", cfg.reap_interval, self._reap)
        self._timers.start()
        self._listener.start()
        if self.prober is not None:
            self.prober.start()
        self.started.set()
        self.hooks.notify("worker_started", self.id)
        log.info("worker started", extra={"worker": self.id, "concurrency": cfg.concurrency})
        try:
            news = True
            while not self._stop.is_set():
                self.loop.dispatching()
                self._dispatch(news)
                self.loop.waiting(cfg.poll_interval)
                news = self._wake.wait(cfg.poll_interval)
                self._wake.clear()
        finally:
            self._shutdown()

    def stop(self, *, immediately: bool = False) -> None:
        """Stop claiming. With ``immediately`` the runs in hand are released at once
        instead of being awaited (a second Ctrl-C)."""
        if immediately:
            self.config = replace(self.config, shutdown_timeout=0.0)
        self._stop.set()
        self._wake.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def healthy(self) -> bool:
        """Scheduler thread alive and database reachable at the last contact."""
        return self._timers.alive() and self.database_ok

    def alive(self) -> bool:  # the database reachable or not: what the watchdog is fed on
        return self._timers.alive() and self.loop.ok()

    def health(self) -> dict[str, bool]:
        """For /healthz: the loop and its scheduler thread go round; the database, asked now."""
        return {"loop": self.alive(), "database": self.manager.ping()}

    def readiness(self) -> dict[str, bool]:
        """For /readyz: the loop is running and claiming."""
        return {"started": self.started.is_set(), "claiming": not self._stop.is_set(),
                "database": self.database_ok}

    def running_count(self) -> int:
        with self._lock:
            return len(self._runs)

    # -- the loop -----------------------------------------------------------------------
    def _on_notify(self, channel: str, payload: str) -> None:
        if channel == LOCAL_CHANGE_CHANNEL and payload:
            with self._lock:
                self._changed_tables.add(payload)
        elif self.prober is not None:
            self.prober.invalidate()  # entries changed: the probes' cache is stale
        self._wake.set()

    def _pull_forward_changed(self) -> None:
        """Entries of mappings whose local table changed are due within the wake delay."""
        with self._lock:
            tables, self._changed_tables = self._changed_tables, set()
        if tables:
            self.manager.pull_forward(sorted(tables), self.config.change_wake_delay)

    def _dispatch(self, news: bool = True) -> None:
        """Claim what is due. ``news``: woken by a notification or the due-time timer;
        without news (the fallback poll) one cheap statement decides whether to look."""
        if not news and not self._changed_tables:
            try:
                idle, next_due = self.manager.nothing_to_do()
            except DatabaseUnavailable as exc:
                self._database_lost(exc)
                return
            except Exception:
                idle, next_due = False, None
            if idle:
                self._database_back()
                if next_due is not None:
                    self._timers.wake_at(next_due, self._wake.set)
                return
        try:
            self._pull_forward_changed()
            free = self.config.concurrency - self.running_count()
            if free <= 0 or self._stop.is_set():
                return  # the next run to finish wakes the loop
            found = self.manager.claim_due(self.id, self.config.lease, free)
            for claim in found.claims:
                self._start(claim)
            next_due = found.next_due
            self._database_back()
        except DatabaseUnavailable as exc:
            self._database_lost(exc)
            return
        except Exception:  # one bad statement never kills the loop; entries record their own
            log.exception("dispatch failed; retrying at the next wake-up")
            self._stop.wait(self.config.poll_interval)
            return
        if next_due is not None and next_due > datetime.now(UTC):
            self._timers.wake_at(next_due, self._wake.set)

    def _start(self, claim: Claim) -> None:
        entry = claim.entry
        run = _Run(
            claim=claim,
            cancelled=threading.Event(),
            deadline=time.monotonic() + entry.job_timeout.total_seconds(),
            started=time.monotonic(),
        )
        run.thread = threading.Thread(
            target=self._execute, args=(run,), name=f"run-{entry.id}", daemon=True
        )
        with self._lock:
            self._runs[claim.log_id] = run
        log.info("run started", extra=_fields(claim))
        self.hooks.notify("run_started", claim)
        run.thread.start()

    def _execute(self, run: _Run) -> None:
        claim = run.claim
        handler = self.handlers.get(claim.entry.job_kind)
        ctx = RunContext(
            entry=claim.entry, log_id=claim.log_id, scheduled_for=claim.scheduled_for,
            worker_id=self.id, services=self.services, cancelled=run.cancelled,
        )
        try:
            if handler is None:
                raise JobError(f"job_kind: no handler for {claim.entry.job_kind!r}")
            result = handler(ctx)
            outcome = Outcome.success(result.message, result.changed)
        except BaseException as exc:  # one failing run never kills the loop nor its record
            outcome = Outcome.failure(exc)
        with self._lock:
            if run.detached:
                log.warning("run returned after its job timeout", extra=_fields(claim))
                return
            run.ended = time.monotonic()
        self._recorder.record(run, outcome)

    def _recorded(self, pending: Pending, outcome: Outcome) -> None:
        """A run's outcome is in the database (or given up): the slot is free."""
        assert isinstance(pending, _Run)
        run = pending
        claim = run.claim
        seconds = (run.ended or time.monotonic()) - run.started
        with self._lock:
            self._runs.pop(claim.log_id, None)
        # A failed run is an error for the operator (``journalctl -p err`` lists it, with
        # the mapping and the message); an abandoned or cancelled one a warning.
        level = {RunStatus.SUCCESS: logging.INFO,
                 RunStatus.ERROR: logging.ERROR}.get(outcome.status, logging.WARNING)
        log.log(level, "run finished", extra={
            **_fields(claim), "outcome": outcome.status.value, "seconds": round(seconds, 3),
            "detail": outcome.message or outcome.error,
        })
        self.hooks.notify("run_finished", claim, outcome, seconds)
        self._wake.set()

    # -- timers -------------------------------------------------------------------------
    def _register(self) -> None:
        while not self._stop.is_set():
            try:
                self.manager.heartbeat(self.id, self._info(), self.config.lease, [])
                self._database_back()
                return
            except DatabaseUnavailable as exc:
                self._database_lost(exc)

    def _heartbeat(self) -> None:
        self.hooks.notify("liveness", self.alive(), self.database_ok)
        self._expire_timed_out_runs()
        with self._lock:
            log_ids = [r.claim.log_id for r in self._runs.values()]
        try:
            self.manager.heartbeat(self.id, self._info(), self.config.lease, log_ids)
            self._database_back()
            self.last_heartbeat = time.monotonic()
        except DatabaseUnavailable as exc:
            self._database_lost(exc, sleep=False)
        self.hooks.notify("heartbeat", self.healthy())

    def _expire_timed_out_runs(self) -> None:
        now = time.monotonic()
        with self._lock:
            late = [r for r in self._runs.values() if now > r.deadline and not r.detached]
            for run in late:
                run.detached = True
                run.cancelled.set()
        for run in late:
            outcome = Outcome(
                RunStatus.ERROR, error=f"job timeout of {run.claim.entry.job_timeout} exceeded")
            # Not on the timer thread: recording may wait for the database.
            threading.Thread(target=self._recorder.record, args=(run, outcome),
                             daemon=True).start()

    def _reap(self) -> None:
        try:
            rescued = self.manager.rescue_abandoned(self.config.forget_workers_after)
        except DatabaseUnavailable as exc:
            self._database_lost(exc, sleep=False)
            return
        for item in rescued:
            log.warning("rescued abandoned run", extra={
                "entry": item.entry_id, "dead_worker": item.worker_id, "log_id": item.log_id})
            self.hooks.notify("run_rescued", item)
        if rescued:
            self._wake.set()

    # -- shutdown -----------------------------------------------------------------------
    def _shutdown(self) -> None:
        self.hooks.notify("worker_stopping", self.id)
        log.info("worker stopping", extra={"worker": self.id, "running": self.running_count()})
        deadline = time.monotonic() + self.config.shutdown_timeout
        while self.running_count() and time.monotonic() < deadline:
            time.sleep(0.05)
        with self._lock:
            unfinished = list(self._runs.values())
            for run in unfinished:
                run.detached = True
                run.cancelled.set()
        for run in unfinished:
            try:
                self.manager.release(run.claim, self.id, "worker stopped before the run finished")
                log.warning("run released at shutdown", extra=_fields(run.claim))
            except (DatabaseUnavailable, DatabaseError) as exc:
                log.error("could not release run; its lease will expire",
                          extra={**_fields(run.claim), "error": str(exc)})
        self._timers.shutdown()
        if self.prober is not None:
            self.prober.stop()
        with contextlib.suppress(DatabaseUnavailable, DatabaseError):
            self.manager.unregister(self.id)
        self._listener.join(timeout=3)
        log.info("worker stopped", extra={"worker": self.id})

    # -- helpers ------------------------------------------------------------------------
    def _info(self) -> dict[str, object]:
        return {"hostname": socket.gethostname(), "pid": os.getpid(),
                "version": __version__, "concurrency": self.config.concurrency}

    def _database_lost(self, exc: Exception, *, sleep: bool = True) -> None:
        if self.database_ok:
            log.warning("database unavailable; retrying", extra={"error": str(exc)})
        self.database_ok = False
        if sleep:
            self._stop.wait(self._backoff.next())

    def _database_back(self) -> None:
        if not self.database_ok:
            log.info("database reachable", extra={"worker": self.id})
        self.database_ok = True
        self._backoff.reset()


def _fields(claim: Claim) -> dict[str, object]:
    entry = claim.entry
    return {"entry": entry.id, "kind": entry.job_kind.value, "mapping": entry.mapping_name,
            "run_id": claim.log_id}


def _conninfo(engine: Engine) -> str:
    return engine.url.set(drivername="postgresql").render_as_string(hide_password=False)

