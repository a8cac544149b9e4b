"""Fault injection: the failures a real Dataverse produces, switchable at run time.

Faults apply to data requests only (never to the admin endpoints or the token endpoint).
Each fault lasts for its next ``count`` affected requests, or for ``duration`` seconds, or
both (whichever ends first), or until cleared when neither is given. Tests switch them through
``EmulatorServer.faults`` in-process or ``POST /_admin/faults`` over HTTP."""

from __future__ import annotations

import itertools
import math
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

WRITE_METHODS = frozenset({"POST", "PATCH", "PUT", "DELETE"})


class FaultKind(StrEnum):
    """What a fault does to the requests it affects."""

    THROTTLE = "throttle"                   # 429 with Retry-After, as Dataverse's limits do
    UNAVAILABLE = "unavailable"             # 503
    SLOW = "slow"                           # answer after delay_ms
    DROP_AFTER_WRITE = "drop_after_write"   # apply the write, then close without answering
    ERROR_RATE = "error_rate"               # a seeded-random fraction of requests get 500


@dataclass
class Fault:
    """One active fault. ``methods`` limits it to some HTTP methods (None: all; for
    ``drop_after_write`` the default is the write methods)."""

    kind: FaultKind
    count: int | None = None
    duration: float | None = None
    retry_after: int | None = None
    delay_ms: int = 0
    rate: float = 0.0
    seed: int = 0
    methods: frozenset[str] | None = None
    id: int = 0
    expires_at: float | None = field(default=None, repr=False)
    rng: random.Random = field(default_factory=random.Random, repr=False)

    def describe(self, now: float) -> dict[str, Any]:
        doc: dict[str, Any] = {"id": self.id, "kind": self.kind.value, "remaining": self.count}
        if self.expires_at is not None:
            doc["seconds_left"] = round(max(self.expires_at - now, 0.0), 3)
        if self.kind is FaultKind.THROTTLE:
            doc["retry_after"] = self.retry_after
        if self.kind is FaultKind.SLOW:
            doc["delay_ms"] = self.delay_ms
        if self.kind is FaultKind.ERROR_RATE:
            doc.update(rate=self.rate, seed=self.seed)
        if self.methods is not None:
            doc["methods"] = sorted(self.methods)
        return doc


@dataclass(frozen=True)
class Verdict:
    """What to do to one request: wait, then fail with ``status`` or answer normally;
    ``drop`` means close the connection once the request has been applied."""

    delay: float = 0.0
    status: int | None = None
    retry_after: int | None = None
    drop: bool = False
    kind: FaultKind | None = None


NO_FAULT = Verdict()
_FIELDS = {"kind", "count", "duration", "retry_after", "delay_ms", "rate", "seed", "methods"}


class FaultInjector:
    """The active faults, consulted once per data request. Thread-safe."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._ids = itertools.count(1)
        self.injected: dict[str, int] = {}

    def add(self, fault: Fault) -> Fault:
        if fault.kind is FaultKind.ERROR_RATE and not 0.0 <= fault.rate <= 1.0:
            raise ValueError("rate must be between 0 and 1")
        if fault.count is not None and fault.count < 1:
            raise ValueError("count must be at least 1")
        if fault.kind is FaultKind.DROP_AFTER_WRITE and fault.methods is None:
            fault.methods = WRITE_METHODS
        with self._lock:
            fault.id = next(self._ids)
            if fault.duration is not None:
                fault.expires_at = self._clock() + fault.duration
            fault.rng = random.Random(fault.seed)
            self._faults.append(fault)
        return fault

    def throttle(self, retry_after: int | None = None, *, count: int | None = None,
                 duration: float | None = None, methods: Iterable[str] | None = None) -> Fault:
        """429 with ``Retry-After: retry_after`` (default: what is left of ``duration``)."""
        return self.add(Fault(FaultKind.THROTTLE, count, duration, retry_after=retry_after,
                              methods=_methods(methods)))

    def unavailable(self, *, count: int | None = None, duration: float | None = None,
                    methods: Iterable[str] | None = None) -> Fault:
        return self.add(Fault(FaultKind.UNAVAILABLE, count, duration, methods=_methods(methods)))

    def slow(self, delay_ms: int, *, count: int | None = None, duration: float | None = None,
             methods: Iterable[str] | None = None) -> Fault:
        return self.add(Fault(FaultKind.SLOW, count, duration, delay_ms=delay_ms,
                              methods=_methods(methods)))

    def drop_after_write(self, *, count: int | None = 1, duration: float | None = None,
                         methods: Iterable[str] | None = None) -> Fault:
        """Apply the next ``count`` writes, then drop their connections unanswered."""
        return self.add(Fault(FaultKind.DROP_AFTER_WRITE, count, duration,
                              methods=_methods(methods)))

    def error_rate(self, rate: float, *, seed: int = 0, count: int | None = None,
                   duration: float | None = None, methods: Iterable[str] | None = None) -> Fault:
        """Fail a fraction ``rate`` of requests with 500, drawn from ``Random(seed)``."""
        return self.add(Fault(FaultKind.ERROR_RATE, count, duration, rate=rate, seed=seed,
                              methods=_methods(methods)))

    def add_from_json(self, doc: Mapping[str, Any]) -> Fault:
        """A fault from the admin endpoint's JSON; ``ValueError`` when malformed."""
        unknown = set(doc) - _FIELDS
        if unknown:
            raise ValueError(f"unknown fault fields {sorted(unknown)}")
        try:
            kind = FaultKind(str(doc.get("kind")))
        except ValueError:
            raise ValueError(f"kind must be one of {[k.value for k in FaultKind]}") from None
        fault = Fault(
            kind, _opt(int, doc.get("count")), _opt(float, doc.get("duration")),
            retry_after=_opt(int, doc.get("retry_after")), delay_ms=int(doc.get("delay_ms", 0)),
            rate=float(doc.get("rate", 0.0)), seed=int(doc.get("seed", 0)),
            methods=_methods(doc.get("methods")))
        return self.add(fault)

    def injected_counts(self) -> dict[str, int]:
        """How many requests each kind of fault has affected since the last clear."""
        with self._lock:
            return dict(self.injected)

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()
            self.injected.clear()

    def active(self) -> list[dict[str, Any]]:
        with self._lock:
            now = self._clock()
            self._prune(now)
            return [f.describe(now) for f in self._faults]

    def decide(self, method: str) -> Verdict:
        """The faults' verdict on one request, consuming their counts."""
        if not self._faults:  # the common case costs no lock
            return NO_FAULT
        with self._lock:
            now = self._clock()
            self._prune(now)
            delay, failure, drop = 0.0, None, False
            for fault in self._faults:
                if fault.methods is not None and method not in fault.methods:
                    continue
                if fault.kind is FaultKind.SLOW:
                    delay += fault.delay_ms / 1000
                elif fault.kind is FaultKind.DROP_AFTER_WRITE:
                    if failure is not None or drop:
                        continue
                    drop = True
                elif failure is None:
                    if fault.kind is FaultKind.ERROR_RATE and fault.rng.random() >= fault.rate:
                        continue
                    failure = fault
                else:
                    continue
                self._consume(fault)
            self._prune(now)
        if failure is not None:
            return self._failure(failure, now, delay)
        if drop:
            self._count(FaultKind.DROP_AFTER_WRITE)
        return Verdict(delay=delay, drop=drop,
                       kind=FaultKind.DROP_AFTER_WRITE if drop else None)

    def _failure(self, fault: Fault, now: float, delay: float) -> Verdict:
        self._count(fault.kind)
        if fault.kind is FaultKind.THROTTLE:
            retry_after = fault.retry_after
            if retry_after is None:
                left = (fault.expires_at - now) if fault.expires_at is not None else 1.0
                retry_after = max(1, math.ceil(left))
            return Verdict(delay, 429, retry_after, kind=fault.kind)
        status = 503 if fault.kind is FaultKind.UNAVAILABLE else 500
        return Verdict(delay, status, kind=fault.kind)

    def _count(self, kind: FaultKind) -> None:
        with self._lock:
            self.injected[kind.value] = self.injected.get(kind.value, 0) + 1

    @staticmethod
    def _consume(fault: Fault) -> None:
        if fault.count is not None:
            fault.count -= 1

    def _prune(self, now: float) -> None:
        self._faults[:] = [f for f in self._faults
                           if (f.count is None or f.count > 0)
                           and (f.expires_at is None or f.expires_at > now)]


def _methods(methods: Iterable[str] | None) -> frozenset[str] | None:
    return None if methods is None else frozenset(m.upper() for m in methods)


def _opt(kind: Callable[[Any], Any], value: Any) -> Any:
    return None if value is None else kind(value)
