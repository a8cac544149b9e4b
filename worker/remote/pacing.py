"""How many requests of one connection may be in flight, and when the next may start,
following what the service says about its limits rather than waiting for its 429s.

Dataverse sends on every response ``x-ms-dop-hint`` (the degree of parallelism it wants),
``x-ms-ratelimit-burst-remaining-xrm-requests`` (requests left in its sliding window of
five minutes, ``rate_limit_window``) and ``x-ms-ratelimit-time-remaining-xrm-requests``
(execution seconds left, written ``1,199.46``). From them:

- **concurrency** is the hint, bounded by the configured ``concurrency`` (the hint never
  raises it past what the administrator allowed); when less than a fifth of the execution
  time is left, it drops to what the time allows for ever (1,200 s / 300 s = 4);
- **requests per window**: the limit is learnt as the most the window was seen to hold
  (remaining + this connection's own requests in the window when the answered request
  started). The connection remembers when it started each request, so it knows when its
  oldest one slides out of the window; once only a reserve of the window is left (one
  request more than may be in flight), the next request waits for that moment instead of
  running into a 429 and a ``Retry-After`` pause. It thereby keeps sending at the rate the
  window allows.

Without the headers nothing changes: the configured concurrency is the only limit.
``follow_service_hints = false`` keeps it so whatever the service says. Other clients
signing in as the same user spend the same window unseen; their share shows in the
remaining count and a 429 still closes the throttle gate as before.
"""

from __future__ import annotations

import bisect
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

DOP_HINT = "x-ms-dop-hint"
BURST_REMAINING = "x-ms-ratelimit-burst-remaining-xrm-requests"
TIME_REMAINING = "x-ms-ratelimit-time-remaining-xrm-requests"
LOW_WATER = 0.2  # the share of the execution time below which concurrency drops
RESERVE = 1  # requests of the window kept unspent, besides one per request in flight
SKEW = 0.1  # seconds: a request reaches the service (and so leaves its window) after it
# left ours, by the network's latency


@dataclass(frozen=True)
class Hints:
    """What the service said on its last response (None: not said) and the most it has
    said of the execution time left."""

    dop: int | None = None
    time_left: float | None = None
    time_max: float = 0.0


def concurrency(maximum: int, hints: Hints, window: float) -> int:
    """The concurrency limit for these hints."""
    limit = maximum
    if hints.dop is not None:
        limit = min(limit, max(1, hints.dop))
    if hints.time_left is not None and hints.time_left < hints.time_max * LOW_WATER:
        limit = min(limit, max(1, int(hints.time_max // window)))
    return limit


def number(text: str | None) -> float | None:
    """``5999``, ``1,200.00``: a number with grouping commas; None when absent or not a
    finite number >= 0 (``inf`` would overflow every later limit computed from it)."""
    if text is None:
        return None
    try:
        value = float(text.replace(",", "").strip())
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


class Pacer:
    """The concurrency gate of one connection: ``with pacer as started:`` around each
    exchange, ``observe(headers, started)`` with its reply. Thread-safe."""

    def __init__(self, maximum: int, *, follow: bool = True, window: float = 300.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.maximum = maximum
        self.follow = follow
        self.window = window
        self._clock = clock
        self._cond = threading.Condition()
        self._running = 0
        self._starts: deque[float] = deque()  # this connection's requests in the window
        self._counting: bool | None = None  # None until a reply says whether it has hints
        # One request at a time until the first reply tells what the service wants: a
        # first wave of ``maximum`` requests could already exceed its limits.
        self.limit = 1 if follow else maximum
        self.window_limit = 0  # requests the window holds, as learnt (0: unknown)
        self.hints = Hints()

    def __enter__(self) -> float:
        with self._cond:
            while (wait := self._wait()) is not None:
                self._cond.wait(wait if wait > 0 else None)
            now = self._clock()
            self._running += 1
            if self.follow and self._counting is not False:
                self._prune(now)
                self._starts.append(now)
            return now

    def __exit__(self, *exc: object) -> None:
        with self._cond:
            self._running -= 1
            self._cond.notify_all()

    def _wait(self) -> float | None:
        """None when a request may start now; else how long to wait (0: until notified)."""
        if self._running >= self.limit:
            return 0.0
        if not self.window_limit:
            return None
        horizon = self._prune(self._clock())
        # The reserve covers requests in flight: ours started before the one whose reply
        # taught the limit may have reached the service after it.
        # None of ours in the window (a window learnt smaller than the reserve, or the
        # headers seen only after requests not counted): nothing to wait for.
        if not self._starts or len(self._starts) < self.window_limit - RESERVE - self.limit:
            return None
        return max(0.001, self._starts[0] - horizon)

    def _prune(self, now: float) -> float:
        """Forget requests that have left the window; returns the window's start."""
        horizon = now - self.window - SKEW
        while self._starts and self._starts[0] <= horizon:
            self._starts.popleft()
        return horizon

    def observe(self, headers: Mapping[str, str], started: float | None = None, *,
                counted: bool = True) -> None:
        """Take in a reply's headers (``started``: when its request started; ``counted``:
        false for a 429, which the service did not count in its window)."""
        if not self.follow:
            return
        dop, burst = number(headers.get(DOP_HINT)), number(headers.get(BURST_REMAINING))
        time_left = number(headers.get(TIME_REMAINING))
        with self._cond:
            if not counted and started is not None and started in self._starts:
                self._starts.remove(started)
            if burst is None and self._counting is None:
                self._counting = False  # a service without the headers: nothing to count
                self._starts.clear()
            if dop is None and burst is None and time_left is None:
                self.limit = concurrency(self.maximum, self.hints, self.window)
                self._cond.notify_all()
                return
            if burst is not None and started is not None and counted:
                self._counting = True
                # Ours the service had surely counted: started in the window before this
                # one, less those so old that they may have left the service's window
                # before this one arrived (an estimate erring low: the reserve covers it).
                mine = (bisect.bisect_right(self._starts, started)
                        - bisect.bisect_right(self._starts, started - self.window + SKEW))
                self.window_limit = max(self.window_limit, int(burst) + mine)
            self.hints = Hints(
                dop=int(dop) if dop is not None else self.hints.dop,
                time_left=time_left if time_left is not None else self.hints.time_left,
                time_max=max(self.hints.time_max, time_left or 0.0))
            self.limit = concurrency(self.maximum, self.hints, self.window)
            self._cond.notify_all()
