"""APScheduler 3 as the worker's local timer.

PostgreSQL decides what runs; APScheduler only ticks: heartbeats, the reaper and a wake-up
at the next due time. Its job store is in memory (a job store cannot be shared between
processes). Pitfalls handled here: misfire_grace_time=None so a late tick is never dropped,
coalesce so a backlog of ticks is one tick."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

from apscheduler.schedulers.background import BackgroundScheduler

log = logging.getLogger(__name__)

_WAKEUP = "wakeup"


class Timers:
    """A small facade over one BackgroundScheduler."""

    def __init__(self) -> None:
        self._scheduler = BackgroundScheduler(
            timezone=UTC,
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        )

    def every(self, name: str, seconds: float, func: Callable[[], None]) -> None:
        self._scheduler.add_job(
            _guarded(name, func), "interval", seconds=seconds, id=name, replace_existing=True
        )

    def wake_at(self, when: datetime, func: Callable[[], None]) -> None:
        """(Re)arm the single wake-up timer; an earlier or equal one already armed wins."""
        job = self._scheduler.get_job(_WAKEUP)
        if job is not None and job.next_run_time is not None and job.next_run_time <= when:
            return
        self._scheduler.add_job(
            func, "date", run_date=when, id=_WAKEUP, replace_existing=True
        )

    def start(self) -> None:
        self._scheduler.start()

    def shutdown(self) -> None:
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)

    def alive(self) -> bool:
        thread = getattr(self._scheduler, "_thread", None)
        return bool(self._scheduler.running and thread is not None and thread.is_alive())


def _guarded(name: str, func: Callable[[], None]) -> Callable[[], None]:
    def tick() -> None:
        try:
            func()
        except Exception:
            log.exception("timer task failed", extra={"task": name})

    return tick

