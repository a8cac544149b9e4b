"""Schedules change when users change them (by SQL here; the CLI in the acceptance tests),
and children wait for parents whose last pass failed."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from tests.queue.test_claims import LEASE, entry_row
from tests.queue.test_schema import add_mappings, insert_entry
from worker.queue.manager import Outcome, QueueManager


def run_once(engine: Engine, entry_id: int, outcome: Outcome | None = None) -> sa.Row:
    queue = QueueManager(engine)
    claim = queue.claim_next("w1", LEASE)
    assert claim is not None and claim.entry.id == entry_id
    queue.finish(claim, "w1", outcome or Outcome.success())
    return entry_row(engine, entry_id)


def sql(engine: Engine, statement: str, **params: object) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text(statement), params)


def last_scheduled_for(engine: Engine, entry_id: int) -> object:
    with engine.connect() as conn:
        return conn.scalar(sa.text(
            "SELECT max(scheduled_for) FROM crmsync.job_queue_log_entries WHERE entry_id = :id"),
            {"id": entry_id})


def test_a_shorter_interval_by_sql_takes_effect_from_the_last_run(engine: Engine) -> None:
    entry_id = insert_entry(engine, run_interval="30 minutes")
    before = run_once(engine, entry_id)
    assert before.due_in > timedelta(minutes=29)
    sql(engine, "UPDATE crmsync.job_queue_entries SET run_interval = '20 seconds'")
    assert entry_row(engine, entry_id).schedule_changed
    assert QueueManager(engine).reschedule() == 1
    after = entry_row(engine, entry_id)
    assert not after.schedule_changed
    assert after.next_run_at <= last_scheduled_for(engine, entry_id) + timedelta(seconds=20)
    assert after.due_in <= timedelta(seconds=20)


def test_a_longer_interval_moves_the_next_run_out(engine: Engine) -> None:
    entry_id = insert_entry(engine, run_interval="1 minute")
    run_once(engine, entry_id)
    sql(engine, "UPDATE crmsync.job_queue_entries SET run_interval = '2 hours'")
    QueueManager(engine).reschedule()
    assert entry_row(engine, entry_id).next_run_at == (
        last_scheduled_for(engine, entry_id) + timedelta(hours=2))


def test_a_new_window_moves_the_next_run_into_it(engine: Engine) -> None:
    entry_id = insert_entry(engine, run_interval="1 minute")
    run_once(engine, entry_id)
    with engine.connect() as conn:
        hour = conn.scalar(sa.text("SELECT extract(hour FROM now() AT TIME ZONE 'UTC')::int"))
    start, end = f"{(hour + 3) % 24:02d}:00", f"{(hour + 4) % 24:02d}:00"
    sql(engine, "UPDATE crmsync.job_queue_entries SET starting_time = :s, ending_time = :e",
        s=start, e=end)
    QueueManager(engine).reschedule()
    row = entry_row(engine, entry_id)
    assert timedelta(hours=2) < row.due_in <= timedelta(hours=3)
    assert row.next_run_at.minute == 0


def test_an_explicit_next_run_in_the_same_statement_wins(engine: Engine) -> None:
    entry_id = insert_entry(engine, run_interval="1 minute")
    run_once(engine, entry_id)
    sql(engine, "UPDATE crmsync.job_queue_entries SET run_interval = '1 hour', "
                "next_run_at = now() + interval '5 hours'")
    assert not entry_row(engine, entry_id).schedule_changed
    assert QueueManager(engine).reschedule() == 0
    assert entry_row(engine, entry_id).due_in > timedelta(hours=4)


def test_restart_after_errors_is_due_by_the_rules(engine: Engine) -> None:
    entry_id = insert_entry(engine, run_interval="10 seconds", max_attempts=1)
    failed = run_once(engine, entry_id, Outcome.failure(RuntimeError("remote said no")))
    assert (failed.status, failed.next_run_at) == ("error", None)
    sql(engine, "UPDATE crmsync.job_queue_entries SET status = 'ready'")  # NAV's Restart
    QueueManager(engine).reschedule()
    row = entry_row(engine, entry_id)
    assert (row.status, row.attempts) == ("ready", 0)
    assert row.next_run_at <= last_scheduled_for(engine, entry_id) + timedelta(seconds=10)


def test_an_expiry_in_the_past_finishes_the_entry(engine: Engine) -> None:
    entry_id = insert_entry(engine, run_interval="1 minute")
    run_once(engine, entry_id)
    sql(engine, "UPDATE crmsync.job_queue_entries SET expires_at = now()")
    QueueManager(engine).reschedule()
    assert entry_row(engine, entry_id).status == "finished"


def test_a_flagged_entry_is_not_claimed_before_it_is_rescheduled(engine: Engine) -> None:
    entry_id = insert_entry(engine, run_interval="1 hour")
    sql(engine, "UPDATE crmsync.job_queue_entries SET run_interval = '2 hours', "
                "next_run_at = now() - interval '1 minute'")
    sql(engine, "UPDATE crmsync.job_queue_entries SET run_on_weekdays = '{1,2,3,4,5,6,7}', "
                "starting_time = '00:00'")
    queue = QueueManager(engine)
    assert queue.claim_next("w1", LEASE) is None
    queue.reschedule()
    claim = queue.claim_next("w1", LEASE)
    assert claim is not None and claim.entry.id == entry_id


# -- children wait for failed parents ----------------------------------------------------
def add_sync_job(engine: Engine, mapping: str, direction: str, status: str,
                 failed: int = 0) -> int:
    with engine.begin() as conn:
        job_id: int = conn.scalar(sa.text(
            "INSERT INTO crmsync.sync_jobs (mapping_name, direction, status, failed, "
            "finished_at) VALUES (:m, :d, :s, :f, now()) RETURNING id"),
            {"m": mapping, "d": direction, "s": status, "f": failed})
    return job_id


def family(engine: Engine) -> tuple[int, int]:
    add_mappings(engine, "CURRENCY", "CUSTOMER", "CONTACTS")
    sql(engine, "INSERT INTO crmsync.integration_table_mapping_dependencies VALUES "
                "('CUSTOMER', 'CURRENCY'), ('CONTACTS', 'CUSTOMER')")
    customer = insert_entry(engine, job_kind="sync_mapping", mapping_name="CUSTOMER")
    contacts = insert_entry(engine, job_kind="sync_mapping", mapping_name="CONTACTS")
    return customer, contacts


def test_children_wait_while_a_parents_last_pass_failed(engine: Engine) -> None:
    customer, contacts = family(engine)
    add_sync_job(engine, "CURRENCY", "to_integration", "success")
    job = add_sync_job(engine, "CURRENCY", "to_integration", "failed")
    queue = QueueManager(engine)
    assert queue.claim_next("w1", LEASE) is None
    for entry_id in (customer, contacts):  # CONTACTS through CUSTOMER: transitively
        row = entry_row(engine, entry_id)
        assert row.status == "waiting"
        assert row.waiting_reason == f"waiting for parent: CURRENCY sync job {job} failed"
    add_sync_job(engine, "CURRENCY", "from_integration", "success")  # the other direction
    assert queue.claim_next("w1", LEASE) is None
    add_sync_job(engine, "CURRENCY", "to_integration", "success")  # the parent recovered
    claim = queue.claim_next("w1", LEASE)
    assert claim is not None and claim.entry.id == customer
    assert entry_row(engine, customer).waiting_reason is None


def test_an_abandoned_parent_pass_holds_children_too(engine: Engine) -> None:
    customer, _ = family(engine)
    add_sync_job(engine, "CURRENCY", "to_integration", "abandoned")
    assert QueueManager(engine).claim_next("w1", LEASE) is None
    assert "abandoned" in entry_row(engine, customer).waiting_reason


def test_record_failures_of_a_parent_do_not_hold_children(engine: Engine) -> None:
    customer, _ = family(engine)
    add_sync_job(engine, "CURRENCY", "to_integration", "success", failed=7)
    claim = QueueManager(engine).claim_next("w1", LEASE)
    assert claim is not None and claim.entry.id == customer


def test_a_disabled_parent_holds_nobody(engine: Engine) -> None:
    customer, _ = family(engine)
    add_sync_job(engine, "CURRENCY", "to_integration", "failed")
    sql(engine, "UPDATE crmsync.integration_table_mappings SET enabled = false "
                "WHERE name = 'CURRENCY'")
    claim = QueueManager(engine).claim_next("w1", LEASE)
    assert claim is not None and claim.entry.id == customer
