"""Updates are recovered like creates, a resumed pass leaves nothing for the next run, and
writes carry the record's ETag: an update whose answer was lost followed by a second ERP edit
is no conflict; a CRM edit between crmsync's read and its write is never overwritten; deletes
pass against a service that enforces If-Match."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from tests.fixtures.emulator import PROFILES
from tests.sync.conftest import World, add_customers
from worker.emulator.app import Outcome
from worker.emulator.protocol import json_response
from worker.errors import JobCancelled

# Against Dataverse and a generic OData v4 service: nothing depends on one server's codes.
both_profiles = pytest.mark.parametrize("emulator_profile", PROFILES, indirect=True)


def _accounts(world: World) -> dict[str, dict[str, Any]]:
    return {r["accountnumber"]: r for r in world.remote("accounts")}


def _city(world: World, no: str) -> str:
    return str(world.scalar("SELECT city FROM erp_t.customer WHERE no = :no", no=no))


def _conflicts(world: World) -> int:
    return int(world.scalar("SELECT count(*) FROM crmsync.sync_job_errors "
                            "WHERE message LIKE '%conflict%'"))


def _pending(world: World) -> int:
    return int(world.scalar("SELECT count(*) FROM crmsync.couplings "
                            "WHERE pending_values IS NOT NULL"))


def _lose_the_answer_of_an_update(world: World, monkeypatch: pytest.MonkeyPatch,
                                  city: str) -> None:
    """C0002's city edited in the ERP and sent; the CRM applies the update, the answer never
    arrives."""
    world.sql("UPDATE erp_t.customer SET city = :c WHERE no = 'C0002'", c=city)
    monkeypatch.setenv("CRMSYNC_CRM_MAX_RETRIES", "0")
    world.emulator.faults.drop_after_write(count=1)
    (failed,) = world.sync("CUSTOMER")
    monkeypatch.delenv("CRMSYNC_CRM_MAX_RETRIES")
    assert failed.error is not None
    assert _accounts(world)["C0002"]["address1_city"] == city  # the CRM applied it
    assert _pending(world) == 1  # and crmsync knew what it would leave before sending


def _settled(world: World) -> None:
    """A further run writes nothing on either side."""
    again = world.counts("CUSTOMER")
    for direction in ("to", "from"):
        c = again[("CUSTOMER", direction)]
        assert c["inserted"] + c["modified"] + c["deleted"] + c["failed"] == 0, (direction, c)
    assert world.scalar("SELECT count(*) FROM crmsync.couplings WHERE skipped") == 0
    assert _pending(world) == 0


@both_profiles
def test_a_lost_update_answer_then_a_second_erp_edit_is_no_conflict(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    world.counts("CURRENCY")
    add_customers(world, 3)
    world.counts("CUSTOMER")
    _lose_the_answer_of_an_update(world, monkeypatch, "First edit")
    world.sql("UPDATE erp_t.customer SET city = 'Second edit' WHERE no = 'C0002'")
    counts = world.counts("CUSTOMER")
    to, back = counts[("CUSTOMER", "to")], counts[("CUSTOMER", "from")]
    assert to["modified"] == 1 and to["failed"] == 0 and to["skipped"] == 0
    assert back["modified"] == 0 and back["failed"] == 0
    assert _accounts(world)["C0002"]["address1_city"] == "Second edit"
    assert _city(world, "C0002") == "Second edit"
    assert _conflicts(world) == 0
    _settled(world)


@both_profiles
def test_a_lost_update_answer_alone_is_recognised_as_crmsyncs_own_write(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    world.counts("CURRENCY")
    add_customers(world, 3)
    world.counts("CUSTOMER")
    _lose_the_answer_of_an_update(world, monkeypatch, "Only edit")
    counts = world.counts("CUSTOMER")
    assert counts[("CUSTOMER", "to")]["failed"] == 0
    assert counts[("CUSTOMER", "from")]["modified"] == 0  # not taken for a CRM user's edit
    assert _city(world, "C0002") == "Only edit"
    _settled(world)


@both_profiles
def test_a_crm_edit_after_a_lost_update_answer_is_still_a_conflict(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    world.counts("CURRENCY")
    add_customers(world, 3)
    world.counts("CUSTOMER")
    _lose_the_answer_of_an_update(world, monkeypatch, "First edit")
    account = _accounts(world)["C0002"]
    world.patch("accounts", world.rid(account), {"address1_city": "CRM user's city"})
    world.sql("UPDATE erp_t.customer SET city = 'Second edit' WHERE no = 'C0002'")
    counts = world.counts("CUSTOMER")
    assert counts[("CUSTOMER", "to")]["failed"] == 1
    assert _conflicts(world) >= 1
    assert _accounts(world)["C0002"]["address1_city"] == "CRM user's city"  # not overwritten
    assert _city(world, "C0002") == "Second edit"


def _never_deliver_the_next_batch(world: World) -> None:
    """The next $batch is lost on its way: never applied, never answered (a worker killed
    after committing its updates as pending, before they reached the CRM)."""
    app = world.emulator.emulator
    original = app.handle
    lost: list[bool] = []

    def drop_first(request: Any) -> Any:
        if request.method == "POST" and request.path.endswith("$batch") and not lost:
            lost.append(True)
            return Outcome(json_response(503, {"error": {"code": "0x0", "message": "lost"}}),
                           drop=True)
        return original(request)

    app.handle = drop_first  # type: ignore[method-assign]


@both_profiles
def test_a_lost_update_answer_then_an_update_never_delivered_is_no_conflict(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """crmsync's own first write, recognised by the next pass, stays recognised when that
    pass's update is lost too (its pending values replace the first's)."""
    world.counts("CURRENCY")
    add_customers(world, 3)
    world.counts("CUSTOMER")
    _lose_the_answer_of_an_update(world, monkeypatch, "First edit")
    world.sql("UPDATE erp_t.customer SET city = 'Second edit' WHERE no = 'C0002'")
    _never_deliver_the_next_batch(world)
    monkeypatch.setenv("CRMSYNC_CRM_MAX_RETRIES", "0")
    (failed,) = world.sync("CUSTOMER")
    monkeypatch.delenv("CRMSYNC_CRM_MAX_RETRIES")
    assert failed.error is not None
    assert _accounts(world)["C0002"]["address1_city"] == "First edit"
    world.sql("UPDATE erp_t.customer SET city = 'Third edit' WHERE no = 'C0002'")
    to = world.counts("CUSTOMER")[("CUSTOMER", "to")]
    assert (to["modified"], to["failed"], to["skipped"]) == (1, 0, 0)
    assert _accounts(world)["C0002"]["address1_city"] == "Third edit"
    assert _conflicts(world) == 0
    _settled(world)


@both_profiles
def test_a_lost_update_answer_then_a_refused_update_is_no_conflict(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """crmsync's own first write, recognised by the next pass, stays recognised when that
    pass's update is refused (the refusal is recorded; the first write's values are not
    forgotten with it)."""
    world.counts("CURRENCY")
    add_customers(world, 3)
    world.counts("CUSTOMER")
    _lose_the_answer_of_an_update(world, monkeypatch, "First edit")
    world.sql("UPDATE erp_t.customer SET city = 'Second edit' WHERE no = 'C0002'")
    app = world.emulator.emulator
    original = app.handle

    def refuse_updates(request: Any) -> Any:
        if request.method == "PATCH":
            return Outcome(json_response(400, {"error": {"code": "0x0",
                                                         "message": "refused"}}))
        return original(request)

    app.handle = refuse_updates  # type: ignore[method-assign]
    try:
        with monkeypatch.context() as one_by_one:
            one_by_one.setenv("CRMSYNC_CRM_BATCH", "false")  # one request per record
            to = world.counts("CUSTOMER")[("CUSTOMER", "to")]
    finally:
        app.handle = original  # type: ignore[method-assign]
    assert to["failed"] == 1 and _pending(world) == 0  # the refusal was recorded
    assert _accounts(world)["C0002"]["address1_city"] == "First edit"
    to = world.counts("CUSTOMER")[("CUSTOMER", "to")]
    assert (to["modified"], to["failed"], to["skipped"]) == (1, 0, 0)
    assert _accounts(world)["C0002"]["address1_city"] == "Second edit"
    assert _conflicts(world) == 0
    _settled(world)


def _edit_in_the_crm_before_the_next_write(world: World, no: str,
                                           values: dict[str, Any]) -> list[bool]:
    """A CRM user edits record ``no`` after crmsync has read it and before its next write
    ($batch) arrives; returns a list that holds True once that happened."""
    app = world.emulator.emulator
    original = app.handle
    record = _accounts(world)[no]
    done: list[bool] = []
    lock = threading.Lock()

    def edit_first(request: Any) -> Any:
        if request.method == "POST" and request.path.endswith("$batch"):
            with lock:
                if not done:
                    done.append(True)
                    world.patch("accounts", world.rid(record), values)
        return original(request)

    app.handle = edit_first  # type: ignore[method-assign]
    return done


@both_profiles
def test_a_crm_edit_between_read_and_write_of_another_field_flows_both_ways(
        world: World) -> None:
    world.counts("CURRENCY")
    add_customers(world, 3)
    world.counts("CUSTOMER")
    world.sql("UPDATE erp_t.customer SET city = 'ERP city' WHERE no = 'C0001'")
    edited = _edit_in_the_crm_before_the_next_write(world, "C0001",
                                                    {"telephone1": "+31 20 555 0100"})
    counts = world.counts("CUSTOMER")
    assert edited == [True]
    assert counts[("CUSTOMER", "to")]["modified"] == 1
    assert counts[("CUSTOMER", "to")]["failed"] == 0
    remote = _accounts(world)["C0001"]
    assert remote["address1_city"] == "ERP city"
    assert remote["telephone1"] == "+31 20 555 0100"  # the CRM user's edit is kept...
    assert world.scalar("SELECT phone_no FROM erp_t.customer WHERE no = 'C0001'") == \
        "+31 20 555 0100"  # ...and reaches the ERP
    _settled(world)


@both_profiles
def test_a_crm_edit_between_read_and_write_of_the_same_field_is_a_conflict(
        world: World) -> None:
    world.counts("CURRENCY")
    add_customers(world, 3)
    world.counts("CUSTOMER")
    world.sql("UPDATE erp_t.customer SET city = 'ERP city' WHERE no = 'C0001'")
    edited = _edit_in_the_crm_before_the_next_write(world, "C0001",
                                                    {"address1_city": "CRM city"})
    counts = world.counts("CUSTOMER")
    assert edited == [True]
    assert counts[("CUSTOMER", "to")]["failed"] == 1
    assert _conflicts(world) >= 1  # reported by each pass, until a user settles it
    assert _accounts(world)["C0001"]["address1_city"] == "CRM city"  # never overwritten
    assert _city(world, "C0001") == "ERP city"


@both_profiles
def test_a_run_after_an_interrupted_pass_leaves_nothing_pending(world: World) -> None:
    """The pass resumed with its old snapshot is followed, in the same run, by a fresh one
    over the changes committed since."""
    world.counts("CURRENCY")
    add_customers(world, 1800)  # four chunks: the first one's progress is committed
    # before the fourth is prepared (two chunks are in flight at most)

    def stop_after_first_chunk() -> None:
        if world.scalar("SELECT local_pass_done_key FROM crmsync.integration_table_mappings "
                        "WHERE name = 'CUSTOMER'") is not None:
            raise JobCancelled("stopped for the test")

    with pytest.raises(JobCancelled):
        world.sync_engine.run_mapping("CUSTOMER", check_cancelled=stop_after_first_chunk)
    add_customers(world, 30, start=2001)  # committed after the interrupted pass's snapshot
    world.sql("UPDATE erp_t.customer SET city = 'Edited after the stop' WHERE no = 'C0001'")
    to = world.counts("CUSTOMER")[("CUSTOMER", "to")]
    assert to["failed"] == 0
    accounts = _accounts(world)
    assert len(accounts) == 1830
    assert accounts["C0001"]["address1_city"] == "Edited after the stop"
    _settled(world)


@pytest.mark.parametrize("emulator_profile", ["odata-etag"], indirect=True)
def test_updates_and_deletes_against_a_service_that_enforces_if_match(world: World) -> None:
    world.sql("UPDATE crmsync.integration_table_mappings "
              "SET deletion_conflict_resolution = 'propagate_delete' WHERE name = 'CUSTOMER'")
    world.counts("CURRENCY")
    add_customers(world, 5)
    assert world.counts("CUSTOMER")[("CUSTOMER", "to")]["inserted"] == 5
    world.sql("UPDATE erp_t.customer SET city = 'Gent' WHERE no = 'C0001'")
    world.sql("DELETE FROM erp_t.customer WHERE no IN ('C0003', 'C0004', 'C0005')")
    to = world.counts("CUSTOMER")[("CUSTOMER", "to")]
    assert (to["modified"], to["deleted"], to["failed"]) == (1, 3, 0)
    accounts = _accounts(world)
    assert sorted(accounts) == ["C0001", "C0002"]
    assert accounts["C0001"]["address1_city"] == "Gent"
    _settled(world)


@pytest.mark.parametrize("emulator_profile", [*PROFILES, "odata-etag"], indirect=True)
def test_a_lost_delete_answer_is_recognised_by_the_next_pass(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """A delete the CRM applied whose answer never arrived: the next pass finds the record
    gone on both sides and only forgets the coupling (no failure, nothing created again)."""
    world.sql("UPDATE crmsync.integration_table_mappings "
              "SET deletion_conflict_resolution = 'propagate_delete' WHERE name = 'CUSTOMER'")
    world.counts("CURRENCY")
    add_customers(world, 3)
    world.counts("CUSTOMER")
    world.sql("DELETE FROM erp_t.customer WHERE no = 'C0003'")
    monkeypatch.setenv("CRMSYNC_CRM_MAX_RETRIES", "0")
    world.emulator.faults.drop_after_write(count=1)
    (failed,) = world.sync("CUSTOMER")
    monkeypatch.delenv("CRMSYNC_CRM_MAX_RETRIES")
    assert failed.error is not None
    assert sorted(_accounts(world)) == ["C0001", "C0002"]  # the CRM applied it
    assert world.scalar("SELECT count(*) FROM crmsync.couplings "
                        "WHERE mapping_name = 'CUSTOMER'") == 3  # not recorded
    counts = world.counts("CUSTOMER")
    to, back = counts[("CUSTOMER", "to")], counts[("CUSTOMER", "from")]
    assert (to["deleted"], to["inserted"], to["failed"]) == (1, 0, 0)
    assert (back["inserted"], back["deleted"], back["failed"]) == (0, 0, 0)
    assert sorted(_accounts(world)) == ["C0001", "C0002"]
    assert world.scalar("SELECT count(*) FROM erp_t.customer") == 2
    assert world.scalar("SELECT count(*) FROM crmsync.couplings "
                        "WHERE mapping_name = 'CUSTOMER'") == 2
    _settled(world)
