"""A hostile (or broken) OData service of the tests' own on loopback: a real HTTP server
whose every answer a test scripts, and which records what it was sent (the
``Authorization`` header above all). The client under test talks to it over real sockets."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from worker.remote.client import ODataClient
from worker.remote.config import load_connection

TOKEN = "hostile-test-token-0123456789"


@dataclass(frozen=True)
class Seen:
    """One request the server received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


Respond = Callable[["Handler", Seen], None]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def _any(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        seen = Seen(self.command, self.path, {k.lower(): v for k, v in self.headers.items()},
                    self.rfile.read(length) if length else b"")
        with self.server.lock:
            self.server.seen.append(seen)
        with suppress(BrokenPipeError, ConnectionResetError):
            self.server.respond(self, seen)

    do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _any  # noqa: N815

    def json(self, status: int, doc: Any, headers: dict[str, str] | None = None) -> None:
        self.raw(status, json.dumps(doc).encode(), {"Content-Type": "application/json",
                                                    **(headers or {})})

    def raw(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, respond: Respond) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.respond = respond
        self.seen: list[Seen] = []
        self.lock = threading.Lock()


class HostileServer:
    """``respond(handler, seen)`` answers every request; ``seen`` lists what came in."""

    def __init__(self, respond: Respond) -> None:
        self._server = _Server(respond)
        self.port = int(self._server.server_address[1])
        self.origin = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def seen(self) -> list[Seen]:
        with self._server.lock:
            return list(self._server.seen)

    def authorizations(self) -> list[str]:
        return [s.headers["authorization"] for s in self.seen if "authorization" in s.headers]

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@contextmanager
def hostile(respond: Respond) -> Iterator[HostileServer]:
    server = HostileServer(respond)
    try:
        yield server
    finally:
        server.stop()


def client_of(server: HostileServer, **settings: Any) -> ODataClient:
    """A client of ``server`` with a static bearer token, quick retries and the
    connection settings given (``CRMSYNC_CRM_<NAME>`` values)."""
    env = {"CRMSYNC_CRM_URL": f"{server.origin}/api", "CRMSYNC_CRM_TOKEN": TOKEN,
           "CRMSYNC_CRM_RETRY_BASE": "0.01", "CRMSYNC_CRM_MAX_RETRIES": "1",
           "CRMSYNC_CRM_CONNECT_TIMEOUT": "2", "CRMSYNC_CRM_READ_TIMEOUT": "10"}
    env.update({f"CRMSYNC_CRM_{k.upper()}": str(v) for k, v in settings.items()})
    return ODataClient(load_connection("crm", env=env))


def never(handler: Handler, seen: Seen) -> None:
    handler.json(200, {"value": []})
