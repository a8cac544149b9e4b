"""Observers of the worker's life (metrics, systemd notification). Each cross-cutting
concern is one RunHooks implementation instead of code sprinkled through the loop. They live
beside the claims they observe, below the runtime, so that the metrics module implements
them without depending on the layer that runs them."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from worker.queue.manager import Claim, Outcome, Rescued

log = logging.getLogger(__name__)


class RunHooks:
    """Base class with no-op methods; override what you need. Hooks must not raise
    (the worker logs and ignores a hook that does)."""

    def worker_started(self, worker_id: str) -> None: ...

    def worker_stopping(self, worker_id: str) -> None: ...

    def heartbeat(self, healthy: bool) -> None: ...

    def liveness(self, alive: bool, database: bool) -> None:
        """On every heartbeat tick: the loop goes round (``alive``) and whether the
        database answered at the last contact."""

    def run_started(self, claim: Claim) -> None: ...

    def run_finished(self, claim: Claim, outcome: Outcome, seconds: float) -> None: ...

    def run_rescued(self, rescued: Rescued) -> None: ...


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
