"""The worker loop in-process against a real database: notifications, concurrency, job
timeouts, inactivity holds, shutdown with a run in hand, and a database that goes away."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from tests.queue.test_schema import insert_entry
from tests.support.waiting import wait_for
from worker.app import App
from worker.runtime.worker import Worker, WorkerConfig


def scalar(engine: Engine, sql: str, **params: object) -> object:
    with engine.connect() as conn:
        return conn.scalar(sa.text(sql), params)


@pytest.fixture
def start_worker(engine: Engine) -> Iterator[Callable[..., tuple[Worker, threading.Thread]]]:
    started: list[tuple[Worker, threading.Thread]] = []

    def start(**config: object) -> tuple[Worker, threading.Thread]:
        cfg = WorkerConfig(**{"poll_interval": 30.0, "lease": timedelta(seconds=5),
                              "reap_interval": 1.0, **config})  # type: ignore[arg-type]
        worker = App(engine, plugins=["tests.support.handlers"]).worker(cfg)
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        assert worker.started.wait(10)
        started.append((worker, thread))
        return worker, thread

    yield start
    for worker, thread in started:
        worker.stop(immediately=True)
        thread.join(10)


def successes(engine: Engine) -> int:
    return int(scalar(  # type: ignore[arg-type]
        engine, "SELECT count(*) FROM crmsync.job_queue_log_entries WHERE status = 'success'"))


def worker_is_idle(engine: Engine) -> bool:
    """No statement of the worker is running: its loop has finished dispatching."""
    return scalar(engine, "SELECT count(*) FROM pg_stat_activity WHERE datname = "
                          "current_database() AND state = 'active' "
                          "AND pid <> pg_backend_pid()") == 0


def test_a_new_row_runs_through_notify_without_waiting_for_the_poll(engine: Engine,
                                                                    start_worker) -> None:
    # The fallback poll is an hour away and nothing is due: only NOTIFY can wake the loop.
    worker, _ = start_worker(poll_interval=3600.0)
    insert_entry(engine, recurring=False)  # the first one shows the loop has dispatched
    wait_for(lambda: successes(engine) == 1)
    # The wake-up after that run has been consumed and its dispatch is over.
    wait_for(lambda: not worker._wake.is_set() and worker.running_count() == 0
             and worker_is_idle(engine))
    second = insert_entry(engine, recurring=False)
    wait_for(lambda: successes(engine) == 2, timeout=30)
    assert scalar(engine, "SELECT status FROM crmsync.job_queue_entries WHERE id = :id",
                  id=second) == "finished"


def test_recurring_entry_runs_at_its_interval(engine: Engine, start_worker) -> None:
    entry_id = insert_entry(engine, run_interval="1 second")  # the shortest allowed
    start_worker()
    wait_for(lambda: scalar(engine, "SELECT count(*) FROM crmsync.job_queue_log_entries "
                                    "WHERE entry_id = :id AND status = 'success'",
                            id=entry_id) >= 3, timeout=30)  # type: ignore[operator]
    gaps = scalar(engine, """
        SELECT array_agg(extract(epoch FROM scheduled_for - lag) ORDER BY scheduled_for)
          FROM (SELECT scheduled_for, lag(scheduled_for) OVER (ORDER BY scheduled_for)
                  FROM crmsync.job_queue_log_entries) s WHERE lag IS NOT NULL""")
    assert all(abs(float(g) - 1.0) < 1e-6 for g in gaps)  # type: ignore[union-attr]


def test_concurrency_limit_is_respected(engine: Engine, start_worker) -> None:
    for _ in range(6):
        insert_entry(engine, recurring=False, parameters='{"sleep": 0.6}')
    start_worker(concurrency=2)
    wait_for(lambda: successes(engine) == 6, timeout=30)
    # The most runs in hand at once, from the runs' own start and finish times.
    peak = scalar(engine, """
        SELECT max((SELECT count(*) FROM crmsync.job_queue_log_entries o
                     WHERE o.started_at <= r.started_at AND o.finished_at > r.started_at))
          FROM crmsync.job_queue_log_entries r""")
    assert peak == 2


def test_job_timeout_fails_the_run(engine: Engine, start_worker) -> None:
    entry_id = insert_entry(engine, parameters='{"sleep": 30}', job_timeout="1 second",
                            max_attempts=1)
    start_worker(lease=timedelta(seconds=1))
    wait_for(lambda: scalar(engine, "SELECT status FROM crmsync.job_queue_entries "
                                    "WHERE id = :id", id=entry_id) == "error")
    message = scalar(engine, "SELECT error_message FROM crmsync.job_queue_log_entries")
    assert "job timeout of 0:00:01 exceeded" in str(message)


def test_a_failed_run_is_logged_as_an_error_naming_the_entry(
        engine: Engine, start_worker, caplog: pytest.LogCaptureFixture) -> None:
    insert_entry(engine, parameters='{"fail": "the CRM refused"}', max_attempts=1)
    caplog.set_level(logging.INFO, logger="worker.runtime.worker")
    start_worker()
    wait_for(lambda: any(r.getMessage() == "run finished" for r in caplog.records))
    (finished,) = [r for r in caplog.records if r.getMessage() == "run finished"]
    assert finished.levelno == logging.ERROR  # journalctl -p err shows it
    assert finished.outcome == "error" and "the CRM refused" in finished.detail


def test_sync_that_changed_nothing_goes_on_hold_until_the_timeout(engine: Engine,
                                                                  start_worker) -> None:
    entry_id = insert_entry(engine, parameters='{"changed": false}',
                            inactivity_timeout="2 seconds", run_interval="1 second")
    start_worker()
    wait_for(lambda: scalar(engine, "SELECT status FROM crmsync.job_queue_entries "
                                    "WHERE id = :id", id=entry_id) == "on_hold_inactivity")
    wait_for(lambda: scalar(engine, "SELECT count(*) FROM crmsync.job_queue_log_entries") == 2,
             timeout=30)
    # Held for the whole timeout, although the run interval is 1 s.
    held = scalar(engine, "SELECT extract(epoch FROM max(started_at) - min(started_at)) "
                          "FROM crmsync.job_queue_log_entries")
    assert float(held) >= 2.0  # type: ignore[arg-type]


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
