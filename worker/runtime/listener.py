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
LOCAL_CHANGE_CHANNEL = "crmsync_local_change"  # payload: the changed table (schema.table)


class Listener(threading.Thread):
    """Calls ``on_notify(channel, payload)`` for each notification; after a (re)connect it
    calls ``on_notify(CHANNEL, "")`` once to catch up."""

    def __init__(self, conninfo: str, on_notify: Callable[[str, str], None],
                 stop: threading.Event, channels: tuple[str, ...] = (CHANNEL,)):
        super().__init__(name="crmsync-listener", daemon=True)
        self._conninfo = conninfo
        self._on_notify = on_notify
        self._stop_event = stop
        self._channels = channels
        self.connected = False

    def run(self) -> None:
        delay = 0.5
        while not self._stop_event.is_set():
            try:
                with psycopg.connect(self._conninfo, autocommit=True, connect_timeout=5) as conn:
                    for channel in self._channels:
                        conn.execute(f"LISTEN {channel}")
                    self.connected, delay = True, 0.5
                    self._on_notify(CHANNEL, "")
                    while not self._stop_event.is_set():
                        for note in conn.notifies(timeout=1.0):
                            self._on_notify(note.channel, note.payload)
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
