"""The HTTP side: a threading HTTP/1.1 server with keep-alive, and ``EmulatorServer``, the
handle tests and the ``crmsync emulator`` command hold.

Standard library only. Each connection gets a thread (clients keep connections alive, so a
thread serves many requests); the response is written with one ``write`` and Nagle is off,
so small request/response pairs do not wait for delayed ACKs."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import ssl
import threading
import time
from collections.abc import Iterable
from email.utils import formatdate
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from worker.emulator import errors
from worker.emulator.app import Emulator, Outcome, Stats
from worker.emulator.auth import TOKEN_PATH, TokenIssuer
from worker.emulator.faults import FaultInjector
from worker.emulator.limits import ServiceLimits
from worker.emulator.paths import SERVICE_PATH
from worker.emulator.profiles import Profile
from worker.emulator.protocol import Request, Response, error_response
from worker.emulator.store import DEFAULT_CHANGE_RETENTION, Store
from worker.emulator.webhooks import Webhook, WebhookNotifier

log = logging.getLogger(__name__)

_MAX_BODY = 64 * 1024 * 1024
_MAX_LINE = 65536
_MAX_HEADERS = 100
_date_cache: tuple[int, str] = (0, "")


def _http_date() -> str:
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:  # a race here only formats the same second twice
        _date_cache = (now, formatdate(now, usegmt=True))
    return _date_cache[1]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "crmsync-emulator"
    disable_nagle_algorithm = True
    timeout = 300  # an idle keep-alive connection is closed after this many seconds
    server: _HTTPServer
    fields: dict[str, str]
    raw_requestline: bytes  # set by handle_one_request before parse_request

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, add=False)

    def parse_request(self) -> bool:
        """The request line and headers, read without ``email.parser``.

        The standard parser costs more than the emulator's whole handling of a request;
        this one reads ``name: value`` lines into a dict with lower-case names (repeated
        headers joined with ", " as HTTP allows) and otherwise behaves the same: 400 for
        bad syntax, 431 for oversized headers, keep-alive per HTTP version and Connection,
        ``100 Continue`` when asked."""
        words = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n").split()
        self.requestline = " ".join(words)
        self.command, self.path, self.request_version = "", "", "HTTP/1.1"  # for send_error
        if len(words) != 3 or words[2] not in ("HTTP/1.1", "HTTP/1.0"):
            self.close_connection = True
            self.send_error(400, "Bad request line")
            return False
        self.command, self.path, self.request_version = words
        fields: dict[str, str] = {}
        for _ in range(_MAX_HEADERS + 1):
            line = self.rfile.readline(_MAX_LINE + 1)
            if line in (b"\r\n", b"\n", b""):
                break
            name, colon, value = str(line, "iso-8859-1").partition(":")
            if len(line) > _MAX_LINE or not colon:
                self.close_connection = True
                self.send_error(431 if len(line) > _MAX_LINE else 400, "Bad header line")
                return False
            name = name.strip().lower()
            value = value.strip()
            fields[name] = f"{fields[name]}, {value}" if name in fields else value
        else:
            self.close_connection = True
            self.send_error(431, "Too many headers")
            return False
        self.fields = fields
        connection = fields.get("connection", "").lower()
        self.close_connection = (connection == "close" or (
            self.request_version == "HTTP/1.0" and connection != "keep-alive"))
        if (fields.get("expect", "").lower() == "100-continue"
                and self.request_version == "HTTP/1.1"):
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        return True

    def version_string(self) -> str:
        return self.server_version

    def send_error(self, code: int, message: str | None = None,
                   explain: str | None = None) -> None:
        """An HTTP-level refusal (bad request line or headers, a URL over 64 KiB, an
        unknown method) in the OData error shape, closing the connection: what follows
        on it cannot be trusted to start a request."""
        self.close_connection = True
        reason = message or HTTPStatus(code).phrase
        error = errors.ODataError(code, errors.QUERY_SYNTAX if code < 500 else errors.UNEXPECTED,
                                  reason)
        self._send(error_response(error))

    def do_GET(self) -> None:
        self._serve()

    do_POST = do_PATCH = do_PUT = do_DELETE = do_GET

    def _serve(self) -> None:
        try:
            body = self._read_body()
        except ValueError as exc:
            self.send_error(400, f"The request body cannot be read: {exc}")
            return
        target = self.path
        if not target.startswith("/"):  # absolute-form request target
            parts = urlsplit(target)
            target = parts.path + ("?" + parts.query if parts.query else "")
        path, _, query = target.partition("?")
        host = self.fields.get("host") or f"{self.server.server_name}:{self.server.server_port}"
        request = Request(self.command, unquote(path),
                          dict(parse_qsl(query, keep_blank_values=True)), self.fields, body,
                          f"{self.server.scheme}://{host}")
        try:
            outcome = self.server.emulator.handle(request)
        except Exception:  # a bug here must answer 500, not kill the connection's thread
            log.exception("emulator failed on a request", extra={"path": request.path})
            outcome = Outcome(Response(500, [("Content-Type", "text/plain")],
                                       b"crmsync emulator: internal error"))
        if outcome.drop:
            self._drop()
            return
        self._send(outcome.response)

    def _read_body(self) -> bytes:
        if self.fields.get("transfer-encoding", "").lower() == "chunked":
            return self._read_chunked()
        length = int(self.fields.get("content-length") or 0)
        if not 0 <= length <= _MAX_BODY:
            raise ValueError("bad Content-Length")
        return self.rfile.read(length) if length else b""

    def _read_chunked(self) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            line = self.rfile.readline(1024)
            length = int(line.split(b";", 1)[0].strip() or b"0", 16)
            if length < 0:
                raise ValueError("bad chunk size")
            if length == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(chunks)
            size += length
            if size > _MAX_BODY:
                raise ValueError("body too large")
            chunks.append(self.rfile.read(length))
            self.rfile.readline(1024)

    def _send(self, response: Response) -> None:
        lines = [f"HTTP/1.1 {response.status} {response.reason}",
                 f"Server: {self.server_version}", f"Date: {_http_date()}"]
        lines += [f"{name}: {value}" for name, value in response.headers]
        if response.status != 304:
            lines.append(f"Content-Length: {len(response.body)}")
        if self.close_connection:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")
        self.wfile.write(head + response.body)

    def _drop(self) -> None:
        """Close without answering: to the client the response is lost in transit."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def log_message(self, format: str, *args: Any) -> None:
        # Per-request logging would cost more than the request; errors go to debug.
        log.debug("http server: " + format, *args)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    scheme = "http"

    def __init__(self, address: tuple[str, int], emulator: Emulator) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.emulator = emulator
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def track(self, connection: socket.socket, *, add: bool) -> None:
        with self._connections_lock:
            if add:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def close_connections(self) -> None:
        """End kept-alive connections, whose threads would otherwise wait for requests."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class EmulatorServer:
    """A Dataverse-compatible Web API test double listening on ``host:port``.

    ``start()`` serves from a background thread (tests); ``serve_forever()`` blocks until
    ``stop()`` (the command). ``store``, ``faults`` and ``stats`` give tests in-process
    control; ``base_url`` is what a client uses as its service root. ``profile``
    (``"dataverse"`` or ``"odata"``), ``page_size``, ``change_retention``,
    ``change_tracking``, ``webhooks``, ``auth``, ``limits`` and ``bulk_unsupported`` are
    ``Emulator``'s. ``tls``: serve https with this context (msal signs in only against an
    https authority)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *,
                 client_id: str | None = None, client_secret: str | None = None,
                 token_lifetime: float = 3600, sample_users: int = 0,
                 data_file: str | os.PathLike[str] | None = None,
                 change_retention: float | None = DEFAULT_CHANGE_RETENTION,
                 change_tracking: bool | Iterable[str] | None = None,
                 profile: str | Profile = "dataverse", page_size: int | None = None,
                 webhooks: Iterable[Webhook] = (), auth: TokenIssuer | None = None,
                 tls: ssl.SSLContext | None = None, limits: ServiceLimits | None = None,
                 bulk_unsupported: Iterable[str] = ()) -> None:
        self.emulator = Emulator(client_id=client_id, client_secret=client_secret,
                                 token_lifetime=token_lifetime, sample_users=sample_users,
                                 data_file=data_file, change_retention=change_retention,
                                 change_tracking=change_tracking, profile=profile,
                                 page_size=page_size, webhooks=webhooks, auth=auth,
                                 limits=limits, bulk_unsupported=bulk_unsupported)
        self._httpd = _HTTPServer((host, port), self.emulator)
        if tls is not None:
            self._httpd.socket = tls.wrap_socket(self._httpd.socket, server_side=True)
            self._httpd.scheme = "https"
        self.host = host
        self.port: int = self._httpd.server_address[1]
        self._thread: threading.Thread | None = None
        self._stop_requested = threading.Event()
        self._stopped = threading.Event()
        self._stop_lock = threading.Lock()

    @property
    def root_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self._httpd.scheme}://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        return self.root_url + SERVICE_PATH

    @property
    def token_url(self) -> str:
        return self.root_url + TOKEN_PATH

    @property
    def admin_url(self) -> str:
        return self.root_url + "/_admin"

    @property
    def profile(self) -> Profile:
        return self.emulator.profile

    @property
    def webhooks(self) -> WebhookNotifier:
        return self.emulator.webhooks

    @property
    def store(self) -> Store:
        return self.emulator.store

    @property
    def faults(self) -> FaultInjector:
        return self.emulator.faults

    @property
    def stats(self) -> Stats:
        return self.emulator.stats

    def reset(self) -> None:
        """Empty store, no faults, zeroed counters (sample users seeded again)."""
        self.emulator.reset()

    def start(self) -> EmulatorServer:
        if self._thread is None:
            self._thread = threading.Thread(target=self._httpd.serve_forever,
                                            kwargs={"poll_interval": 0.01},
                                            name=f"crmsync-emulator:{self.port}", daemon=True)
            self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve until ``request_stop()`` or ``stop()``; then stop (saving the data file)."""
        self.start()
        try:
            # A timed wait, so that signal handlers run promptly in this (main) thread.
            while not self._stop_requested.wait(0.5):
                pass
        finally:
            self.stop()

    def request_stop(self) -> None:
        """Make ``serve_forever`` return; safe to call from a signal handler."""
        self._stop_requested.set()

    def stop(self) -> None:
        """Stop serving, end open connections, and write the data file if there is one."""
        with self._stop_lock:
            if self._stopped.is_set():
                return
            if self._thread is not None:
                self._httpd.shutdown()
                self._thread.join()
            self._httpd.close_connections()
            self._httpd.server_close()
            self.emulator.webhooks.close()
            self.emulator.save()
            self._stopped.set()
            self._stop_requested.set()

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def start_emulator(host: str = "127.0.0.1", port: int = 0, *, client_id: str | None = None,
                   client_secret: str | None = None, token_lifetime: float = 3600,
                   sample_users: int = 0,
                   data_file: str | os.PathLike[str] | None = None,
                   change_retention: float | None = DEFAULT_CHANGE_RETENTION,
                   change_tracking: bool | Iterable[str] | None = None,
                   profile: str | Profile = "dataverse", page_size: int | None = None,
                   webhooks: Iterable[Webhook] = (), auth: TokenIssuer | None = None,
                   tls: ssl.SSLContext | None = None, limits: ServiceLimits | None = None,
                   bulk_unsupported: Iterable[str] = ()) -> EmulatorServer:
    """An emulator serving from a background thread; ``port=0`` picks a free port."""
    return EmulatorServer(host, port, client_id=client_id, client_secret=client_secret,
                          token_lifetime=token_lifetime, sample_users=sample_users,
                          data_file=data_file, change_retention=change_retention,
                          change_tracking=change_tracking, profile=profile,
                          page_size=page_size, webhooks=webhooks, auth=auth, tls=tls,
                          limits=limits, bulk_unsupported=bulk_unsupported).start()
