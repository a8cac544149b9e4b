"""Claims in batches and outcomes recorded in batches, against a real database: one claim
takes as many entries as free slots in priority order but never two of one category or
mapping, nor sync_all_modified beside a sync entry; what two workers claim at the same
moment never breaks a rule (the database refuses the later one); a failed parent's
children wait as the parent's newest sync job changes; several outcomes recorded together
each get their log row and next run."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from tests.queue.test_claims import entry_row, log_rows
from tests.queue.test_schema import add_mappings, insert_entry
from worker.db.engine import translate_errors
from worker.errors import DatabaseError
from worker.queue.manager import Outcome, QueueManager

LEASE = timedelta(seconds=30)


def test_one_claim_takes_a_batch_by_priority_and_keeps_the_rules(engine: Engine) -> None:
    add_mappings(engine, "M")
    first = insert_entry(engine, priority=1, category_code="X")
    same_category = insert_entry(engine, priority=2, category_code="X")
    plain = insert_entry(engine, priority=3)
    everything = insert_entry(engine, job_kind="sync_all_modified", priority=4)
    sync = insert_entry(engine, job_kind="sync_mapping", mapping_name="M", priority=5)
    queue = QueueManager(engine)
    claims = queue.claim("w1", LEASE, 8)
    assert [c.entry.id for c in claims] == [first, plain, everything]
    assert queue.claim("w2", LEASE, 8) == []
    assert entry_row(engine, same_category).waiting_reason == "waiting for category X"
    assert entry_row(engine, sync).waiting_reason == "waiting: mapping running in another entry"
    # The slots bound the batch.
    queue.finish_many([(c, Outcome.success()) for c in claims], "w1")
    assert [c.entry.id for c in queue.claim("w1", LEASE, 1)] == [same_category]


def test_outcomes_recorded_together_each_get_their_log_row_and_next_run(
        engine: Engine) -> None:
    ids = [insert_entry(engine, run_interval="10 minutes") for _ in range(3)]
    queue = QueueManager(engine)
    claims = queue.claim("w1", LEASE, 3)
    assert sorted(c.entry.id for c in claims) == ids
    queue.finish_many([(claims[0], Outcome.success("done")),
                       (claims[1], Outcome.failure(RuntimeError("boom"))),
                       (claims[2], Outcome.success("done"))], "w1")
    assert Counter(r.status for r in log_rows(engine)) == {"success": 2, "error": 1}
    rows = {i: entry_row(engine, i) for i in ids}
    assert all(r.status == "ready" and r.locked_by is None for r in rows.values())
    assert rows[claims[1].entry.id].attempts == 1
    assert rows[claims[0].entry.id].due_in > timedelta(minutes=9)


def test_a_row_that_cannot_be_read_back_stops_only_its_own_run(engine: Engine) -> None:
    """Recorded together with a healthy run, a row broken during its run (its constraint
    dropped, as on a restored old dump) goes to error alone; the healthy run is recorded."""
    good = insert_entry(engine, run_interval="10 minutes")
    bad = insert_entry(engine, run_interval="10 minutes")
    queue = QueueManager(engine)
    claims = {c.entry.id: c for c in queue.claim("w1", LEASE, 2)}
    with engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE crmsync.job_queue_entries DROP CONSTRAINT "
                             "job_queue_entries_expires_at_must_be_in_1970_to_2999"))
        conn.execute(sa.text("UPDATE crmsync.job_queue_entries SET expires_at = 'infinity' "
                             "WHERE id = :id"), {"id": bad})
    queue.finish_many([(claims[good], Outcome.success()), (claims[bad], Outcome.success())],
                      "w1")
    assert entry_row(engine, good).status == "ready"
    with engine.connect() as conn:
        status, error = conn.execute(sa.text(
            "SELECT status, last_error FROM crmsync.job_queue_entries WHERE id = :id"),
            {"id": bad}).one()
    assert status == "error" and "column expires_at" in error
    assert {r.entry_id: r.status for r in log_rows(engine)} == {good: "success",
                                                                bad: "success"}


def test_the_database_keeps_sync_all_modified_apart_from_sync_entries(engine: Engine) -> None:
    add_mappings(engine, "M", "N")
    one = insert_entry(engine, job_kind="sync_mapping", mapping_name="M")
    two = insert_entry(engine, job_kind="sync_mapping", mapping_name="N")
    everything = insert_entry(engine, job_kind="sync_all_modified")
    running = ("UPDATE crmsync.job_queue_entries SET status = 'in_process', locked_by = 'w', "
               "lease_expires_at = now() + interval '1 minute' WHERE id = :id")
    with engine.begin() as conn:
        conn.execute(sa.text(running), {"id": one})
        conn.execute(sa.text(running), {"id": two})  # two sync entries: fine
    with pytest.raises(DatabaseError, match="sync_all_modified_runs_alone"), \
            translate_errors(), engine.begin() as conn:
        conn.execute(sa.text(running), {"id": everything})


def test_concurrent_batches_never_run_a_category_or_mapping_twice(engine: Engine) -> None:
    add_mappings(engine, *(f"M{i}" for i in range(4)))
    for n in range(60):
        insert_entry(engine, category_code=f"C{n % 3}" if n % 2 else None,
                     job_kind="sync_mapping" if n % 5 == 0 else "cleanup",
                     mapping_name=f"M{n % 4}" if n % 5 == 0 else None)
    lock = threading.Lock()
    start = threading.Barrier(4)
    errors: list[BaseException] = []

    def claimer(name: str) -> None:
        try:
            queue = QueueManager(engine)
            start.wait()
            for _ in range(30):
                claims = queue.claim(name, LEASE, 4)
                with engine.connect() as conn:
                    now_running = conn.execute(sa.text(
                        "SELECT category_code, mapping_name FROM crmsync.job_queue_entries "
                        "WHERE status = 'in_process'")).all()
                with lock:
                    cats = [r.category_code for r in now_running if r.category_code]
                    maps = [r.mapping_name for r in now_running if r.mapping_name]
                    assert len(cats) == len(set(cats)) and len(maps) == len(set(maps))
                queue.finish_many([(c, Outcome.success()) for c in claims], name)
        except BaseException as exc:  # a failed check in a thread fails the test
            errors.append(exc)

    threads = [threading.Thread(target=claimer, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    logged = log_rows(engine)
    assert len({(r.entry_id, r.scheduled_for) for r in logged}) == len(logged)
    # No span check on the log's stamps: started_at is the claim transaction's now(), which
    # may precede the commit of the previous run's finish that the claim waited for. The
    # exclusivity is checked above, at every claim, on what is running.


def test_children_follow_their_parents_newest_sync_job(engine: Engine) -> None:
    add_mappings(engine, "PARENT", "CHILD", "GRANDCHILD")
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO crmsync.integration_table_mapping_dependencies VALUES "
            "('CHILD', 'PARENT'), ('GRANDCHILD', 'CHILD')"))
        job = conn.scalar(sa.text(
            "INSERT INTO crmsync.sync_jobs (mapping_name, direction, status) "
            "VALUES ('PARENT', 'to_integration', 'failed') RETURNING id"))
    grandchild = insert_entry(engine, job_kind="sync_mapping", mapping_name="GRANDCHILD")
    queue = QueueManager(engine)
    assert queue.claim("w1", LEASE, 4) == []
    assert entry_row(engine, grandchild).waiting_reason == (
        f"waiting for parent: PARENT sync job {job} failed")
    with engine.begin() as conn:  # the parent's next pass succeeds
        conn.execute(sa.text(
            "INSERT INTO crmsync.sync_jobs (mapping_name, direction, status) "
            "VALUES ('PARENT', 'to_integration', 'success')"))
    assert [c.entry.id for c in queue.claim("w1", LEASE, 4)] == [grandchild]
