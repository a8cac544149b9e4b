"""A thread that LISTENs for job queue changes and wakes the worker loop.

It keeps its own psycopg connection (autocommit) and reconnects with backoff when the
database goes away; after each (re)connect it wakes the loop once, so changes made while
it was disconnected are not missed. Polling in the loop is the fallback."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import psycopg

log = logging.getLogger(__name__)

CHANNEL = "crmsync_job_queue"


class Listener(threading.Thread):
    def __init__(self, conninfo: str, on_notify: Callable[[], None], stop: threading.Event):
        super().__init__(name="crmsync-listener", daemon=True)
        self._conninfo = conninfo
        self._on_notify = on_notify
        self._stop_event = stop
        self.connected = False

    def run(self) -> None:
        delay = 0.5
        while not self._stop_event.is_set():
            try:
                with psycopg.connect(self._conninfo, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self.connected, delay = True, 0.5
                    self._on_notify()
                    while not self._stop_event.is_set():
                        for _ in conn.notifies(timeout=1.0):
                            self._on_notify()
            except psycopg.Error as exc:
                if self.connected:
                    log.warning("listen connection lost", extra={"error": _first_line(exc)})
                self.connected = False
                self._stop_event.wait(delay)
                delay = min(delay * 2, 30.0)
        self.connected = False


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
