"""Whether the worker loop still goes round: what the systemd watchdog is fed on. Not the
database — the loop rides out a database outage by itself."""

from __future__ import annotations

import time

# The loop counts as alive while it comes back within its wait plus this. A dispatch takes
# milliseconds, or, with the database away, a connect timeout (5 s) and a backoff (30 s at
# most): only a wedged loop takes longer.
LOOP_STALL_LIMIT = 120.0


class Liveness:
    """The time by which the loop must have gone round again, set by the loop itself."""

    def __init__(self, limit: float = LOOP_STALL_LIMIT) -> None:
        self.limit = limit
        self._due = time.monotonic() + limit

    def dispatching(self) -> None:
        self._due = time.monotonic() + self.limit

    def waiting(self, seconds: float) -> None:
        self._due = time.monotonic() + seconds + self.limit

    def ok(self) -> bool:
        return time.monotonic() < self._due
