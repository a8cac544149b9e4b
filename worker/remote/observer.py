"""The metrics seam of the OData client: an observer (``worker.observers.RequestObserver``)
told about every HTTP request and every throttling pause. crmsync's metrics module
implements it; nothing here knows about Prometheus. Observers must be cheap and must not
raise (the client logs and ignores an observer that does)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from worker.observers import RequestObserver

log = logging.getLogger(__name__)


class NullObserver:
    """Observes nothing."""

    def request_finished(self, method: str, status_class: str, seconds: float) -> None:
        pass

    def throttled(self, seconds: float) -> None:
        pass


@dataclass(frozen=True)
class CallbackObserver:
    """An observer from plain functions, either of which may be left out."""

    on_request: Callable[[str, str, float], None] | None = None
    on_throttle: Callable[[float], None] | None = None

    def request_finished(self, method: str, status_class: str, seconds: float) -> None:
        if self.on_request is not None:
            self.on_request(method, status_class, seconds)

    def throttled(self, seconds: float) -> None:
        if self.on_throttle is not None:
            self.on_throttle(seconds)


class SafeObserver:
    """Wraps an observer so that its failures are logged, never raised into a request."""

    def __init__(self, inner: RequestObserver | None) -> None:
        self._inner: RequestObserver = inner if inner is not None else NullObserver()

    def request_finished(self, method: str, status_class: str, seconds: float) -> None:
        try:
            self._inner.request_finished(method, status_class, seconds)
        except Exception:
            log.exception("request observer failed", extra={"hook": "request_finished"})

    def throttled(self, seconds: float) -> None:
        try:
            self._inner.throttled(seconds)
        except Exception:
            log.exception("request observer failed", extra={"hook": "throttled"})
