"""The worker's HTTP endpoint on loopback: ``/metrics`` (Prometheus), ``/healthz`` (process
alive, scheduler thread alive, database reachable; 503 otherwise), ``/readyz`` (the loop
is claiming work) and, when a connection enables it, ``POST /webhooks/dataverse/<name>``
(push from the CRM, see :mod:`worker.runtime.webhook`). Request lines are logged without
their query string (a webhook key may travel there)."""

from __future__ import annotations

import json
import logging
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from worker.errors import ConfigurationError
from worker.metrics import REGISTRY
from worker.runtime.webhook import PATH_PREFIX, Call, WebhookReceiver

log = logging.getLogger(__name__)

Check = Callable[[], dict[str, bool]]

# A client that goes away before its answer is written (a scrape timeout, curl ^C) is
# ordinary on a metrics port; it is worth one debug line, not a traceback on stderr.
_DISCONNECTS = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError)


class _QuietServer(ThreadingHTTPServer):
    """socketserver prints the traceback of every failed request to stderr; here a
    disconnect is one quiet log line and anything else one error line with its traceback."""

    request_queue_size = 64  # socketserver's 5 drops the SYNs of a burst of scrapes

    def handle_error(self, request: Any, client_address: Any) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, _DISCONNECTS):
            log.debug("http client disconnected early",
                      extra={"client": str(client_address[0]), "error": type(error).__name__})
        else:
            log.error("http request failed", exc_info=True,
                      extra={"client": str(client_address[0])})


class StatusServer:
    def __init__(self, address: str, health: Check, ready: Check,
                 webhooks: WebhookReceiver | None = None) -> None:
        host, _, port = address.rpartition(":")
        try:
            self._httpd = _QuietServer((host or "127.0.0.1", int(port)),
                                              _handler(health, ready, webhooks))
        except (ValueError, OSError, OverflowError) as exc:
            raise ConfigurationError(f"metrics address {address!r}: {exc}") from exc
        self._httpd.daemon_threads = True
        host_bound, port_bound = self._httpd.server_address[:2]
        host_text = host_bound.decode() if isinstance(host_bound, bytes) else str(host_bound)
        self.address = f"{host_text}:{port_bound}"
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        name="crmsync-http", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def start(self) -> StatusServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def _handler(health: Check, ready: Check,
             webhooks: WebhookReceiver | None) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        timeout = 10  # a caller that stalls mid-request loses its thread after this

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, CONTENT_TYPE_LATEST, generate_latest(REGISTRY))
            elif path in ("/healthz", "/readyz"):
                checks = (health if path == "/healthz" else ready)()
                body = json.dumps({"ok": all(checks.values()), **checks}).encode()
                self._send(200 if all(checks.values()) else 503, "application/json", body)
            else:
                self._send(404, "text/plain", b"not found\n")

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            path, _, query = self.path.partition("?")
            if webhooks is None or not path.startswith(PATH_PREFIX):
                self._send(404, "text/plain", b"not found\n")
                return
            answer = webhooks.handle(Call(
                connection=path.removeprefix(PATH_PREFIX), query=parse_qs(query),
                headers={k.lower(): v for k, v in self.headers.items()},
                content_length=self.headers.get("Content-Length"), read_body=self.rfile.read))
            self._send(answer.status, "application/json", answer.body)

        def _send(self, status: int, content_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            path = self.path.split("?", 1)[0]
            log.debug("http request", extra={"method": self.command, "path": path,
                                             "status": str(code)})

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("http: " + format, *args)

    return Handler
