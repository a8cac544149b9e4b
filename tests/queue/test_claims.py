"""Claiming against a real database: due entries, categories, dependency order, occurrences
claimed once, leases, rescue of dead workers' runs, release at shutdown."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from tests.queue.test_schema import add_mappings, insert_entry
from worker.queue.manager import Outcome, QueueManager
from worker.queue.models import RunStatus

LEASE = timedelta(seconds=30)


def entry_row(engine: Engine, entry_id: int) -> sa.Row:
    with engine.connect() as conn:
        return conn.execute(sa.text(
            "SELECT *, next_run_at - now() AS due_in FROM crmsync.job_queue_entries "
            "WHERE id = :id"), {"id": entry_id}).one()


def log_rows(engine: Engine) -> list[sa.Row]:
    with engine.connect() as conn:
        return list(conn.execute(sa.text(
            "SELECT * FROM crmsync.job_queue_log_entries ORDER BY id")))


def test_claim_runs_by_priority_and_writes_an_in_process_log_row(engine: Engine) -> None:
    low = insert_entry(engine, priority=5)
    high = insert_entry(engine, priority=1)
    queue = QueueManager(engine)
    claim = queue.claim_next("w1", LEASE)
    assert claim is not None and claim.entry.id == high
    row = entry_row(engine, high)
    assert (row.status, row.locked_by) == ("in_process", "w1")
    (logged,) = log_rows(engine)
    assert (logged.entry_id, logged.status, logged.worker_id) == (high, "in_process", "w1")
    assert queue.claim_next("w1", LEASE).entry.id == low  # type: ignore[union-attr]
    assert queue.claim_next("w1", LEASE) is None


def test_future_entries_are_not_claimed(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO crmsync.job_queue_entries (job_kind, next_run_at) "
                             "VALUES ('cleanup', now() + interval '1 hour')"))
    assert QueueManager(engine).claim_next("w1", LEASE) is None


def test_success_schedules_the_next_slot_and_logs_success(engine: Engine) -> None:
    entry_id = insert_entry(engine, run_interval="10 minutes")
    queue = QueueManager(engine)
    claim = queue.claim_next("w1", LEASE)
    assert claim is not None
    assert queue.finish(claim, "w1", Outcome.success("3 records"))
    row = entry_row(engine, entry_id)
    assert row.status == "ready" and row.locked_by is None
    assert row.next_run_at == claim.scheduled_for + timedelta(minutes=10)
    (logged,) = log_rows(engine)
    assert (logged.status, logged.message) == ("success", "3 records")
    assert logged.finished_at is not None


def test_failures_retry_then_stop_in_error(engine: Engine) -> None:
    entry_id = insert_entry(engine, max_attempts=2, rerun_delay="0 seconds")
    queue = QueueManager(engine)
    claim = queue.claim_next("w1", LEASE)
    assert claim is not None
    queue.finish(claim, "w1", Outcome.failure(RuntimeError("remote said no")))
    row = entry_row(engine, entry_id)
    assert (row.status, row.attempts, row.last_error) == ("ready", 1, "remote said no")
    assert timedelta(0) < row.due_in <= timedelta(seconds=1)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE crmsync.job_queue_entries SET next_run_at = now()"))
    claim = queue.claim_next("w1", LEASE)
    assert claim is not None
    queue.finish(claim, "w1", Outcome.failure(RuntimeError("remote said no")))
    row = entry_row(engine, entry_id)
    assert (row.status, row.attempts, row.next_run_at) == ("error", 2, None)
    assert [r.status for r in log_rows(engine)] == ["error", "error"]
    assert "RuntimeError: remote said no" in log_rows(engine)[0].error_traceback
    assert queue.claim_next("w1", LEASE) is None


def test_one_category_never_runs_twice_at_once(engine: Engine) -> None:
    first = insert_entry(engine, category_code="CRM", priority=2)
    second = insert_entry(engine, category_code="CRM", priority=1)
    other = insert_entry(engine)
    queue = QueueManager(engine)
    claim = queue.claim_next("w1", LEASE)
    assert claim is not None and claim.entry.id == second
    claim_b = queue.claim_next("w2", LEASE)
    assert claim_b is not None and claim_b.entry.id == other
    assert queue.claim_next("w2", LEASE) is None
    assert entry_row(engine, first).status == "waiting"
    queue.finish(claim, "w1", Outcome.success())
    claim_c = queue.claim_next("w2", LEASE)
    assert claim_c is not None and claim_c.entry.id == first


def test_children_wait_for_due_or_running_parents(engine: Engine) -> None:
    add_mappings(engine, "CURRENCY", "SALESPEOPLE", "CUSTOMER")
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO crmsync.integration_table_mapping_dependencies VALUES "
            "('CUSTOMER', 'CURRENCY'), ('CUSTOMER', 'SALESPEOPLE')"))
    # The child has the best priority, yet must wait for both parents.
    customer = insert_entry(engine, job_kind="sync_mapping", mapping_name="CUSTOMER", priority=1)
    currency = insert_entry(engine, job_kind="sync_mapping", mapping_name="CURRENCY", priority=5)
    sales = insert_entry(engine, job_kind="sync_mapping", mapping_name="SALESPEOPLE", priority=5)
    queue = QueueManager(engine)
    a = queue.claim_next("w1", LEASE)
    b = queue.claim_next("w2", LEASE)
    assert a is not None and b is not None
    assert {a.entry.id, b.entry.id} == {currency, sales}
    assert queue.claim_next("w3", LEASE) is None
    assert entry_row(engine, customer).status == "waiting"
    queue.finish(a, "w1", Outcome.success())
    assert queue.claim_next("w3", LEASE) is None  # one parent still running
    queue.finish(b, "w2", Outcome.success())
    c = queue.claim_next("w3", LEASE)
    assert c is not None and c.entry.id == customer


def test_concurrent_claimers_never_share_an_entry(engine: Engine) -> None:
    ids = [insert_entry(engine) for _ in range(40)]
    claimed: list[int] = []
    lock = threading.Lock()

    def claimer(name: str) -> None:
        queue = QueueManager(engine)
        while (claim := queue.claim_next(name, LEASE)) is not None:
            with lock:
                claimed.append(claim.entry.id)

    threads = [threading.Thread(target=claimer, args=(f"w{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == ids


INFO = {"hostname": "h", "pid": 1, "version": "t", "concurrency": 1}


def test_expired_lease_is_rescued_due_at_once_without_counting_an_attempt(
    engine: Engine,
) -> None:
    entry_id = insert_entry(engine, rerun_delay="30 seconds")
    queue = QueueManager(engine)
    queue.heartbeat("dead-worker", INFO, timedelta(seconds=1), [])
    claim = queue.claim_next("dead-worker", timedelta(seconds=1))
    assert claim is not None
    assert queue.rescue_abandoned(timedelta(minutes=5)) == []  # lease still valid
    time.sleep(1.1)
    (rescued,) = queue.rescue_abandoned(timedelta(minutes=5))
    assert (rescued.entry_id, rescued.worker_id) == (entry_id, "dead-worker")
    row = entry_row(engine, entry_id)
    # The worker failed, not the job: the same occurrence is due again at once.
    assert (row.status, row.attempts, row.locked_by) == ("ready", 0, None)
    assert row.next_run_at == claim.scheduled_for and row.due_in <= timedelta(0)
    assert "dead-worker stopped renewing its lease" in row.last_error
    again = queue.claim_next("w2", LEASE)
    assert again is not None and again.scheduled_for == claim.scheduled_for
    logged = log_rows(engine)[0]
    assert logged.status == "abandoned"
    assert "dead-worker" in logged.error_message
    # The late worker's outcome is not recorded over the rescue.
    assert queue.finish(claim, "dead-worker", Outcome.success()) is False
    assert log_rows(engine)[0].status == "abandoned"


def test_an_occurrence_that_kills_three_workers_puts_its_entry_in_error(
    engine: Engine,
) -> None:
    entry_id = insert_entry(engine)
    queue = QueueManager(engine)
    for n in range(3):
        worker = f"dead-{n}"
        queue.heartbeat(worker, INFO, LEASE, [])
        claim = queue.claim_next(worker, LEASE)
        assert claim is not None and claim.entry.id == entry_id
        queue.unregister(worker)  # as good as dead: the reaper rescues its run
        assert len(queue.rescue_abandoned(timedelta(minutes=5))) == 1
        expected = "ready" if n < 2 else "error"
        assert entry_row(engine, entry_id).status == expected
    row = entry_row(engine, entry_id)
    assert row.last_error.startswith(f"entry #{entry_id}: its run was abandoned 3 times")
    assert [r.status for r in log_rows(engine)] == ["abandoned"] * 3


def test_a_run_of_an_unregistered_worker_is_rescued(engine: Engine) -> None:
    """A row set to in_process by hand, with a lease far in the future, is not stuck."""
    entry_id = insert_entry(engine, status="in_process", locked_by="nobody",
                            lease_expires_at="2999-01-01")
    (rescued,) = QueueManager(engine).rescue_abandoned(timedelta(minutes=5))
    assert rescued.entry_id == entry_id
    row = entry_row(engine, entry_id)
    assert (row.status, row.locked_by, row.lease_expires_at) == ("ready", None, None)


def test_heartbeat_keeps_a_long_run_leased(engine: Engine) -> None:
    insert_entry(engine)
    queue = QueueManager(engine)
    info = INFO
    queue.heartbeat("w1", info, timedelta(milliseconds=300), [])
    claim = queue.claim_next("w1", timedelta(milliseconds=300))
    assert claim is not None
    for _ in range(4):
        time.sleep(0.15)
        queue.heartbeat("w1", info, timedelta(milliseconds=300), [claim.log_id])
    assert queue.rescue_abandoned(timedelta(minutes=5)) == []
    assert queue.finish(claim, "w1", Outcome.success())


def test_release_at_shutdown_makes_the_same_occurrence_due_again(engine: Engine) -> None:
    entry_id = insert_entry(engine)
    queue = QueueManager(engine)
    claim = queue.claim_next("w1", LEASE)
    assert claim is not None
    queue.release(claim, "w1", "worker stopped before the run finished")
    row = entry_row(engine, entry_id)
    assert (row.status, row.attempts, row.next_run_at) == ("ready", 0, claim.scheduled_for)
    again = queue.claim_next("w2", LEASE)
    assert again is not None and again.scheduled_for == claim.scheduled_for
    queue.finish(again, "w2", Outcome.success())
    assert [r.status for r in log_rows(engine)] == ["abandoned", "success"]


def test_entry_outside_its_window_is_moved_not_run(engine: Engine) -> None:
    with engine.begin() as conn:
        hour = conn.scalar(sa.text("SELECT extract(hour FROM now() AT TIME ZONE 'UTC')::int"))
    start, end = f"{(hour + 2) % 24:02d}:00", f"{(hour + 3) % 24:02d}:00"
    entry_id = insert_entry(engine, starting_time=start, ending_time=end)
    assert QueueManager(engine).claim_next("w1", LEASE) is None
    row = entry_row(engine, entry_id)
    assert row.status == "ready"
    assert timedelta(hours=1) < row.due_in <= timedelta(hours=2)
    assert log_rows(engine) == []


def test_user_hold_during_a_run_is_kept(engine: Engine) -> None:
    entry_id = insert_entry(engine)
    queue = QueueManager(engine)
    claim = queue.claim_next("w1", LEASE)
    assert claim is not None
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE crmsync.job_queue_entries SET status = 'on_hold' "
                             "WHERE id = :id"), {"id": entry_id})
    queue.finish(claim, "w1", Outcome(RunStatus.SUCCESS))
    assert entry_row(engine, entry_id).status == "on_hold"
    assert log_rows(engine)[0].status == "success"
