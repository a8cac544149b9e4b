"""What the worker, the sync engine and the OData client tell whoever listens (metrics,
systemd notification): the observer protocols, on the ground floor so that an observer
(``worker.metrics``) depends on none of the floors it observes. Each cross-cutting concern
is one implementation instead of code sprinkled through the loop. Observers must be cheap
and must not raise (the caller logs and ignores one that does).

A run is told as what an observer may read of it (``ObservedRun``): the job queue's
``Claim``, ``Outcome`` and ``Rescued`` have these attributes."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Protocol

from worker.vocabulary import Direction, JobKind, RunStatus

log = logging.getLogger(__name__)


class ObservedEntry(Protocol):
    @property
    def job_kind(self) -> JobKind: ...

    @property
    def mapping_name(self) -> str | None: ...

    @property
    def parameters(self) -> Mapping[str, Any]: ...


class ObservedRun(Protocol):
    """One run of a job queue entry: its entry, log row, occurrence and start."""

    @property
    def entry(self) -> ObservedEntry: ...

    @property
    def log_id(self) -> int: ...

    @property
    def scheduled_for(self) -> datetime: ...

    @property
    def started_at(self) -> datetime: ...


class ObservedOutcome(Protocol):
    @property
    def status(self) -> RunStatus: ...


class ObservedRescue(Protocol):
    """A run of a dead worker taken back."""

    @property
    def entry_id(self) -> int: ...


class RunHooks:
    """Observers of the worker's life. Base class with no-op methods; override what you
    need."""

    def worker_started(self, worker_id: str) -> None: ...

    def worker_stopping(self, worker_id: str) -> None: ...

    def heartbeat(self, healthy: bool) -> None: ...

    def liveness(self, alive: bool, database: bool) -> None:
        """On every heartbeat tick: the loop goes round (``alive``) and whether the
        database answered at the last contact."""

    def run_started(self, claim: ObservedRun) -> None: ...

    def run_finished(self, claim: ObservedRun, outcome: ObservedOutcome,
                     seconds: float) -> None: ...

    def run_rescued(self, rescued: ObservedRescue) -> None: ...


class HookSet:
    """The worker's hooks, told of each event in turn; one that raises is logged and the
    others still hear of it."""

    def __init__(self, hooks: Iterable[RunHooks]) -> None:
        self.hooks = list(hooks)

    def notify(self, name: str, *args: object) -> None:
        for hook in self.hooks:
            try:
                getattr(hook, name)(*args)
            except Exception:
                log.exception("hook failed", extra={"hook": type(hook).__name__, "event": name})


class ObservedPass(Protocol):
    """A pass in progress as its observers see it (worker.sync.progress.PassProgress)."""

    @property
    def mapping(self) -> str: ...

    @property
    def direction(self) -> Direction: ...


class PassObserver(Protocol):
    """Told about every finished pass and mapping run of the sync engine; an observer with
    a ``pass_progress(progress: ObservedPass, counts)`` method also hears of each pass's
    start and committed chunks (see worker.sync.progress)."""

    def pass_finished(self, mapping: str, direction: Direction, counts: Counter[str],
                      error: str | None) -> None: ...

    def mapping_finished(self, mapping: str, ok: bool) -> None: ...


class RequestObserver(Protocol):
    """Told about every HTTP request of an OData client and every throttling pause."""

    def request_finished(self, method: str, status_class: str, seconds: float) -> None:
        """``status_class`` is ``"2xx"`` … ``"5xx"``, or ``"error"`` when no response came
        (timeout, refused or broken connection)."""

    def throttled(self, seconds: float) -> None:
        """The connection stops sending for ``seconds`` because of a 429 / 503."""
