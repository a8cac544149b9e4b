"""Dataverse's service protection limits, imitated: a number of requests and a combined
execution time per sliding window, and a number of requests at once, for the one user the
emulator serves. Off unless configured (``ServiceLimits``; ``POST /_admin/limits``).

With limits on, every data response carries the headers Dataverse sends:
``x-ms-ratelimit-burst-remaining-xrm-requests`` (requests left in the window),
``x-ms-ratelimit-time-remaining-xrm-requests`` (execution seconds left, written as
Dataverse writes it: ``1,199.46``) and ``x-ms-dop-hint`` (the degree of parallelism the
service recommends). A request past a limit is answered 429 with ``Retry-After``: for the
request and time limits, the seconds until enough of the window has slid past; for the
concurrency limit, one second.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from worker.emulator import errors

BURST_REMAINING = "x-ms-ratelimit-burst-remaining-xrm-requests"
TIME_REMAINING = "x-ms-ratelimit-time-remaining-xrm-requests"
DOP_HINT = "x-ms-dop-hint"
TIME_CODE = "0x80072321"  # Dataverse's codes for the execution time and concurrency limits
CONCURRENCY_CODE = "0x80072326"


@dataclass(frozen=True)
class ServiceLimits:
    """The limits per ``window`` seconds: ``requests``, ``execution_seconds`` of combined
    server time, ``concurrent`` requests at once; ``dop_hint`` is what ``x-ms-dop-hint``
    says (None: not sent). Dataverse's defaults."""

    requests: int = 6000
    execution_seconds: float = 1200.0
    concurrent: int = 52
    window: float = 300.0
    dop_hint: int | None = 4

    def __post_init__(self) -> None:
        if self.requests < 1 or self.concurrent < 1 or self.window <= 0 \
                or self.execution_seconds <= 0:
            raise ValueError("service limits must be positive")
        if self.dop_hint is not None and self.dop_hint < 1:
            raise ValueError("dop_hint must be >= 1")

    @classmethod
    def from_json(cls, doc: Any) -> ServiceLimits:
        """From ``{"requests": 200, "window": 10, …}`` (missing fields: the defaults)."""
        if not isinstance(doc, dict) or set(doc) - set(asdict(cls())):
            raise ValueError(f"expected an object with some of {sorted(asdict(cls()))}")
        return cls(**doc)


class ServiceProtection:
    """The sliding window of one user's requests, shared by the request threads."""

    def __init__(self, limits: ServiceLimits,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self._clock = clock
        self._lock = threading.Lock()
        self._window: deque[list[float]] = deque()  # [started, execution seconds]
        self._spent = 0.0
        self._running = 0
        self.refused = 0

    def admit(self) -> list[float] | errors.ODataError:
        """Count a new request (its window entry, for ``finish``), or the 429 refusing it
        (not counted against the window)."""
        with self._lock:
            now = self._clock()
            self._slide(now)
            refusal = self._refusal(now)
            if refusal is not None:
                self.refused += 1
                wait, code, message = refusal
                return errors.ODataError(429, code, message, {
                    "Retry-After": str(max(1, math.ceil(wait))), **self._headers()})
            entry = [now, 0.0]
            self._window.append(entry)
            self._running += 1
            return entry

    def finish(self, entry: list[float], seconds: float) -> list[tuple[str, str]]:
        """Record the execution time of an admitted request; the headers of its reply."""
        with self._lock:
            self._running -= 1
            if entry[0] > self._clock() - self.limits.window:  # not slid out meanwhile
                entry[1] = seconds
                self._spent += seconds
            return list(self._headers().items())

    def _slide(self, now: float) -> None:
        horizon = now - self.limits.window
        while self._window and self._window[0][0] <= horizon:
            _, seconds = self._window.popleft()
            self._spent -= seconds

    def _refusal(self, now: float) -> tuple[float, str, str] | None:
        """(seconds until the request would be allowed, Dataverse's error code and
        message), or None when it is allowed."""
        limits = self.limits
        if self._running >= limits.concurrent:
            return 1.0, CONCURRENCY_CODE, (f"Number of concurrent requests exceeded the limit "
                                           f"of {limits.concurrent}.")
        if len(self._window) >= limits.requests:
            return (self._window[0][0] + limits.window - now, errors.THROTTLED,
                    f"Number of requests exceeded the limit of {limits.requests} over time "
                    f"window of {limits.window:g} seconds.")
        if self._spent >= limits.execution_seconds:
            spent, wait = self._spent, 0.0
            for started, seconds in self._window:  # until enough time has slid out
                spent -= seconds
                wait = started + limits.window - now
                if spent < limits.execution_seconds:
                    break
            return wait, TIME_CODE, (
                f"Combined execution time of incoming requests exceeded limit of "
                f"{limits.execution_seconds * 1000:,.0f} milliseconds over time window of "
                f"{limits.window:g} seconds.")
        return None

    def _headers(self) -> dict[str, str]:
        headers = {
            BURST_REMAINING: str(max(0, self.limits.requests - len(self._window))),
            TIME_REMAINING: f"{max(0.0, self.limits.execution_seconds - self._spent):,.2f}"}
        if self.limits.dop_hint is not None:
            headers[DOP_HINT] = str(self.limits.dop_hint)
        return headers

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            self._slide(self._clock())
            return {**asdict(self.limits), "refused": self.refused,
                    "in_window": len(self._window), "running": self._running}
