"""The worker loop in-process against a real database: notifications, concurrency, job
timeouts, inactivity holds, shutdown with a run in hand, and a database that goes away."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from tests.queue.test_schema import insert_entry
from tests.support import handlers as scripted_handlers
from worker.jobs import load_handlers
from worker.runtime.worker import Worker, WorkerConfig


def wait_for(predicate: Callable[[], object], timeout: float = 10.0) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return time.monotonic() - start
        time.sleep(0.05)
    raise AssertionError(f"condition not met within {timeout} s")


def scalar(engine: Engine, sql: str, **params: object) -> object:
    with engine.connect() as conn:
        return conn.scalar(sa.text(sql), params)


@pytest.fixture
def start_worker(engine: Engine) -> Iterator[Callable[..., tuple[Worker, threading.Thread]]]:
    started: list[tuple[Worker, threading.Thread]] = []

    def start(**config: object) -> tuple[Worker, threading.Thread]:
        handlers = load_handlers()
        scripted_handlers.register(handlers)
        cfg = WorkerConfig(**{"poll_interval": 30.0, "lease": timedelta(seconds=5),
                              "reap_interval": 1.0, **config})  # type: ignore[arg-type]
        worker = Worker(engine, handlers, cfg)
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        assert worker.started.wait(10)
        started.append((worker, thread))
        return worker, thread

    yield start
    for worker, thread in started:
        worker.stop(immediately=True)
        thread.join(10)


def test_a_new_row_runs_within_two_seconds_through_notify(engine: Engine, start_worker) -> None:
    start_worker()  # polls only every 30 s: only LISTEN/NOTIFY can make this fast
    time.sleep(0.5)
    insert_entry(engine, recurring=False)
    took = wait_for(lambda: scalar(
        engine, "SELECT count(*) FROM crmsync.job_queue_log_entries WHERE status = 'success'"))
    assert took < 2.0
    assert scalar(engine, "SELECT status FROM crmsync.job_queue_entries") == "finished"


def test_recurring_entry_runs_at_its_interval(engine: Engine, start_worker) -> None:
    entry_id = insert_entry(engine, run_interval="1 second")  # the shortest allowed
    start_worker()
    time.sleep(3.5)
    runs = scalar(engine, "SELECT count(*) FROM crmsync.job_queue_log_entries "
                          "WHERE entry_id = :id AND status = 'success'", id=entry_id)
    assert 3 <= runs <= 6  # type: ignore[operator]
    gaps = scalar(engine, """
        SELECT array_agg(extract(epoch FROM scheduled_for - lag) ORDER BY scheduled_for)
          FROM (SELECT scheduled_for, lag(scheduled_for) OVER (ORDER BY scheduled_for)
                  FROM crmsync.job_queue_log_entries) s WHERE lag IS NOT NULL""")
    assert all(abs(float(g) - 1.0) < 1e-6 for g in gaps)  # type: ignore[union-attr]


def test_concurrency_limit_is_respected(engine: Engine, start_worker) -> None:
    for _ in range(6):
        insert_entry(engine, recurring=False, parameters='{"sleep": 0.6}')
    worker, _ = start_worker(concurrency=2)
    peak = 0
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:
        peak = max(peak, worker.running_count())
        time.sleep(0.02)
    assert peak == 2
    wait_for(lambda: scalar(engine, "SELECT count(*) FROM crmsync.job_queue_log_entries "
                                    "WHERE status = 'success'") == 6)


def test_job_timeout_fails_the_run(engine: Engine, start_worker) -> None:
    entry_id = insert_entry(engine, parameters='{"sleep": 30}', job_timeout="1 second",
                            max_attempts=1)
    start_worker(lease=timedelta(seconds=1))
    wait_for(lambda: scalar(engine, "SELECT status FROM crmsync.job_queue_entries "
                                    "WHERE id = :id", id=entry_id) == "error")
    message = scalar(engine, "SELECT error_message FROM crmsync.job_queue_log_entries")
    assert "job timeout of 0:00:01 exceeded" in str(message)


def test_sync_that_changed_nothing_goes_on_hold_until_the_timeout(engine: Engine,
                                                                  start_worker) -> None:
    entry_id = insert_entry(engine, parameters='{"changed": false}',
                            inactivity_timeout="2 seconds", run_interval="1 second")
    start_worker()
    wait_for(lambda: scalar(engine, "SELECT status FROM crmsync.job_queue_entries "
                                    "WHERE id = :id", id=entry_id) == "on_hold_inactivity")
    time.sleep(1.0)
    assert scalar(engine, "SELECT count(*) FROM crmsync.job_queue_log_entries") == 1
    wait_for(lambda: scalar(engine, "SELECT count(*) FROM crmsync.job_queue_log_entries") == 2,
             timeout=5)


def test_stop_waits_for_the_run_in_hand(engine: Engine, start_worker) -> None:
    insert_entry(engine, recurring=False, parameters='{"sleep": 1}')
    worker, thread = start_worker(shutdown_timeout=10.0)
    wait_for(lambda: worker.running_count() == 1)
    worker.stop()
    thread.join(10)
    assert not thread.is_alive()
    assert scalar(engine, "SELECT status FROM crmsync.job_queue_log_entries") == "success"
    assert scalar(engine, "SELECT count(*) FROM crmsync.workers") == 0


def test_stop_releases_a_run_that_outlives_the_shutdown_timeout(engine: Engine,
                                                                start_worker) -> None:
    entry_id = insert_entry(engine, recurring=False, parameters='{"sleep": 20}')
    worker, thread = start_worker(shutdown_timeout=0.5)
    wait_for(lambda: worker.running_count() == 1)
    worker.stop()
    thread.join(10)
    assert scalar(engine, "SELECT status FROM crmsync.job_queue_log_entries") == "abandoned"
    row_status = scalar(engine, "SELECT status FROM crmsync.job_queue_entries WHERE id = :id",
                        id=entry_id)
    assert row_status == "ready"
