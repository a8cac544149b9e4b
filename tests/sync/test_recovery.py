"""Recovery that never loses an edit: writes whose answer was lost are read back and
reconciled, a pass that fails keeps what the CRM confirmed, an interrupted pass resumes, a
passing outage skips nothing, children wait for a failed parent, and the lag gauge counts
only changes no pass has read."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from tests.fixtures.emulator import PROFILES
from tests.sync.conftest import World, add_customers
from worker.emulator.app import Outcome
from worker.emulator.protocol import json_response
from worker.errors import JobCancelled
from worker.sync import capture

# Every test runs against Dataverse and against a generic OData v4 service (key ID, POST
# creates, a duplicate key answered 500, relative $batch parts): nothing may depend on one
# server's status codes.
pytestmark = pytest.mark.parametrize("emulator_profile", PROFILES, indirect=True)


def _accounts(world: World) -> dict[str, dict[str, Any]]:
    return {r["accountnumber"]: r for r in world.remote("accounts")}


def _skipped(world: World) -> int:
    return int(world.scalar("SELECT count(*) FROM crmsync.couplings WHERE skipped"))


def _local_cities(world: World) -> dict[str, str]:
    return dict(world.sql("SELECT no, city FROM erp_t.customer"))


def test_create_applied_with_its_answer_lost_then_an_erp_edit_reaches_both_sides(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    world.counts("CURRENCY")
    add_customers(world, 3)
    monkeypatch.setenv("CRMSYNC_CRM_MAX_RETRIES", "0")
    world.emulator.faults.drop_after_write(count=1)  # the $batch is applied, never answered
    (failed,) = world.sync("CUSTOMER")
    assert failed.error is not None
    assert sorted(_accounts(world)) == ["C0001", "C0002", "C0003"]  # the CRM has them
    states = {r.state for r in world.sql("SELECT state FROM crmsync.couplings "
                                         "WHERE mapping_name = 'CUSTOMER'")}
    assert states == {"creating_remote"}
    job = world.sql("SELECT status, finished_at FROM crmsync.sync_jobs WHERE mapping_name = "
                    "'CUSTOMER' ORDER BY id DESC LIMIT 1")[0]
    assert job.status == "failed" and job.finished_at is not None

    world.sql("UPDATE erp_t.customer SET city = 'Edited after the crash' WHERE no = 'C0002'")
    counts = world.counts("CUSTOMER")
    to, back = counts[("CUSTOMER", "to")], counts[("CUSTOMER", "from")]
    assert to["inserted"] == 3 and to["failed"] == 0
    assert back["modified"] == 0 and back["failed"] == 0
    assert _accounts(world)["C0002"]["address1_city"] == "Edited after the crash"
    assert _local_cities(world)["C0002"] == "Edited after the crash"
    assert len(world.remote("accounts")) == 3  # no duplicate

    again = world.counts("CUSTOMER")  # nothing left to do, no conflict, no skip
    assert sum(again[("CUSTOMER", "to")][k] for k in ("inserted", "modified", "failed")) == 0
    assert sum(again[("CUSTOMER", "from")][k] for k in ("inserted", "modified", "failed")) == 0
    assert _skipped(world) == 0


def test_a_crm_edit_of_a_record_whose_create_answer_was_lost_is_kept(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    world.counts("CURRENCY")
    add_customers(world, 2)
    monkeypatch.setenv("CRMSYNC_CRM_MAX_RETRIES", "0")
    world.emulator.faults.drop_after_write(count=1)
    world.sync("CUSTOMER")  # applied, answer lost: both still creating_remote
    monkeypatch.delenv("CRMSYNC_CRM_MAX_RETRIES")
    first = _accounts(world)["C0001"]
    world.patch("accounts", world.rid(first), {"telephone1": "+31 20 555"})  # a CRM user
    world.sql("UPDATE erp_t.customer SET city = 'ERP edit' WHERE no = 'C0001'")  # an ERP user
    counts = world.counts("CUSTOMER")
    assert counts[("CUSTOMER", "to")]["failed"] == counts[("CUSTOMER", "from")]["failed"] == 0
    account = _accounts(world)["C0001"]
    local = world.sql("SELECT city, phone_no FROM erp_t.customer WHERE no = 'C0001'")[0]
    assert (account["address1_city"], account["telephone1"]) == ("ERP edit", "+31 20 555")
    assert (local.city, local.phone_no) == ("ERP edit", "+31 20 555")
    assert _skipped(world) == 0


def test_a_create_answered_already_exists_is_read_back_not_assumed(world: World) -> None:
    """The CRM already holds the record (an earlier attempt) with other values: crmsync
    sends what differs instead of taking its own values for the CRM's."""
    world.counts("CURRENCY")
    add_customers(world, 1)
    # Applied, never answered: the retry is answered 412 by Dataverse, 500 by the other.
    world.emulator.faults.drop_after_write(count=1)
    world.counts("CUSTOMER")
    (account,) = world.remote("accounts")
    assert account["address1_city"] == "City 1"
    coupling = world.coupling("CUSTOMER", local_id=world.local_id("erp_t.customer", "C0001"))
    assert coupling.state == "coupled" and coupling.remote_id == world.rid(account)
    # The stored snapshot is what the CRM holds: a CRM edit later flows normally.
    world.patch("accounts", world.rid(account), {"telephone1": "+44 1"})
    counts = world.counts("CUSTOMER")
    assert counts[("CUSTOMER", "from")]["modified"] == 1
    assert world.scalar("SELECT phone_no FROM erp_t.customer WHERE no = 'C0001'") == "+44 1"


def test_a_refusing_crm_skips_nothing_and_everything_syncs_after(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRMSYNC_CRM_MAX_RETRIES", "1")
    monkeypatch.setenv("CRMSYNC_CRM_RETRY_BASE", "0")
    add_customers(world, 40)
    world.emulator.faults.unavailable(methods=["POST", "PATCH", "DELETE"])
    for _ in range(3):
        summaries = {s.mapping: s for s in world.sync()}
        assert summaries["CURRENCY"].error is not None
        assert summaries["CUSTOMER"].held_back  # its lookups would only fail
    world.emulator.faults.clear()
    # A flaky CRM: a third of the writes answered 500 for a while. Those records fail, are
    # retried by each pass and are never skipped, however often the message repeats.
    world.emulator.faults.error_rate(0.34, seed=7, methods=["POST", "PATCH"])
    for _ in range(3):
        world.sync()
    assert _skipped(world) == 0
    world.emulator.faults.clear()
    for _ in range(2):
        world.sync()
    assert sorted(_accounts(world)) == [f"C{n:04d}" for n in range(1, 41)]
    assert world.scalar("SELECT count(*) FROM crmsync.couplings WHERE state <> 'coupled' "
                        "OR skipped") == 0
    counts = world.counts()
    assert all(c["inserted"] + c["modified"] + c["failed"] == 0 for c in counts.values())


def test_a_failing_pass_keeps_what_the_crm_confirmed(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """The connection fails after some batches went through: those records are coupled and
    counted; the pass is recorded failed with an error row; the next run sends only the
    rest."""
    monkeypatch.setenv("CRMSYNC_CRM_BATCH_SIZE", "10")
    monkeypatch.setenv("CRMSYNC_CRM_CONCURRENCY", "1")
    monkeypatch.setenv("CRMSYNC_CRM_MAX_RETRIES", "0")
    world.counts("CURRENCY")
    add_customers(world, 50)
    app = world.emulator.emulator
    original = app.handle
    batches = []

    def fail_after_three_batches(request: Any) -> Any:
        if request.method == "POST" and request.path.endswith("$batch"):
            batches.append(1)
            if len(batches) > 3:  # the service goes away
                return Outcome(json_response(503, {"error": {"code": "0x0",
                                                             "message": "down"}}))
        return original(request)

    app.handle = fail_after_three_batches  # type: ignore[method-assign]
    try:
        (summary,) = world.sync("CUSTOMER")
    finally:
        app.handle = original  # type: ignore[method-assign]
    assert summary.error is not None
    job = world.sql("SELECT * FROM crmsync.sync_jobs WHERE mapping_name = 'CUSTOMER'")[0]
    assert job.status == "failed" and job.inserted == 30 and job.finished_at is not None
    assert world.scalar("SELECT count(*) FROM crmsync.sync_job_errors WHERE job_id = :j "
                        "AND message LIKE 'pass failed:%'", j=job.id) == 1
    assert world.scalar("SELECT count(*) FROM crmsync.couplings WHERE mapping_name = "
                        "'CUSTOMER' AND state = 'coupled'") == 30
    counts = world.counts("CUSTOMER")
    assert counts[("CUSTOMER", "to")]["inserted"] == 20
    assert len(world.remote("accounts")) == 50


def test_an_interrupted_pass_resumes_after_its_last_finished_chunk(world: World) -> None:
    world.counts("CURRENCY")
    add_customers(world, 1800)  # four chunks of 500, two of them in flight at most
    chunks_done = []

    def stop_after_first_chunk() -> None:
        done = world.scalar("SELECT local_pass_done_key FROM crmsync.integration_table_mappings "
                            "WHERE name = 'CUSTOMER'")
        if done is not None:
            chunks_done.append(done)
            raise JobCancelled("stopped for the test")

    with pytest.raises(JobCancelled):
        world.sync_engine.run_mapping("CUSTOMER", check_cancelled=stop_after_first_chunk)
    # What the stopped pass recorded: whole chunks, and its progress says up to where.
    done_key = world.scalar("SELECT local_pass_done_key FROM crmsync.integration_table_mappings "
                            "WHERE name = 'CUSTOMER'")
    coupled = world.scalar("SELECT count(*) FROM crmsync.couplings WHERE mapping_name = "
                           "'CUSTOMER' AND state = 'coupled'")
    assert coupled in (500, 1000, 1500)
    assert world.scalar("SELECT count(*) FROM crmsync.couplings c JOIN erp_t.customer r ON "
                        "CAST(r.id AS text) = c.local_id WHERE c.state = 'coupled' "
                        "AND CAST(r.id AS text) > :k", k=done_key) == 0
    counts = world.counts("CUSTOMER")
    to = counts[("CUSTOMER", "to")]
    # The records of the recorded chunks are neither sent nor even compared again.
    assert to["inserted"] == 1800 - coupled and to["unchanged"] == 0
    assert len(world.remote("accounts")) == 1800
    assert world.scalar("SELECT local_pass_snapshot FROM crmsync.integration_table_mappings "
                        "WHERE name = 'CUSTOMER'") is None


def test_a_job_left_running_by_a_dead_process_is_closed_as_abandoned(world: World) -> None:
    world.sql("INSERT INTO crmsync.sync_jobs (mapping_name, direction) "
              "VALUES ('CURRENCY', 'to_integration')")
    world.counts("CURRENCY")
    rows = world.sql("SELECT status, finished_at FROM crmsync.sync_jobs ORDER BY id")
    assert rows[0].status == "abandoned" and rows[0].finished_at is not None
    assert rows[1].status == "success"


def test_a_lookup_not_coupled_yet_is_retried_and_never_skipped(world: World) -> None:
    world.counts("CURRENCY")
    world.sql("INSERT INTO erp_t.currency (code, description) VALUES ('JPY', 'Yen')")
    world.sql("UPDATE crmsync.integration_table_mappings SET enabled = false "
              "WHERE name = 'CURRENCY'")
    add_customers(world, 2, currency="JPY")
    for _ in range(3):
        counts = world.counts("CUSTOMER")
        assert counts[("CUSTOMER", "to")]["failed"] == 2
    assert _skipped(world) == 0
    world.sql("UPDATE crmsync.integration_table_mappings SET enabled = true "
              "WHERE name = 'CURRENCY'")
    world.counts("CURRENCY")
    counts = world.counts("CUSTOMER")
    assert counts[("CUSTOMER", "to")]["inserted"] == 2
    assert None not in {world.lookup(r, "transactioncurrencyid")
                        for r in world.remote("accounts")}


def test_the_lag_gauge_ignores_an_idle_transaction_elsewhere(world: World) -> None:
    world.counts("CURRENCY")
    add_customers(world, 5)
    with world.engine.connect() as idle:
        idle.execute(sa.text("SELECT pg_current_xact_id()"))  # holds an xid, stays open
        world.sql("UPDATE erp_t.customer SET city = 'Moved' WHERE no = 'C0001'")
        world.counts("CUSTOMER")
        with world.engine.connect() as conn:
            assert capture.pending_change_age(conn).get("CUSTOMER", 0.0) == 0.0
        world.sql("UPDATE erp_t.customer SET city = 'Moved again' WHERE no = 'C0002'")
        with world.engine.connect() as conn:
            assert capture.pending_change_age(conn).get("CUSTOMER", 0.0) > 0.0
        idle.rollback()
