"""systemd integration without a dependency: sd_notify(3) over $NOTIFY_SOCKET.

READY=1 once the worker loop runs, STOPPING=1 when it stops, WATCHDOG=1 on every heartbeat
at which the worker loop goes round and the scheduler thread is alive, whether the database
answers or not: a wedged worker is restarted by systemd's WatchdogSec, a database outage is
ridden out (the worker reconnects by itself). STATUS= says whether the database answers."""

from __future__ import annotations

import logging
import os
import socket

from worker.observers import RunHooks

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
    def __init__(self) -> None:
        self._worker = "crmsync worker"

    def worker_started(self, worker_id: str) -> None:
        self._worker = f"crmsync worker {worker_id}"
        notify(f"READY=1\nSTATUS={self._worker} running")

    def worker_stopping(self, worker_id: str) -> None:
        notify("STOPPING=1\nSTATUS=stopping: finishing runs in hand")

    def liveness(self, alive: bool, database: bool) -> None:
        if not alive:
            notify("STATUS=unhealthy: the worker loop or its scheduler thread is stuck")
        elif database:
            notify(f"WATCHDOG=1\nSTATUS={self._worker} running")
        else:
            notify(f"WATCHDOG=1\nSTATUS={self._worker} running; database unreachable, "
                   "retrying")
