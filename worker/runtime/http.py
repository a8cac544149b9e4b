"""The worker's HTTP endpoint on loopback: ``/metrics`` (Prometheus), ``/healthz`` (process
alive, scheduler thread alive, database reachable; 503 otherwise) and ``/readyz`` (the loop
is claiming work)."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from worker.errors import ConfigurationError
from worker.metrics import REGISTRY

log = logging.getLogger(__name__)

Check = Callable[[], dict[str, bool]]


class StatusServer:
    def __init__(self, address: str, health: Check, ready: Check) -> None:
        host, _, port = address.rpartition(":")
        try:
            self._httpd = ThreadingHTTPServer((host or "127.0.0.1", int(port)),
                                              _handler(health, ready))
        except (ValueError, OSError) as exc:
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


def _handler(health: Check, ready: Check) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
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

        def _send(self, status: int, content_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("http: " + format, *args)

    return Handler
