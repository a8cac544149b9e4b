"""When to try a request again, and how long to wait: a pure :class:`RetryPolicy` and the
:class:`ThrottleGate` every thread of one connection passes before it sends anything.

The gate exists because throttling is per user, not per request: when Dataverse answers
429 with ``Retry-After: 20`` to one thread, every other thread sending as the same
application user would be refused too, and each refusal counts against the limit. So the
first 429 closes the gate for the whole connection until the time the service asked for.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter, capped, honouring ``Retry-After``.

    ``max_attempts`` counts the first try (1 = never retry). Attempt ``n`` (1-based) that
    failed is followed by a wait of ``min(cap, base * 2**(n-1))``, of which the fraction
    ``jitter`` is random (0 = fixed waits, 1 = "full jitter"). A ``Retry-After`` from the
    service replaces the backoff, unless it exceeds ``max_retry_after`` (then the caller
    gives up rather than sleep for, say, an hour).
    """

    max_attempts: int = 6
    base: float = 0.5
    cap: float = 60.0
    jitter: float = 0.5
    max_retry_after: float = 300.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if self.base < 0 or self.cap < 0 or self.max_retry_after < 0:
            raise ValueError("base, cap and max_retry_after must be >= 0")
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError("jitter must be between 0 and 1")

    def can_retry(self, attempt: int) -> bool:
        """Whether attempt number ``attempt`` (1-based), which just failed, may be followed
        by another."""
        return attempt < self.max_attempts

    def backoff(self, attempt: int, rand: float) -> float:
        """The wait after failed attempt ``attempt`` with random draw ``rand`` in [0, 1)."""
        full = min(self.cap, self.base * (2 ** max(0, attempt - 1)))
        return full * (1.0 - self.jitter) + full * self.jitter * rand

    def delay(
        self,
        attempt: int,
        retry_after: float | None = None,
        *,
        rand: Callable[[], float] = random.random,
    ) -> float | None:
        """Seconds to wait before the attempt after ``attempt``, or None to give up (the
        attempts are spent, or the service asked for a longer pause than we accept)."""
        if not self.can_retry(attempt):
            return None
        if retry_after is not None:
            if retry_after > self.max_retry_after:
                return None
            return max(0.0, retry_after)
        return self.backoff(attempt, rand())


class ThrottleGate:
    """A "not before" instant shared by all threads of one connection. :meth:`close_for`
    moves it later (never earlier); :meth:`wait` blocks until it has passed. Waiting is
    checked again after each sleep because another thread may have moved it meanwhile."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._not_before = 0.0

    def close_for(self, seconds: float) -> float:
        """Close the gate for ``seconds`` from now (if that is later than it already is);
        returns the seconds until it reopens."""
        if not math.isfinite(seconds):  # callers cap it; a gate shut forever helps nobody
            raise ValueError(f"cannot close the gate for {seconds!r} s")
        with self._lock:
            now = self._clock()
            self._not_before = max(self._not_before, now + max(0.0, seconds))
            return self._not_before - now

    def remaining(self) -> float:
        with self._lock:
            return max(0.0, self._not_before - self._clock())

    def wait(self) -> float:
        """Block until the gate is open; returns the seconds spent waiting."""
        waited = 0.0
        while True:
            pause = self.remaining()
            if pause <= 0:
                return waited
            self._sleep(pause)
            waited += pause
