"""The HTTP server behind the worker's listener, built so that no client can tie it up.

One thread owns every socket: it accepts, reads each request (non-blocking, through a
selector) and writes each answer. A request is handed to the small pool of handler threads
only once it has arrived whole, so a slow or idle client costs a buffer, never a thread.
Every connection has a whole-request deadline (from accept to the request's last byte) and
a deadline for its answer to be taken; at most ``max_connections`` are open at once (the
listener's descriptors stay bounded whatever arrives), and when one more comes the oldest
connection still sending its request is closed to make room, so a fresh scrape is always
served. A request that is not HTTP (a TLS ClientHello on the plain port) is answered 400 and
logged as one DEBUG line, without its content (a query string may carry a key).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import re
import selectors
import socket
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http import HTTPStatus

# The listener's lines, whichever module writes them, under one logger name.
log = logging.getLogger("worker.runtime.http")

MAX_HEAD = 16 * 1024
MAX_BODY = 64 * 1024
_METHOD = re.compile(rb"[A-Z]{1,16}")
_TARGET = re.compile(rb"/[\x21-\x7e]{0,4095}")
_HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")


@dataclass(frozen=True)
class Request:
    """A request as it arrived whole: header names in lower case, the target split."""

    method: str
    path: str
    query: str
    headers: Mapping[str, str]
    body: bytes
    client: str


@dataclass(frozen=True)
class Response:
    status: int
    content_type: str
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def text(cls, status: int, text: str) -> Response:
        return cls(status, "text/plain; charset=utf-8", text.encode() + b"\n")

    def encode(self) -> bytes:
        try:
            phrase = HTTPStatus(self.status).phrase
        except ValueError:
            phrase = "Unknown"
        lines = [f"HTTP/1.1 {self.status} {phrase}", f"Content-Type: {self.content_type}",
                 f"Content-Length: {len(self.body)}", "Connection: close",
                 *(f"{name}: {value}" for name, value in self.headers), "", ""]
        return "\r\n".join(lines).encode("latin-1") + self.body


App = Callable[[Request], Response]


class Refused(Exception):
    """A request answered at once by the server itself (400, 408, 411, 413, 431)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass
class _Conn:
    sock: socket.socket
    client: str
    deadline: float
    received: bytearray = field(default_factory=bytearray)
    out: memoryview = memoryview(b"")
    state: str = "reading"  # reading -> working -> writing


def parse_request(data: bytes, client: str) -> Request | None:
    """The request in ``data`` once it is complete (None: more is needed); Refused when
    it is not a request this server answers."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        if len(data) > MAX_HEAD:
            raise Refused(431, "request head too large")
        if data[:1] and not data[:1].isalpha():
            raise Refused(400, "not an HTTP request")
        return None
    if end > MAX_HEAD:
        raise Refused(431, "request head too large")
    lines = data[:end].split(b"\r\n")
    method, target = _request_line(lines[0])
    headers = _headers(lines[1:])
    if "transfer-encoding" in headers:
        raise Refused(411, "Content-Length required")
    length_text = headers.get("content-length", "0").strip()
    if not (length_text.isascii() and length_text.isdigit()):
        raise Refused(400, "Content-Length is not a number")
    length = int(length_text)
    if length > MAX_BODY:
        raise Refused(413, "body too large")
    body = data[end + 4:]
    if len(body) < length:
        return None
    path, _, query = target.partition("?")
    return Request(method, path, query, headers, bytes(body[:length]), client)


def _request_line(line: bytes) -> tuple[str, str]:
    parts = line.split(b" ")
    if (len(parts) != 3 or not _METHOD.fullmatch(parts[0])
            or not _TARGET.fullmatch(parts[1]) or parts[2] not in (b"HTTP/1.0", b"HTTP/1.1")):
        raise Refused(400, "malformed request line")
    return parts[0].decode(), parts[1].decode()


def _headers(lines: list[bytes]) -> dict[str, str]:
    if len(lines) > 100:
        raise Refused(431, "too many headers")
    headers: dict[str, str] = {}
    for raw in lines:
        try:
            text = raw.decode("latin-1")
        except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes every byte
            raise Refused(400, "malformed header") from None
        name, sep, value = text.partition(":")
        if not sep or not _HEADER_NAME.fullmatch(name) or any(
                ord(c) < 0x20 and c != "\t" for c in value):
            raise Refused(400, "malformed header")
        key = name.lower()
        if key == "content-length" and key in headers:
            raise Refused(400, "Content-Length repeated")
        headers[key] = value.strip()
    return headers


def listen(host: str, port: int) -> socket.socket:
    """A non-blocking listening socket on an IPv4 or IPv6 address."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


class BoundedServer:
    """Serves ``app`` on ``(host, port)`` (IPv4 or IPv6) until :meth:`shutdown`."""

    def __init__(self, host: str, port: int, app: App, *, handlers: int = 4,
                 max_connections: int = 128, request_deadline: float = 10.0,
                 answer_deadline: float = 30.0) -> None:
        self.app = app
        self.max_connections = max_connections
        self.request_deadline = request_deadline
        self.answer_deadline = answer_deadline
        self._listener = listen(host, port)
        self.server_address = self._listener.getsockname()
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ, "accept")
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._conns: dict[int, _Conn] = {}  # by fd, in accept order (oldest first)
        self._answers: list[tuple[_Conn, bytes]] = []
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(handlers, thread_name_prefix="crmsync-http")
        self._stop = threading.Event()
        self._stopped = threading.Event()
        self._accept_warned_at, self._accept_failures = -float("inf"), 0

    @property
    def open_connections(self) -> int:
        return len(self._conns)

    def serve_forever(self) -> None:
        try:
            while not self._stop.is_set():
                for key, mask in self._selector.select(self._next_timeout()):
                    self._dispatch(key, mask)
                self._expire()
        finally:
            self._close_all()
            self._stopped.set()

    def shutdown(self) -> None:
        self._stop.set()
        self._wake()
        self._stopped.wait(10)
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- the socket thread -----------------------------------------------------------
    def _dispatch(self, key: selectors.SelectorKey, mask: int) -> None:
        if key.data == "accept":
            self._accept()
        elif key.data == "wake":
            self._take_answers()
        elif mask & selectors.EVENT_READ:
            self._read(key.data)
        elif mask & selectors.EVENT_WRITE:
            self._write(key.data)

    def _accept(self) -> None:
        for _ in range(64):  # a burst at a time, then the other sockets get their turn
            try:
                sock, address = self._listener.accept()
            except BlockingIOError:
                return
            except OSError as exc:  # out of descriptors: back off instead of spinning
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self._cannot_accept(exc)
                    time.sleep(0.1)
                return
            if len(self._conns) >= self.max_connections and not self._evict():
                sock.close()
                continue
            sock.setblocking(False)
            conn = _Conn(sock, str(address[0]), time.monotonic() + self.request_deadline)
            self._conns[sock.fileno()] = conn
            self._selector.register(sock, selectors.EVENT_READ, conn)

    def _cannot_accept(self, error: OSError) -> None:
        """One WARNING a minute while accepting fails (out of descriptors: it fails ten
        times a second), the failures left out counted in the next."""
        now = time.monotonic()
        if now - self._accept_warned_at < 60.0:
            self._accept_failures += 1
            return
        log.warning("http listener cannot accept", extra={
            "error": error.strerror, "suppressed": self._accept_failures})
        self._accept_warned_at, self._accept_failures = now, 0

    def _evict(self) -> bool:
        """Close the oldest connection still sending its request; False when none is."""
        for conn in self._conns.values():
            if conn.state == "reading":
                log.debug("http connection closed to make room", extra={"client": conn.client})
                self._close(conn)
                return True
        return False

    def _read(self, conn: _Conn) -> None:
        try:
            data = conn.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._gone(conn, exc)
            return
        if not data:
            self._close(conn)
            return
        conn.received += data
        try:
            request = parse_request(bytes(conn.received), conn.client)
        except Refused as refused:
            log.debug("http request refused", extra={
                "client": conn.client, "status": refused.status, "reason": refused.reason})
            self._answer(conn, Response.text(refused.status, refused.reason).encode())
            return
        if request is not None:
            conn.state = "working"
            self._selector.unregister(conn.sock)
            self._pool.submit(self._handle, conn, request)

    def _answer(self, conn: _Conn, data: bytes) -> None:
        if conn.state == "reading":
            self._selector.unregister(conn.sock)
        conn.state, conn.out = "writing", memoryview(data)
        conn.deadline = time.monotonic() + self.answer_deadline
        self._selector.register(conn.sock, selectors.EVENT_WRITE, conn)
        self._write(conn)

    def _write(self, conn: _Conn) -> None:
        try:
            sent = conn.sock.send(conn.out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._gone(conn, exc)
            return
        conn.out = conn.out[sent:]
        if not conn.out:
            self._close(conn, graceful=True)

    def _gone(self, conn: _Conn, error: OSError) -> None:
        """A client that went away (a scrape timeout, curl ^C): one quiet line."""
        log.debug("http client disconnected early",
                  extra={"client": conn.client, "error": type(error).__name__})
        self._close(conn)

    def _take_answers(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except BlockingIOError:
            pass
        with self._lock:
            answers, self._answers = self._answers, []
        for conn, data in answers:
            if self._conns.get(conn.sock.fileno()) is conn:
                self._answer(conn, data)

    def _expire(self) -> None:
        now = time.monotonic()
        for conn in [c for c in self._conns.values() if c.state != "working"
                     and c.deadline <= now]:
            if conn.state == "reading" and conn.received:
                log.debug("http request incomplete at its deadline",
                          extra={"client": conn.client})
            self._close(conn)

    def _next_timeout(self) -> float:
        waiting = [c.deadline for c in self._conns.values() if c.state != "working"]
        return max(0.0, min([*waiting, time.monotonic() + 1.0]) - time.monotonic())

    def _close(self, conn: _Conn, *, graceful: bool = False) -> None:
        if self._conns.get(conn.sock.fileno()) is not conn:
            return
        del self._conns[conn.sock.fileno()]
        if conn.state != "working":
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(conn.sock)
        try:
            if graceful:
                conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        conn.sock.close()

    def _close_all(self) -> None:
        for conn in list(self._conns.values()):
            self._close(conn)
        self._selector.close()
        self._listener.close()
        self._wake_r.close()
        self._wake_w.close()

    # -- the handler threads ---------------------------------------------------------
    def _handle(self, conn: _Conn, request: Request) -> None:
        try:
            data = self.app(request).encode()
        except Exception:  # a bug in a route: one error line, the client gets a 500
            log.error("http request failed", exc_info=True,
                      extra={"client": request.client, "path": request.path})
            data = Response.text(500, "internal error").encode()
        with self._lock:
            self._answers.append((conn, data))
        self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")
