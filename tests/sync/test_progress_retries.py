"""A sync run that fails after the CRM confirmed some of its records made progress: it is
not counted as an attempt. Under a flaky CRM (a fifth of the requests answered 500, one
retry each) an entry allowed only two failures in a row keeps running until every
customer is in the CRM, instead of going to 'error' after its second failed run."""

from __future__ import annotations

import threading

import pytest

from tests.queue.test_worker import wait_for
from tests.sync.conftest import World, add_customers
from worker.app import App
from worker.runtime.worker import WorkerConfig


def test_failed_runs_that_confirmed_records_do_not_use_up_attempts(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRMSYNC_CRM_BATCH_SIZE", "10")
    monkeypatch.setenv("CRMSYNC_CRM_CONCURRENCY", "1")
    monkeypatch.setenv("CRMSYNC_CRM_MAX_RETRIES", "1")
    monkeypatch.setenv("CRMSYNC_CRM_RETRY_BASE", "0")
    world.counts("CURRENCY")
    add_customers(world, 300)
    world.emulator.faults.error_rate(0.2, seed=3)
    world.sql("""INSERT INTO crmsync.job_queue_entries
                 (job_kind, mapping_name, run_interval, rerun_delay, max_attempts)
                 VALUES ('sync_mapping', 'CUSTOMER', '1 hour', '0 seconds', 2)""")
    worker = App(world.engine).worker(WorkerConfig(poll_interval=0.5))
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: world.scalar(
            "SELECT count(*) FROM crmsync.couplings WHERE mapping_name = 'CUSTOMER' "
            "AND state = 'coupled'") == 300
            or world.scalar("SELECT status FROM crmsync.job_queue_entries") == "error",
            timeout=120)
    finally:
        worker.stop(immediately=True)
        thread.join(20)
    world.emulator.faults.clear()
    runs = world.sql(
        """SELECT l.status, COALESCE(sum(s.inserted + s.modified + s.deleted + s.coupled), 0)
                  AS confirmed
             FROM crmsync.job_queue_log_entries l
             LEFT JOIN crmsync.sync_jobs s ON s.job_queue_log_entry_id = l.id
            GROUP BY l.id ORDER BY l.id""")
    failed = [r for r in runs if r.status == "error"]
    # The faults failed more runs in a row than max_attempts allows, most after progress.
    assert len(failed) >= 2 and any(r.confirmed > 0 for r in failed), runs
    status = world.scalar("SELECT status FROM crmsync.job_queue_entries")
    assert status != "error", runs
    assert len(world.remote("accounts")) == 300


def test_a_failed_run_that_confirmed_nothing_counts_as_an_attempt(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRMSYNC_CRM_MAX_RETRIES", "0")
    world.counts("CURRENCY")
    add_customers(world, 5)
    world.emulator.faults.unavailable()
    world.sql("""INSERT INTO crmsync.job_queue_entries
                 (job_kind, mapping_name, run_interval, rerun_delay, max_attempts)
                 VALUES ('sync_mapping', 'CUSTOMER', '1 hour', '0 seconds', 2)""")
    worker = App(world.engine).worker(WorkerConfig(poll_interval=0.5))
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: world.scalar("SELECT status FROM crmsync.job_queue_entries")
                 == "error", timeout=30)
    finally:
        worker.stop(immediately=True)
        thread.join(20)
        world.emulator.faults.clear()
    assert world.scalar("SELECT attempts FROM crmsync.job_queue_entries") == 2
    assert world.scalar("SELECT count(*) FROM crmsync.job_queue_log_entries "
                        "WHERE status = 'error'") == 2
