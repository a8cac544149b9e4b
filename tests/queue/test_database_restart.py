"""The worker survives its database going away: it keeps running, reconnects with backoff
and goes on with the schedule. Uses a private embedded server that the test can stop."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.queue.test_worker import wait_for
from worker.app import App
from worker.db import migrate
from worker.db.embedded import sqlalchemy_url
from worker.db.engine import create_engine
from worker.runtime.worker import WorkerConfig


class Server:
    def __init__(self, pgdata: Path) -> None:
        import pgserver

        self._pg = pgserver.get_server(pgdata, cleanup_mode="delete")
        self.url = sqlalchemy_url(self._pg.get_uri())

    def _ctl(self, *args: str) -> None:
        from pgserver._commands import pg_ctl

        pg_ctl(["-w", *args], pgdata=self._pg.pgdata, user=self._pg.system_user)

    def stop(self) -> None:
        try:
            self._ctl("stop", "-m", "fast")
        except subprocess.CalledProcessError:
            # A busy machine can outlast pg_ctl's wait; an immediate stop always ends it.
            self._ctl("stop", "-m", "immediate")

    def start(self) -> None:
        self._ctl("restart", "-m", "fast")  # with the options of the previous start

    def cleanup(self) -> None:
        self._pg.cleanup()


@pytest.fixture
def server() -> Iterator[Server]:
    # Not under pytest's temporary directory: that one is private to the user running the
    # tests, and as root pgserver runs PostgreSQL as its own user, which must reach the data.
    home = Path(tempfile.mkdtemp(prefix="crmsync-restart-"))
    home.chmod(0o755)
    srv = Server(home / "data")
    yield srv
    srv.cleanup()
    shutil.rmtree(home, ignore_errors=True)


def test_worker_rides_out_a_database_restart(server: Server) -> None:
    engine = create_engine(server.url, pool_size=6)
    migrate.upgrade(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO crmsync.job_queue_entries (job_kind, run_interval) "
                             "VALUES ('cleanup', '1 second')"))
    worker = App(engine, plugins=["tests.support.handlers"]).worker(
        WorkerConfig(poll_interval=0.5, reap_interval=1.0))
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()

    def runs() -> int:
        with engine.connect() as conn:
            return int(conn.scalar(sa.text(
                "SELECT count(*) FROM crmsync.job_queue_log_entries WHERE status = 'success'")))

    try:
        wait_for(lambda: runs() >= 2)
        server.stop()
        wait_for(lambda: not worker.healthy(), timeout=10)
        time.sleep(2)
        assert thread.is_alive()
        server.start()
        wait_for(worker.healthy, timeout=20)
        before = runs()
        wait_for(lambda: runs() >= before + 3, timeout=10)
    finally:
        worker.stop(immediately=True)
        thread.join(10)
        engine.dispose()
    assert not thread.is_alive()
