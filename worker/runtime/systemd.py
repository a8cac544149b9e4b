"""systemd integration without a dependency: sd_notify(3) over $NOTIFY_SOCKET.

READY=1 once the worker loop runs, STOPPING=1 when it stops, WATCHDOG=1 on every heartbeat
at which the worker loop goes round and the scheduler thread is alive, whether the database
answers or not: a wedged worker is restarted by systemd's WatchdogSec, a database outage is
ridden out (the worker reconnects by itself). STATUS= says whether the database answers,
and which passes run and how far they are."""

from __future__ import annotations

import logging
import os
import socket

from worker.observers import RunHooks
from worker.sync.progress import BOARD, ProgressBoard

log = logging.getLogger(__name__)


def notify(message: str) -> bool:
    """Send one sd_notify message; False when not under systemd (or it failed)."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
        return True
    except OSError as exc:
        log.warning("sd_notify failed", extra={"error": str(exc)})
        return False


class SystemdHooks(RunHooks):
    """The worker's life as sd_notify messages. ``STATUS=`` says whether the database
    answers and what the worker is doing (the passes on ``board``, e.g. "CUSTOMER to CRM:
    12,000 / 20,000, 850/s"), so ``systemctl status crmsync`` shows both; it is sent on
    every heartbeat and, between heartbeats, when a pass moves on (every few seconds)."""

    def __init__(self, board: ProgressBoard = BOARD) -> None:
        self._worker = "crmsync worker"
        self._health = "running"
        self._board = board
        board.on_change = self._progressed

    def _status(self) -> str:
        doing = self._board.text()
        return f"{self._worker} {self._health}" + (f"; {doing}" if doing else "")

    def _progressed(self) -> None:
        notify(f"STATUS={self._status()}")

    def worker_started(self, worker_id: str) -> None:
        self._worker = f"crmsync worker {worker_id}"
        notify(f"READY=1\nSTATUS={self._status()}")

    def worker_stopping(self, worker_id: str) -> None:
        self._health = "stopping: finishing runs in hand"
        notify(f"STOPPING=1\nSTATUS={self._health}")

    def liveness(self, alive: bool, database: bool) -> None:
        if not alive:
            notify("STATUS=unhealthy: the worker loop or its scheduler thread is stuck")
            return
        if self._health.startswith("stopping"):
            notify("WATCHDOG=1")
            return
        self._health = "running" if database else "running; database unreachable, retrying"
        notify(f"WATCHDOG=1\nSTATUS={self._status()}")
