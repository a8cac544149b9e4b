"""systemd integration without a dependency: sd_notify(3) over $NOTIFY_SOCKET.

READY=1 once the worker loop runs, STOPPING=1 when it stops, WATCHDOG=1 on every heartbeat
at which the scheduler thread is alive and the database answered (so a wedged worker is
restarted by systemd's WatchdogSec)."""

from __future__ import annotations

import logging
import os
import socket

from worker.queue.hooks import RunHooks

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
    def worker_started(self, worker_id: str) -> None:
        notify(f"READY=1\nSTATUS=crmsync worker {worker_id} running")

    def worker_stopping(self, worker_id: str) -> None:
        notify("STOPPING=1\nSTATUS=stopping: finishing runs in hand")

    def heartbeat(self, healthy: bool) -> None:
        if healthy:
            notify("WATCHDOG=1")
        else:
            notify("STATUS=unhealthy: database unreachable or scheduler stopped")
