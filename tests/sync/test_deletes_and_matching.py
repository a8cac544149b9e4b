"""Deletes under each deletion policy, match-based coupling, and the messages of
``crmsync check`` for broken mapping rows."""

from __future__ import annotations

import pytest
import requests

from tests.sync.conftest import World, add_customers
from worker.sync.check import check_all
from worker.sync.matching import couple_by_match


def set_policy(world: World, policy: str) -> None:
    world.sql("UPDATE crmsync.integration_table_mappings SET deletion_conflict_resolution = :p "
              "WHERE name = 'CUSTOMER'", p=policy)


@pytest.mark.parametrize("policy", ["none", "remove_coupling", "propagate_delete",
                                    "restore_records"])
def test_local_delete_under_each_policy(world: World, policy: str) -> None:
    set_policy(world, policy)
    add_customers(world, 3)
    world.counts()
    if policy == "remove_coupling":
        # Else the uncoupled account would come back as a new customer when it next changes.
        world.sql("UPDATE crmsync.integration_table_mappings SET sync_only_coupled = true "
                  "WHERE name = 'CUSTOMER'")
    world.sql("DELETE FROM erp_t.customer WHERE no = 'C0002'")
    counts = world.counts("CUSTOMER")
    to = counts[("CUSTOMER", "to")]
    remote_numbers = sorted(r["accountnumber"] for r in world.remote("accounts"))
    local_numbers = [r.no for r in world.sql("SELECT no FROM erp_t.customer ORDER BY no")]
    couplings = world.scalar("SELECT count(*) FROM crmsync.couplings "
                             "WHERE mapping_name = 'CUSTOMER'")
    if policy == "none":
        assert to["failed"] == 1
        assert remote_numbers == ["C0001", "C0002", "C0003"] and couplings == 3
    elif policy == "remove_coupling":
        assert to["uncoupled"] == 1
        assert remote_numbers == ["C0001", "C0002", "C0003"] and couplings == 2
    elif policy == "propagate_delete":
        assert to["deleted"] == 1
        assert remote_numbers == ["C0001", "C0003"] and couplings == 2
    else:
        assert to["inserted"] == 1
        assert local_numbers == ["C0001", "C0002", "C0003"] and couplings == 3
        assert remote_numbers == ["C0001", "C0002", "C0003"]


@pytest.mark.parametrize("policy", ["none", "remove_coupling", "propagate_delete",
                                    "restore_records"])
def test_remote_delete_seen_when_the_local_record_changes(world: World, policy: str) -> None:
    set_policy(world, policy)
    add_customers(world, 2)
    world.counts()
    account = world.remote_one("accounts", "accountnumber eq 'C0001'")
    world.delete("accounts", account["accountid"])
    world.sql("UPDATE erp_t.customer SET city = 'Moved' WHERE no = 'C0001'")
    to = world.counts("CUSTOMER")[("CUSTOMER", "to")]
    remote = {r["accountnumber"]: r for r in world.remote("accounts")}
    local = [r.no for r in world.sql("SELECT no FROM erp_t.customer ORDER BY no")]
    if policy == "none":
        assert to["failed"] == 1 and "was deleted" in world.scalar(
            "SELECT message FROM crmsync.sync_job_errors")
    elif policy == "remove_coupling":
        # Uncoupled, then created again (the mapping creates records for uncoupled ones).
        assert to["uncoupled"] == 1 and to["inserted"] == 1
        assert remote["C0001"]["address1_city"] == "Moved"
    elif policy == "propagate_delete":
        assert to["deleted"] == 1 and local == ["C0002"]
    else:
        assert to["inserted"] == 1
        assert remote["C0001"]["accountid"] != account["accountid"]
        assert remote["C0001"]["address1_city"] == "Moved"


def test_match_based_coupling_unique_and_ambiguous(world: World) -> None:
    world.sql("UPDATE crmsync.integration_field_mappings SET use_for_matching = true "
              "WHERE mapping_name = 'CUSTOMER' AND local_column = 'city'")
    add_customers(world, 3, currency=None)
    accounts = f"{world.emulator.base_url}/accounts"
    for city, name in (("City 1", "Existing 1"), ("city 2", "Existing 2a"),
                       ("City 2", "Existing 2b")):
        assert requests.post(accounts, json={"address1_city": city, "name": name},
                             timeout=10).status_code in (201, 204)
    result = couple_by_match(world.sync_engine, "CUSTOMER")
    assert len(result.coupled) == 1
    assert [k for k, _ in result.ambiguous] == [world.local_id("erp_t.customer", "C0002")]
    assert result.unmatched == [world.local_id("erp_t.customer", "C0003")]
    coupling = world.coupling("CUSTOMER", local_id=world.local_id("erp_t.customer", "C0001"))
    assert coupling.remote_id == world.remote_one("accounts", "name eq 'Existing 1'")["accountid"]
    # No duplicate for the coupled one on the next sync, the local values win.
    world.sql("UPDATE crmsync.integration_table_mappings SET sync_only_coupled = true "
              "WHERE name = 'CUSTOMER'")
    world.counts("CUSTOMER")
    assert len(world.remote("accounts")) == 3
    assert world.remote_one("accounts", "accountnumber eq 'C0001'")["name"] == "Customer 1"


def test_couple_with_create_missing_creates_the_unmatched(world: World) -> None:
    world.sql("UPDATE crmsync.integration_field_mappings SET use_for_matching = true "
              "WHERE mapping_name = 'CUSTOMER' AND local_column = 'no'")
    world.sql("UPDATE crmsync.integration_table_mappings SET sync_only_coupled = true "
              "WHERE name = 'CUSTOMER'")
    add_customers(world, 2, currency=None)
    requests.post(f"{world.emulator.base_url}/accounts",
                  json={"accountnumber": "C0001", "name": "Old"}, timeout=10)
    result = couple_by_match(world.sync_engine, "CUSTOMER", create_missing=True)
    assert len(result.coupled) == 1 and result.created["inserted"] == 1
    assert sorted(r["accountnumber"] for r in world.remote("accounts")) == ["C0001", "C0002"]


def test_check_names_the_mapping_and_field_of_each_problem(world: World) -> None:
    assert check_all(world.engine, world.sync_engine.clients) == []
    world.sql("UPDATE crmsync.integration_field_mappings SET local_column = 'nmae' "
              "WHERE mapping_name = 'CUSTOMER' AND remote_property = 'name'")
    world.sql("UPDATE crmsync.integration_field_mappings SET remote_property = 'telephone9' "
              "WHERE mapping_name = 'CUSTOMER' AND local_column = 'phone_no'")
    world.sql("ALTER TABLE erp_t.customer ADD COLUMN salesperson_code text")
    world.sql("INSERT INTO crmsync.integration_field_mappings "
              "(mapping_name, local_column, remote_property) "
              "VALUES ('CUSTOMER', 'salesperson_code', 'ownerid')")
    world.sql("UPDATE crmsync.integration_table_mappings SET local_table = 'erp_t.currencies', "
              "remote_filter = 'isocurrencycode eq' WHERE name = 'CURRENCY'")
    world.sql("INSERT INTO crmsync.integration_table_mappings (name, local_table, entity_set, "
              "remote_key) VALUES ('ORPHAN', 'erp_t.customer', 'widgets', 'widgetid')")
    problems = [str(p) for p in check_all(world.engine, world.sync_engine.clients)]
    expected = [
        "mapping CURRENCY: local_table: local_table erp_t.currencies does not exist",
        "mapping CUSTOMER: field nmae <-> name: local_column 'nmae' is not a column of "
        "erp_t.customer",
        "mapping CUSTOMER: field phone_no <-> telephone9: remote property 'telephone9' is not "
        "a property of accounts",
        "mapping CUSTOMER: field salesperson_code <-> ownerid: remote property 'ownerid' is a "
        "lookup: set lookup_mapping to the mapping of the table it points at",
        "mapping ORPHAN: entity_set: 'widgets' is not an entity set of connection 'crm'",
    ]
    for line in expected:
        assert line in problems, (line, problems)
    assert any(p.startswith("mapping CURRENCY: remote_filter:") for p in problems)
    # A run of a broken mapping fails with the same message and leaves a failed job; a
    # mapping that depends on it is held back (its lookups would fail); the others go on.
    summaries = {s.mapping: s for s in world.sync()}
    assert "local_table erp_t.currencies does not exist" in (summaries["CURRENCY"].error or "")
    assert summaries["CUSTOMER"].held_back
    assert "CURRENCY (which it depends on) failed" in (summaries["CUSTOMER"].error or "")
    assert summaries["ORPHAN"].error and "widgets" in summaries["ORPHAN"].error
    statuses = world.sql("SELECT mapping_name, status, message FROM crmsync.sync_jobs")
    assert {(r.mapping_name, r.status) for r in statuses} == {("CURRENCY", "failed"),
                                                             ("ORPHAN", "failed")}
    world.sql("DELETE FROM crmsync.integration_table_mapping_dependencies")
    (customer,) = world.sync("CUSTOMER")
    assert "'nmae' is not a column" in (customer.error or "")
