"""Observers of the worker's life (metrics, systemd notification). Each cross-cutting
concern is one RunHooks implementation instead of code sprinkled through the loop. They live
beside the claims they observe, below the runtime, so that the metrics module implements
them without depending on the layer that runs them."""

from __future__ import annotations

from worker.queue.manager import Claim, Outcome, Rescued


class RunHooks:
    """Base class with no-op methods; override what you need. Hooks must not raise
    (the worker logs and ignores a hook that does)."""

    def worker_started(self, worker_id: str) -> None: ...

    def worker_stopping(self, worker_id: str) -> None: ...

    def heartbeat(self, healthy: bool) -> None: ...

    def run_started(self, claim: Claim) -> None: ...

    def run_finished(self, claim: Claim, outcome: Outcome, seconds: float) -> None: ...

    def run_rescued(self, rescued: Rescued) -> None: ...
