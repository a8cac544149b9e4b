"""Job kinds are dispatched through one small interface: a handler takes a RunContext and
returns a RunResult (or raises). The worker loop knows nothing else about what a job does.
A handler uses the process' services (``RunContext.services``, built once by the
composition root, ``worker.app``); it never builds an engine or a client of its own.

Plugins (``CRMSYNC_PLUGINS=module,module``) may replace or add handlers: each module has a
``register(handlers)`` function that edits the dict. Tests use this seam for slow or failing
jobs; the sync engine registers itself the same way."""

from __future__ import annotations

import importlib
import threading
from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from sqlalchemy.engine import Engine

from worker.errors import ConfigurationError, JobCancelled
from worker.queue.models import JobKind, JobQueueEntry

if TYPE_CHECKING:
    from worker.sync.clients import Clients
    from worker.sync.engine import SyncEngine


@dataclass(frozen=True)
class Services:
    """What every run of the process shares: the database engine, the OData clients (one
    HTTP session and request budget per connection, shared with the probe and the
    webhook) and the sync engine that uses both."""

    engine: Engine
    clients: Clients
    sync: SyncEngine


@dataclass(frozen=True)
class RunContext:
    """Everything a handler may use for one run."""

    entry: JobQueueEntry
    log_id: int
    scheduled_for: datetime
    worker_id: str
    services: Services
    cancelled: threading.Event

    @property
    def engine(self) -> Engine:
        return self.services.engine

    def raise_if_cancelled(self) -> None:
        """Handlers call this between units of work; it raises once the job timeout passed
        or the worker is shutting down."""
        if self.cancelled.is_set():
            raise JobCancelled(f"{self.entry.label}: cancelled (job timeout or shutdown)")


@dataclass(frozen=True)
class RunResult:
    """What a handler reports. ``changed`` is False when a sync changed nothing (which puts
    an entry with an inactivity timeout on hold), None when the kind has no such notion."""

    message: str = ""
    changed: bool | None = None


class JobHandler(Protocol):
    def __call__(self, ctx: RunContext) -> RunResult: ...


Handlers = MutableMapping[JobKind, JobHandler]


def load_handlers(plugins: Iterable[str] = ()) -> dict[JobKind, JobHandler]:
    from worker.jobs import audit, cleanup, sync

    handlers: dict[JobKind, JobHandler] = {
        JobKind.SYNC_MAPPING: sync.sync_mapping,
        JobKind.SYNC_ALL_MODIFIED: sync.sync_all_modified,
        JobKind.CLEANUP: cleanup.cleanup,
        JobKind.AUDIT: audit.audit,
    }
    for name in plugins:
        name = name.strip()
        if not name:
            continue
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            raise ConfigurationError(f"CRMSYNC_PLUGINS: cannot import {name!r}: {exc}") from exc
        register = getattr(module, "register", None)
        if register is None:
            raise ConfigurationError(f"CRMSYNC_PLUGINS: {name!r} has no register(handlers)")
        register(handlers)
    return handlers
