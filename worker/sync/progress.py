"""How far a synchronization pass is: records done of a total (when one is known), the rate
(over the last half minute while it runs) and an estimate of the time left, and the
observers that show it (a log line about every 30 s, the worker's sd_notify ``STATUS=``
through :data:`BOARD`; the metrics and the ``crmsync sync`` terminal view have their own
modules).

A pass is fed at its chunk boundaries, after the chunk's transaction committed (see
``PassContext.chunk_transaction``): what it shows was committed, job log counters included.
"Done" counts the records a pass has looked at (the pseudo-counter ``read`` a chunk adds;
not a job log column), or, where more, the records that got an outcome — the job log's
inserted, modified, deleted, unchanged, skipped and failed (coupled and uncoupled come on
top of another outcome; a CRM deletion from change tracking is an outcome without a read).
The job log and the metrics keep counting outcomes only. The total is what the pass found
to do: the local change set (captured changes, or the rows of a first or full pass), or
the count the CRM gave for its read (``$count``, which Dataverse stops at 5,000: such a
total is shown as "5,000+", never as an exact figure).

Pure apart from the clock (injectable): no database, no HTTP."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from worker.sync.model import Direction

log = logging.getLogger(__name__)

DONE = ("inserted", "modified", "deleted", "unchanged", "skipped", "failed")
READ = "read"  # records a chunk looked at, whatever came of them (progress only)
LOG_EVERY = 30.0  # seconds between two progress log lines of one pass
RATE_WINDOW = 30.0  # seconds of recent work the running rate and the ETA go by
UNKNOWN = "?"  # the total shown when none is known
Clock = Callable[[], float]


def done_of(counts: Mapping[str, Any]) -> int:
    """The records with an outcome among ``counts`` (a Counter or a job log row)."""
    return sum(int(counts.get(k) or 0) for k in DONE)


def arrow(direction: Direction) -> str:
    return "to CRM" if direction is Direction.TO_INTEGRATION else "from CRM"


def number(n: float) -> str:
    return f"{n:,.0f}"


def duration(seconds: float) -> str:
    """``0:42``, ``12:05``, ``1:02:33``."""
    whole = max(0, round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


@dataclass
class PassProgress:
    """One pass: fed by the pass (:meth:`expect`, :meth:`add`), read by observers.
    ``on_change`` hears of every change, with what the change added (empty for a total)."""

    mapping: str
    direction: Direction
    clock: Clock = time.monotonic
    on_change: Callable[[PassProgress, Counter[str]], None] | None = None
    counts: Counter[str] = field(default_factory=Counter)
    total: int | None = None
    at_least: bool = False  # the total is a lower bound (the service's count stopped)
    started: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    # (time, done) at each change of done; the first is the last one RATE_WINDOW or more ago
    _marks: deque[tuple[float, int]] = field(default_factory=deque, repr=False)

    def __post_init__(self) -> None:
        self.started = self.clock()
        self._marks.append((self.started, 0))

    # -- fed by the pass ---------------------------------------------------------------
    def expect(self, more: int | None, *, at_least: bool = False) -> None:
        """``more`` records are still to come in this pass (None: unknown); what is done
        already stays done (a pass may learn of a second lot after a first one)."""
        with self._lock:
            if more is None:
                self.total, self.at_least = None, False
            else:
                self.total, self.at_least = self.done + max(0, more), at_least
        self._changed(Counter())

    def add(self, counts: Counter[str]) -> None:
        """A committed chunk's counters."""
        now = self.clock()
        with self._lock:
            self.counts.update(counts)
            self._marks.append((now, self.done))
            while len(self._marks) > 1 and self._marks[1][0] <= now - RATE_WINDOW:
                self._marks.popleft()
        self._changed(counts)

    def _changed(self, counts: Counter[str]) -> None:
        if self.on_change is not None:
            self.on_change(self, counts)

    # -- read by observers -------------------------------------------------------------
    @property
    def done(self) -> int:
        return max(self.counts[READ], done_of(self.counts))

    @property
    def seconds(self) -> float:
        return max(0.0, self.clock() - self.started)

    @property
    def rate(self) -> float | None:
        """Records per second since the pass began, the finished pass's figure (None
        before the first record, or in its first tenth of a second)."""
        seconds, done = self.seconds, self.done
        return done / seconds if done and seconds >= 0.1 else None

    @property
    def current_rate(self) -> float | None:
        """Records per second over about the last RATE_WINDOW seconds (the whole pass while
        it is shorter): what the running line, the log line and the ETA go by, so that a
        pass that slows down (a loaded machine, a service that throttles) shows it within
        half a minute, not once the average since the start has caught up with it. None
        before any record in the window, or within its first tenth of a second."""
        now = self.clock()
        with self._lock:
            since, then = self._marks[0]
            done = self.done
        seconds = now - since
        return (done - then) / seconds if done > then and seconds >= 0.1 else None

    @property
    def known_total(self) -> int | None:
        """The total to show beside done: None when unknown, or when it was a lower bound
        that done has reached."""
        if self.total is None or (self.at_least and self.done >= self.total):
            return None
        return max(self.total, self.done)

    @property
    def eta(self) -> float | None:
        """Seconds left at the current rate, when the total is exact."""
        rate, total = self.current_rate, self.known_total
        if rate is None or total is None or self.at_least:
            return None
        return (total - self.done) / rate

    def total_text(self) -> str | None:
        total = self.known_total
        if total is None:
            return None
        return f"{number(total)}+" if self.at_least else number(total)

    def describe(self, *, eta: bool = True) -> str:
        """``CUSTOMER to CRM: 12,000 / 20,000, 850/s, ETA 0:09``; ``… 12,000 / ?, 850/s``
        while the total is unknown (not known yet, a change-tracking delta, a capped count
        that done has passed): no ETA then."""
        text = f"{self.mapping} {arrow(self.direction)}: {number(self.done)}"
        text += f" / {self.total_text() or UNKNOWN}"
        rate = self.current_rate
        if rate is not None:
            text += f", {number(rate)}/s"
        left = self.eta if eta else None
        if left is not None:
            text += f", ETA {duration(left)}"
        return text

    def summary(self, error: str | None = None) -> str:
        """The line of a finished pass: ``CUSTOMER to CRM: 20,000 records in 0:23, 850/s
        (inserted 20,000)``."""
        text = f"{self.mapping} {arrow(self.direction)}: {number(self.done)} records"
        total = self.total_text()
        if total is not None and self.done < (self.known_total or 0):
            text += f" of {total}"
        text += f" in {duration(self.seconds)}"
        if self.rate is not None:
            text += f", {number(self.rate)}/s"
        shown = ", ".join(f"{k} {number(v)}" for k, v in sorted(self.counts.items())
                          if v and k != READ)
        if shown:
            text += f" ({shown})"
        return text + (f"; failed: {error}" if error else "")


class PassObservers:
    """Several pass observers as one (the sync engine's ``observer``): each event goes to
    every member that has a method for it; one that raises is logged, the others still
    hear of it. Events: ``pass_progress(progress, counts)`` at a pass's start, when it
    learns its total and after each committed chunk; ``pass_finished(mapping, direction,
    counts, error)``; ``mapping_finished(mapping, ok)``."""

    def __init__(self, observers: Iterable[object]) -> None:
        self.observers = list(observers)

    def pass_progress(self, progress: PassProgress, counts: Counter[str]) -> None:
        self._tell("pass_progress", progress, counts)

    def pass_finished(self, mapping: str, direction: Direction, counts: Counter[str],
                      error: str | None) -> None:
        self._tell("pass_finished", mapping, direction, counts, error)

    def mapping_finished(self, mapping: str, ok: bool) -> None:
        self._tell("mapping_finished", mapping, ok)

    def _tell(self, event: str, *args: Any) -> None:
        for observer in self.observers:
            method = getattr(observer, event, None)
            if method is None:
                continue
            try:
                method(*args)
            except Exception:
                log.exception("pass observer failed",
                              extra={"observer": type(observer).__name__, "event": event})


class ProgressLog:
    """An INFO line about every ``every`` seconds of a long pass (none for a short one):
    mapping, direction, done, total, rate."""

    def __init__(self, every: float = LOG_EVERY, clock: Clock = time.monotonic) -> None:
        self.every = every
        self.clock = clock
        self._last: dict[tuple[str, Direction], float] = {}
        self._lock = threading.Lock()

    def pass_progress(self, progress: PassProgress, counts: Counter[str]) -> None:
        key, now = (progress.mapping, progress.direction), self.clock()
        with self._lock:
            last = self._last.setdefault(key, progress.started)
            if now - last < self.every:
                return
            self._last[key] = now
        rate = progress.current_rate
        log.info("sync pass progress", extra={
            "mapping": progress.mapping, "direction": progress.direction.value,
            "done": progress.done, "total": progress.total_text(),
            "rate": None if rate is None else round(rate, 1)})

    def pass_finished(self, mapping: str, direction: Direction, counts: Counter[str],
                      error: str | None) -> None:
        with self._lock:
            self._last.pop((mapping, direction), None)


class ProgressBoard:
    """The passes this process is running, as one line (the worker's sd_notify
    ``STATUS=``). ``on_change`` hears of each change, at most every ``every`` seconds
    (and at once when a pass starts or ends)."""

    def __init__(self, every: float = 2.0, clock: Clock = time.monotonic) -> None:
        self.every = every
        self.clock = clock
        self.on_change: Callable[[], None] | None = None
        self._running: dict[tuple[str, Direction], PassProgress] = {}
        self._told = float("-inf")
        self._lock = threading.Lock()

    def text(self) -> str:
        """``CUSTOMER to CRM: 12,000 / 20,000, 850/s``; passes joined by "; "; empty when
        none runs."""
        with self._lock:
            running = list(self._running.values())
        return "; ".join(p.describe(eta=False) for p in running)

    def pass_progress(self, progress: PassProgress, counts: Counter[str]) -> None:
        now, key = self.clock(), (progress.mapping, progress.direction)
        with self._lock:
            new = self._running.get(key) is not progress
            self._running[key] = progress
            if not new and now - self._told < self.every:
                return
            self._told = now
        self._tell()

    def pass_finished(self, mapping: str, direction: Direction, counts: Counter[str],
                      error: str | None) -> None:
        with self._lock:
            gone = self._running.pop((mapping, direction), None)
        if gone is not None:
            self._tell()

    def _tell(self) -> None:
        if self.on_change is not None:
            try:
                self.on_change()
            except Exception:
                log.exception("progress board listener failed")


# The passes of this process (like the metrics registry, one per process): the sync engine
# of the worker's jobs feeds it, the systemd notifier reads it.
BOARD = ProgressBoard()
