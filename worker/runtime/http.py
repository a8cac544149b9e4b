"""The worker's HTTP endpoint: ``/metrics`` (Prometheus, through prometheus_client's own
WSGI app: gzip, OpenMetrics negotiation, ``name[]`` filtering), ``/healthz`` (process alive,
scheduler thread alive, database reachable; 503 otherwise), ``/readyz`` (the loop is
claiming work) and, when a connection enables it, ``POST /webhooks/dataverse/<name>`` (push
from the CRM, see :mod:`worker.runtime.webhook`).

It runs on :class:`~worker.runtime.httpserver.BoundedServer`, so slow, idle or malformed
clients cannot starve it or the worker. ``/healthz`` and ``/readyz`` answers are kept for a
second: however often they are asked, the database pool the worker claims with sees one
``SELECT 1`` a second at most, and a slow check holds one handler thread; a flood of
scrapes renders ``/metrics`` twice a second at most (:class:`KeptScrapes`). Request lines
are logged without their query string (a webhook key may travel there)."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

from prometheus_client import make_wsgi_app
from prometheus_client.exposition import choose_encoder, gzip_accepted

from worker.errors import ConfigurationError
from worker.metrics import REGISTRY
from worker.runtime.httpserver import BoundedServer, Request, Response
from worker.runtime.webhook import PATH_PREFIX, Call, WebhookReceiver

log = logging.getLogger(__name__)

Check = Callable[[], dict[str, bool]]
CHECK_SECONDS = 1.0
KEPT_VARIANTS = 8  # /metrics renderings kept: the formats an Accept header can ask for
# are few, but a version parameter is echoed into the content type


class CachedCheck:
    """A check's answer, kept ``seconds``. One caller at a time evaluates a stale answer;
    the others get the previous answer meanwhile (they wait only for the very first), so
    a slow check (a database pool whose connections are all taken) holds one handler
    thread, never all of them."""

    def __init__(self, check: Check, seconds: float = CHECK_SECONDS) -> None:
        self._check = check
        self._seconds = seconds
        self._cond = threading.Condition()
        self._value: dict[str, bool] | None = None
        self._at = -float("inf")
        self._asking = False

    def __call__(self) -> dict[str, bool]:
        with self._cond:
            while True:
                if time.monotonic() - self._at < self._seconds:
                    return self._value or {}
                if not self._asking:
                    self._asking = True
                    break
                if self._value is not None:
                    return self._value
                self._cond.wait()
        value = {"check": False}
        try:
            value = dict(self._check())
        except Exception as exc:  # a failing check is an unhealthy answer
            log.warning("health check failed", extra={"error": str(exc)})
        finally:
            with self._cond:
                self._value, self._at, self._asking = value, time.monotonic(), False
                self._cond.notify_all()
        return value


class KeptScrapes:
    """``/metrics`` rendered at most ``per_second`` times a second per variant (the format
    the ``Accept`` header negotiates, gzip or not); a scrape beyond that gets the latest
    rendering, less than a second old. So a flood of scrapes costs two renderings a second
    instead of one per request (rendering holds the interpreter lock the worker's own
    threads need, and a scrape would wait behind every other one), while an ordinary
    scrape, or two in a row, always sees what happened before it. Concurrent scrapes wait
    for one rendering at a time."""

    def __init__(self, render: Callable[[str, bool], Response], per_second: int = 2) -> None:
        self._render = render
        self._per_second = per_second
        self._lock = threading.Lock()
        self._kept: dict[tuple[str, bool], tuple[list[float], Response]] = {}

    def __call__(self, accept: str, gzip: bool) -> Response:
        key = (choose_encoder(accept)[1], gzip)
        with self._lock:
            now = time.monotonic()
            kept = self._kept.get(key)
            times = [t for t in kept[0] if now - t < 1.0] if kept else []
            if kept is None or len(times) < self._per_second:
                if kept is None and len(self._kept) >= KEPT_VARIANTS:
                    del self._kept[next(iter(self._kept))]  # the oldest variant
                kept = self._kept[key] = ([*times, now], self._render(accept, gzip))
            return kept[1]


def readable_accept(accept: str) -> str:
    """``accept`` when prometheus_client can negotiate with it, else "" (the text format):
    ``text/plain; version=abc`` raises inside it."""
    try:
        choose_encoder(accept)
    except Exception:
        return ""
    return accept


def split_address(address: str) -> tuple[str, int]:
    """``host:port`` or ``[v6 address]:port`` as (host, port)."""
    host, _, port = address.rpartition(":")
    host = host.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not (port.isascii() and port.isdigit()):
        raise ValueError(f"port {port!r} is not a number")
    return host or "127.0.0.1", int(port)


class StatusServer:
    """The listener of one worker process: :meth:`start` serves on a thread of its own."""

    def __init__(self, address: str, health: Check, ready: Check,
                 webhooks: WebhookReceiver | None = None) -> None:
        try:
            host, port = split_address(address)
            self._httpd = BoundedServer(host, port, _Routes(health, ready, webhooks))
        except (ValueError, OSError, OverflowError) as exc:
            raise ConfigurationError(f"metrics address {address!r}: {exc}") from exc
        host_bound, port_bound = self._httpd.server_address[:2]
        host_text = f"[{host_bound}]" if ":" in str(host_bound) else str(host_bound)
        self.address = f"{host_text}:{port_bound}"
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        name="crmsync-http", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    @property
    def open_connections(self) -> int:
        return self._httpd.open_connections

    def start(self) -> StatusServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._thread.join(10)


class _Routes:
    """What each path answers (called on the server's handler threads)."""

    def __init__(self, health: Check, ready: Check,
                 webhooks: WebhookReceiver | None) -> None:
        self.health = CachedCheck(health)
        self.ready = CachedCheck(ready)
        self.webhooks = webhooks
        self.metrics = make_wsgi_app(REGISTRY)
        self.kept_scrapes = KeptScrapes(self._render)

    def __call__(self, request: Request) -> Response:
        response = self._route(request)
        log.debug("http request", extra={"method": request.method, "path": request.path,
                                         "status": str(response.status)})
        return response

    def _route(self, request: Request) -> Response:
        if request.method == "POST" and request.path.startswith(PATH_PREFIX) \
                and self.webhooks is not None:
            return self._webhook(request)
        if request.path not in ("/metrics", "/healthz", "/readyz"):
            return Response.text(404, "not found")
        if request.method != "GET":
            return Response(405, "text/plain", b"use GET\n", (("Allow", "GET"),))
        if request.path == "/metrics":
            return self._scrape(request)
        checks = (self.health if request.path == "/healthz" else self.ready)()
        body = json.dumps({"ok": all(checks.values()), **checks}).encode()
        return Response(200 if all(checks.values()) else 503, "application/json", body)

    def _scrape(self, request: Request) -> Response:
        accept = readable_accept(request.headers.get("accept", ""))
        gzip = gzip_accepted(request.headers.get("accept-encoding", ""))
        if "name[]" in parse_qs(request.query):  # a few series: rendered for each
            return self._render(accept, gzip, request.query)
        return self.kept_scrapes(accept, gzip)

    def _render(self, accept: str, gzip: bool, query: str = "") -> Response:
        environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/metrics", "QUERY_STRING": query,
                   "HTTP_ACCEPT": accept, "HTTP_ACCEPT_ENCODING": "gzip" if gzip else ""}
        started: list[Any] = []

        def start_response(status: str, headers: list[tuple[str, str]]) -> None:
            started.extend([int(status.split()[0]), headers])

        body = b"".join(self.metrics(environ, start_response))
        status, headers = started
        kind = next((v for k, v in headers if k.lower() == "content-type"), "text/plain")
        extra = tuple((k, v) for k, v in headers if k.lower() != "content-type")
        return Response(status, kind, body, extra)

    def _webhook(self, request: Request) -> Response:
        assert self.webhooks is not None
        body = request.body
        answer = self.webhooks.handle(Call(
            connection=request.path.removeprefix(PATH_PREFIX), query=parse_qs(request.query),
            headers=request.headers, content_length=request.headers.get("content-length"),
            read_body=lambda size: body[:size]))
        return Response(answer.status, "application/json", answer.body)
