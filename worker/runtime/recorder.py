"""Run outcomes recorded in batches: a run thread that ends takes every outcome waiting at
that moment (its own and those of runs that ended meanwhile) and records them in one
transaction of two statements — each run's log row with its entry's next run, as for one.
Threads do not wait for each other: one that finds nothing left (another took its outcome)
returns at once, and the taker reports it. A worker whose runs end together (a batch
claimed together, short jobs) writes one transaction instead of one per run."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from worker.errors import DatabaseUnavailable
from worker.queue.manager import Claim, Outcome, QueueManager

log = logging.getLogger(__name__)


class Pending(Protocol):
    """A run whose outcome waits to be recorded."""

    @property
    def claim(self) -> Claim: ...

    @property
    def deadline(self) -> float: ...


@dataclass(frozen=True)
class _Item:
    run: Pending
    outcome: Outcome


class OutcomeRecorder:
    """Records outcomes, retrying while the database is away (given up at a run's deadline
    once the worker stops: its lease expires and the reaper gives it back)."""

    def __init__(
        self, manager: QueueManager, worker_id: str, stopping: threading.Event,
        recorded: Callable[[Pending, Outcome], None],
        database_lost: Callable[[Exception], None],
    ) -> None:
        self.manager = manager
        self.worker_id = worker_id
        self.stopping = stopping
        self.recorded = recorded
        self.database_lost = database_lost
        self._queue: queue.SimpleQueue[_Item] = queue.SimpleQueue()

    def record(self, run: Pending, outcome: Outcome) -> None:
        """Record ``outcome`` (by this thread, or in the batch of one that took it)."""
        self._queue.put(_Item(run, outcome))
        batch: list[_Item] = []
        while True:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        if batch:
            self._write(batch)
        for item in batch:
            self.recorded(item.run, item.outcome)

    def _write(self, batch: list[_Item]) -> None:
        delay = 0.5
        while True:
            try:
                self.manager.finish_many(
                    [(item.run.claim, item.outcome) for item in batch], self.worker_id)
                return
            except DatabaseUnavailable as exc:
                self.database_lost(exc)
                if self.stopping.is_set() and time.monotonic() > max(
                        item.run.deadline for item in batch):
                    return
                time.sleep(delay)
                delay = min(delay * 2, 30.0)
            except Exception as exc:  # the lease expires and the reaper gives the runs back
                log.error("could not record run outcomes", extra={
                    "runs": [item.run.claim.log_id for item in batch], "error": str(exc)})
                return
