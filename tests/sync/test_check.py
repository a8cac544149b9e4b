"""``crmsync check`` catches the traps of a mapping of one's own (key types, a key changed
under existing couplings, two mappings reading the same records), and a changed local_key
takes effect without disabling and enabling the mapping."""

from __future__ import annotations

import pytest
import requests

from worker.sync.check import check_mapping

from .conftest import World, add_customers


def _problems(world: World, name: str = "CUSTOMER") -> list[str]:
    return [str(p) for p in check_mapping(world.engine, world.sync_engine.clients, name)]


def _trigger_key(world: World) -> str:
    return str(world.scalar(
        "SELECT convert_from(rtrim(tgargs, '\\x00'::bytea), 'UTF8') FROM pg_trigger "
        "WHERE tgname = 'crmsync_capture_update' "
        "AND tgrelid = CAST('erp_t.customer' AS regclass)"))


def test_a_key_changed_to_uuid_under_couplings_is_reported_not_crashed(world: World) -> None:
    world.sql("UPDATE crmsync.integration_table_mappings SET local_key = 'no', "
              "direction = 'to_integration' WHERE name = 'CUSTOMER'")
    add_customers(world, 3)
    assert world.counts()[("CUSTOMER", "to")]["inserted"] == 3
    assert _trigger_key(world) == "no"
    world.sql("UPDATE crmsync.integration_table_mappings SET local_key = 'id' "
              "WHERE name = 'CUSTOMER'")
    (problem,) = _problems(world)
    assert problem.startswith("mapping CUSTOMER: local_key: coupled local ids such as 'C000")
    assert "are not uuid values of 'id': was local_key changed after records were coupled?" \
        in problem
    summary = {s.mapping: s for s in world.sync()}["CUSTOMER"]
    assert summary.error is not None and "was local_key changed" in summary.error
    assert "badly formed" not in summary.error
    # The user uncouples; the next run works without disabling and enabling the mapping,
    # and the capture triggers now log the new key.
    world.sql("DELETE FROM crmsync.couplings WHERE mapping_name = 'CUSTOMER'")
    world.sql("DELETE FROM erp_t.customer")
    add_customers(world, 2, start=11)
    assert _problems(world) == []
    counts = world.counts("CUSTOMER")[("CUSTOMER", "to")]
    assert counts["failed"] == 0 and counts["inserted"] == 2
    assert _trigger_key(world) == "id"
    world.sql("UPDATE erp_t.customer SET city = 'Gent' WHERE no = 'C0012'")
    assert world.counts("CUSTOMER")[("CUSTOMER", "to")]["modified"] == 1


def test_a_key_changed_to_another_text_column_is_reported(world: World) -> None:
    add_customers(world, 2)
    world.counts()
    world.sql("UPDATE crmsync.integration_table_mappings SET local_key = 'no', "
              "sync_only_coupled = true WHERE name = 'CUSTOMER'")
    (problem,) = _problems(world)
    assert "the coupled local ids (such as '" in problem
    assert "are values of column 'id', not of local_key 'no'" in problem


@pytest.mark.parametrize(("ddl", "problem"), [
    ("ALTER TABLE erp_t.customer ALTER COLUMN no SET DEFAULT 'N' || nextval('erp_t.n')",
     None),
    ("SELECT 1", "mapping CUSTOMER: local_key: 'no' has no default and varchar(20) is shorter "
                 "than the 36-character ids crmsync chooses for records created from the CRM"),
])
def test_a_short_text_key_needs_a_default_when_the_crm_creates(world: World, ddl: str,
                                                               problem: str | None) -> None:
    world.sql("CREATE SEQUENCE erp_t.n")
    world.sql(ddl)
    world.sql("UPDATE crmsync.integration_table_mappings SET local_key = 'no' "
              "WHERE name = 'CUSTOMER'")
    found = _problems(world)
    assert found == ([] if problem is None else [found[0]])
    if problem is not None:
        assert found[0].startswith(problem)


def test_a_short_key_with_a_default_gets_its_value_from_the_table(world: World) -> None:
    world.sql("CREATE SEQUENCE erp_t.n")
    world.sql("ALTER TABLE erp_t.customer ALTER COLUMN no "
              "SET DEFAULT 'N' || lpad(nextval('erp_t.n')::text, 5, '0')")
    world.sql("UPDATE crmsync.integration_table_mappings SET local_key = 'no' "
              "WHERE name = 'CUSTOMER'")
    world.sql("DELETE FROM crmsync.integration_field_mappings WHERE local_column = 'no'")
    world.counts()
    reply = requests.post(f"{world.emulator.base_url}/accounts", json={"name": "From CRM"},
                          timeout=10)
    assert reply.status_code in (201, 204), reply.text
    counts = world.counts("CUSTOMER")[("CUSTOMER", "from")]
    assert counts["inserted"] == 1 and counts["failed"] == 0
    assert world.scalar("SELECT no FROM erp_t.customer WHERE name = 'From CRM'") == "N00001"


@pytest.mark.parametrize(("mine", "theirs", "problem"), [
    (None, None, "neither has a filter"),
    ("statecode eq 0", None, "VENDOR has no filter"),
    (None, "customertypecode eq 11", "this mapping has no filter"),
    ("customertypecode eq 3", "customertypecode eq 3", "their filters are identical"),
    ("customertypecode eq 3", "customertypecode eq 11", None),
])
def test_two_mappings_on_one_entity_set_must_not_overlap(world: World, mine: str | None,
                                                        theirs: str | None,
                                                        problem: str | None) -> None:
    world.sql("UPDATE crmsync.integration_table_mappings SET remote_filter = :f "
              "WHERE name = 'CUSTOMER'", f=mine)
    world.sql("CREATE TABLE erp_t.vendor (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), "
              "name varchar(100))")
    world.sql("INSERT INTO crmsync.integration_table_mappings (name, local_table, "
              "entity_set, remote_key, direction, remote_filter) VALUES ('VENDOR', "
              "'erp_t.vendor', 'accounts', 'accountid', 'from_integration', :f)", f=theirs)
    found = _problems(world)
    if problem is None:
        assert found == []
        return
    assert found == [f"mapping CUSTOMER: remote_filter: mapping VENDOR reads accounts too and "
                     f"{problem}: each would import the other's records; give both filters "
                     "that exclude each other"]
    assert any("mapping CUSTOMER reads accounts too" in p for p in _problems(world, "VENDOR"))


def test_a_mapping_that_only_writes_to_the_set_does_not_overlap(world: World) -> None:
    world.sql("CREATE TABLE erp_t.export (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), "
              "name varchar(100))")
    world.sql("INSERT INTO crmsync.integration_table_mappings (name, local_table, "
              "entity_set, remote_key, direction) VALUES ('EXPORT', 'erp_t.export', "
              "'accounts', 'accountid', 'to_integration')")
    assert _problems(world) == []


def test_a_key_of_a_type_couplings_cannot_store_is_reported(world: World) -> None:
    world.sql("ALTER TABLE erp_t.customer ADD COLUMN since date UNIQUE")
    world.sql("UPDATE crmsync.integration_table_mappings SET local_key = 'since' "
              "WHERE name = 'CUSTOMER'")
    assert _problems(world) == [
        "mapping CUSTOMER: local_key: 'since' is date: a local key must be a uuid, text or "
        "integer column (couplings store it as text)"]


@pytest.mark.parametrize("same_ids", [True, False])
def test_a_table_changed_under_couplings(world: World, same_ids: bool) -> None:
    add_customers(world, 2)
    world.counts()
    world.sql("CREATE TABLE erp_t.customer2 (LIKE erp_t.customer INCLUDING ALL)")
    columns = "id, no, name, city" if same_ids else "no, name, city"
    world.sql(f"INSERT INTO erp_t.customer2 ({columns}) SELECT {columns} FROM erp_t.customer")
    world.sql("UPDATE crmsync.integration_table_mappings SET local_table = 'erp_t.customer2' "
              "WHERE name = 'CUSTOMER'")
    if not same_ids:
        (problem,) = _problems(world)
        assert problem.startswith("mapping CUSTOMER: local_table: none of the coupled "
                                  "records (such as '")
        assert "is in erp_t.customer2, a table this mapping never captured changes of: " \
               "was local_table changed after records were coupled?" in problem
        return
    # The same records under a new table: no disable/enable, its changes are captured.
    assert _problems(world) == []
    world.counts("CUSTOMER")
    world.sql("UPDATE erp_t.customer2 SET city = 'Gent' WHERE no = 'C0001'")
    assert world.counts("CUSTOMER")[("CUSTOMER", "to")]["modified"] == 1
    assert world.remote_one("accounts", "accountnumber eq 'C0001'")["address1_city"] == "Gent"


def test_one_table_sent_to_two_entity_sets_is_a_normal_set_up(world: World) -> None:
    world.sql("INSERT INTO crmsync.integration_table_mappings (name, local_table, "
              "entity_set, remote_key, direction, sync_only_coupled) VALUES ('UOM', "
              "'erp_t.currency', 'uomschedules', 'uomscheduleid', 'to_integration', true)")
    assert _problems(world, "UOM") == []
    assert _problems(world) == []


def test_one_table_sent_twice_to_one_entity_set_is_reported_naming_both(world: World) -> None:
    world.sql("INSERT INTO crmsync.integration_table_mappings (name, local_table, "
              "entity_set, remote_key, direction) VALUES ('CURRENCY2', 'erp_t.currency', "
              "'transactioncurrencies', 'transactioncurrencyid', 'to_integration')")
    assert _problems(world, "CURRENCY2") == [
        "mapping CURRENCY2: local_filter: mapping CURRENCY sends erp_t.currency to "
        "transactioncurrencies too and neither has a filter: each would send the other's "
        "records; give both filters that exclude each other"]
    # The finding is check's; neither mapping's run fails because of the other.
    summaries = {s.mapping: s for s in world.sync()}
    assert summaries["CURRENCY"].error is None and summaries["CURRENCY2"].error is None
