"""The systemd watchdog watches the worker loop, not the database: while PostgreSQL is away
the worker goes on sending WATCHDOG=1 (so systemd does not kill and restart it), says so in
STATUS= and /readyz, and carries on when the database is back. The database is a private
embedded server the test stops and starts; the shared one is never touched."""

from __future__ import annotations

import re
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa

from tests.queue.test_database_restart import Server
from tests.support.waiting import wait_for
from worker.app import App
from worker.db import migrate
from worker.db.engine import create_engine
from worker.runtime.http import StatusServer
from worker.runtime.systemd import SystemdHooks
from worker.runtime.worker import WorkerConfig

UNIT = Path(__file__).resolve().parents[2] / "deploy" / "systemd" / "crmsync.service"


@dataclass
class Notifications:
    """What the worker sends to $NOTIFY_SOCKET, with the time each message arrived."""

    sock: socket.socket
    received: list[tuple[float, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def listen(self) -> None:
        while True:
            try:
                message = self.sock.recv(4096).decode()
            except OSError:
                return
            with self.lock:
                self.received.append((time.monotonic(), message))

    def since(self, start: float) -> list[tuple[float, str]]:
        with self.lock:
            return [(t, m) for t, m in self.received if t >= start]


@pytest.fixture
def notifications(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Notifications]:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    seen = Notifications(sock)
    threading.Thread(target=seen.listen, daemon=True).start()
    yield seen
    sock.close()


@pytest.fixture
def server() -> Iterator[Server]:
    home = Path(tempfile.mkdtemp(prefix="crmsync-watchdog-"))
    home.chmod(0o755)  # as root, pgserver runs PostgreSQL as its own user
    srv = Server(home / "data")
    yield srv
    srv.cleanup()
    shutil.rmtree(home, ignore_errors=True)


def watchdog_limit() -> float:
    return float(re.search(r"^WatchdogSec=(\d+)$", UNIT.read_text(), re.MULTILINE)[1])


def ride_out_an_outage(server: Server, notifications: Notifications, *, lease: float,
                       outage: float) -> None:
    engine = create_engine(server.url, pool_size=6)
    migrate.upgrade(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO crmsync.job_queue_entries (job_kind, run_interval) "
                             "VALUES ('cleanup', '1 second')"))

    def runs() -> int:
        with engine.connect() as conn:
            return int(conn.scalar(sa.text(
                "SELECT count(*) FROM crmsync.job_queue_log_entries WHERE status = 'success'")))

    worker = App(engine).worker(WorkerConfig(
        poll_interval=1.0, lease=timedelta(seconds=lease)), hooks=[SystemdHooks()])
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    status = StatusServer("127.0.0.1:0", worker.health, worker.readiness).start()
    try:
        wait_for(lambda: runs() >= 1, timeout=30)
        server.stop()
        down = time.monotonic()
        wait_for(lambda: requests.get(f"{status.url}/readyz", timeout=30).status_code == 503,
                 timeout=30)
        assert requests.get(f"{status.url}/readyz", timeout=30).json()["database"] is False
        wait_for(lambda: time.monotonic() - down > outage, timeout=outage + 10)
        during = notifications.since(down)
        server.start()
        wait_for(lambda: requests.get(f"{status.url}/readyz", timeout=30).status_code == 200,
                 timeout=90)
        before = runs()
        wait_for(lambda: runs() >= before + 2, timeout=30)  # it carries on by itself
        # STATUS= says the database answers again, at the next heartbeat (lease / 4).
        wait_for(lambda: [m for _, m in notifications.since(down + outage)
                          if "WATCHDOG=1" in m and "unreachable" not in m], timeout=lease)
    finally:
        worker.stop(immediately=True)
        thread.join(20)
        status.stop()
        engine.dispose()
    assert thread.is_alive() is False
    fed = [t for t, m in during if "WATCHDOG=1" in m]
    # systemd restarts a service whose watchdog is not fed for WatchdogSec.
    gaps = [b - a for a, b in zip([down, *fed], [*fed, down + outage], strict=True)]
    assert fed and max(gaps) < watchdog_limit(), gaps
    assert any("database unreachable" in m for _, m in during)


def test_a_database_outage_feeds_the_watchdog_and_says_so(
        server: Server, notifications: Notifications) -> None:
    # Heartbeats every 0.5 s: a watchdog tied to the database would stop at once.
    ride_out_an_outage(server, notifications, lease=2.0, outage=10.0)


@pytest.mark.slow
def test_a_five_minute_database_outage_does_not_restart_the_worker(
        server: Server, notifications: Notifications) -> None:
    # The service's timings: a heartbeat every 15 s, WatchdogSec from the unit.
    ride_out_an_outage(server, notifications, lease=60.0, outage=300.0)
