"""A whole-request deadline, and a size limit, for the replies of a service.

requests' read timeout bounds each wait for data, not the reply: a server that trickles
one byte a second keeps a request (and one of the connection's few slots) forever. Here
one watcher thread per process ends every exchange still running at its deadline by
shutting down its socket; the blocked read then fails at once, and the transport reports
a timeout. The socket is found through the connection pools of the session
(:class:`DeadlineAdapter`), which note in the requesting thread's watch which connection
it was given.

:func:`read_body` streams a reply's body, decompressed, and stops as soon as it exceeds
the limit: a 300 KB gzip bomb never becomes 300 MB in memory.
"""

from __future__ import annotations

import heapq
import itertools
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from worker.remote.connections import Connection, SecureConnection

_CHUNK = 64 * 1024


class ReplyTooLarge(Exception):
    """The reply's body (decompressed) is larger than the limit."""


class Watch:
    """One exchange under a deadline: the connection it uses, and whether it expired."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.connection: Any = None
        self.expired = False


_current = threading.local()


class Watcher:
    """Shuts down the socket of every watched exchange that outlives its deadline."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._heap: list[tuple[float, int, Watch]] = []
        self._active: set[int] = set()
        self._ids = itertools.count()
        self._thread: threading.Thread | None = None

    @contextmanager
    def watch(self, seconds: float) -> Iterator[Watch]:
        entry = Watch(time.monotonic() + seconds)
        ident = next(self._ids)
        with self._lock:
            # The watcher sleeps until the earliest deadline in the heap: it needs waking
            # only when this one comes sooner (most requests share one timeout, so their
            # deadlines come in order and a wake per request would be for nothing).
            sooner = not self._heap or entry.deadline < self._heap[0][0]
            heapq.heappush(self._heap, (entry.deadline, ident, entry))
            self._active.add(ident)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name="crmsync-remote-deadlines")
                self._thread.start()
            if sooner:
                self._lock.notify()
        previous, _current.watch = getattr(_current, "watch", None), entry
        try:
            yield entry
        finally:
            _current.watch = previous
            with self._lock:  # once unregistered, this exchange is never touched again
                self._active.discard(ident)
                if len(self._heap) > 2 * len(self._active) + 64:  # drop finished ones
                    self._heap = [e for e in self._heap if e[1] in self._active]
                    heapq.heapify(self._heap)

    def _run(self) -> None:
        with self._lock:
            while True:
                while self._heap and self._heap[0][1] not in self._active:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._lock.wait()
                    continue
                deadline, ident, entry = self._heap[0]
                pause = deadline - time.monotonic()
                if pause > 0:
                    self._lock.wait(pause)
                    continue
                heapq.heappop(self._heap)
                self._active.discard(ident)
                entry.expired = True
                _shut(entry.connection)


def _shut(connection: Any) -> None:
    sock = getattr(connection, "sock", None)
    if sock is None:
        return
    with suppress(OSError):  # already closed
        sock.shutdown(socket.SHUT_RDWR)


WATCHER = Watcher()


@contextmanager
def whole_request(seconds: float) -> Iterator[None]:
    """The exchange this thread makes inside the block (through a session with a
    :class:`DeadlineAdapter`) ends ``seconds`` from now: one still running then fails as
    ``requests.ReadTimeout``, also when what had arrived looked complete (headers ended
    by the shut socket). For requests whose reply is read whole, such as a token's."""
    with WATCHER.watch(seconds) as watch:
        try:
            yield
        except requests.RequestException:
            if watch.expired:
                raise requests.ReadTimeout("the reply did not complete in time") from None
            raise
    if watch.expired:
        raise requests.ReadTimeout("the reply did not complete in time")


def _note(conn: Any) -> Any:
    watch = getattr(_current, "watch", None)
    if watch is not None:
        watch.connection = conn
    return conn


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = Connection

    def _get_conn(self, timeout: float | None = None) -> Any:
        return _note(super()._get_conn(timeout))


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = SecureConnection

    def _get_conn(self, timeout: float | None = None) -> Any:
        return _note(super()._get_conn(timeout))


_POOLS = {"http": _HTTPPool, "https": _HTTPSPool}


class DeadlineAdapter(HTTPAdapter):
    """An HTTPAdapter whose pools (direct or through a proxy) tell the current watch which
    connection serves it; their connections read a reply's head as headers only
    (:mod:`worker.remote.connections`)."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = dict(_POOLS)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        manager.pool_classes_by_scheme = dict(_POOLS)
        return manager


def read_body(response: requests.Response, limit: int) -> bytes:
    """The body of a streamed response, decompressed, at most ``limit`` bytes; raises
    ReplyTooLarge as soon as it has more (a declared Content-Length too large is refused
    before reading)."""
    declared = response.headers.get("Content-Length", "")
    if declared.isascii() and declared.isdigit() and not response.headers.get(
            "Content-Encoding") and int(declared) > limit:
        raise ReplyTooLarge
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_content(_CHUNK):
        size += len(chunk)
        if size > limit:
            raise ReplyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)
