"""setup_defaults in a real database: the seven mappings, their dependencies, field
mappings and job queue entries; creating only what is missing; restoring on request."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from worker.sample.defaults import DEFAULT_MAPPINGS, setup_defaults
from worker.sync.mappings import dependencies, load_all
from worker.sync.order import topological_order

SEED_ORDER = ["CURRENCY", "SALESPEOPLE", "UNITOFMEASURE", "CUSTOMER", "CONTACTS",
              "RESOURCE-PRODUCT", "ITEM-PRODUCT"]


def _rows(engine: Engine, sql: str, **params: Any) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(sa.text(sql), params).mappings())


def _everything(engine: Engine) -> list[list[Any]]:
    return [_rows(engine, f"SELECT * FROM crmsync.{table} ORDER BY 1, 2") for table in (
        "integration_table_mappings", "integration_table_mapping_dependencies",
        "integration_field_mappings", "job_queue_entries")]


def test_creates_the_seven_mappings_in_the_seeds_order(engine: Engine) -> None:
    summary = setup_defaults(engine)
    assert list(summary.mappings_created) == SEED_ORDER
    mappings = {m.name: m for m in load_all(engine)}
    assert list(mappings) == SEED_ORDER
    assert topological_order(dependencies(engine)) == SEED_ORDER
    customer = mappings["CUSTOMER"]
    assert (customer.local_table, customer.entity_set, customer.remote_key) == \
        ("erp.customer", "accounts", "accountid")
    assert customer.local_key == "id" and customer.change_capture == "trigger"
    assert customer.connection_name == "crm" and customer.remote_modified_on == "modifiedon"
    assert {m.name: m.direction.value for m in mappings.values()} == {
        "CURRENCY": "to_integration", "SALESPEOPLE": "from_integration",
        "UNITOFMEASURE": "to_integration", "CUSTOMER": "bidirectional",
        "CONTACTS": "bidirectional", "RESOURCE-PRODUCT": "bidirectional",
        "ITEM-PRODUCT": "bidirectional"}
    assert not any(m.sync_only_coupled for m in mappings.values())
    assert {m.update_conflict.value for m in mappings.values()} == {"none"}
    # NAV's filters: active records only, customers only, contacts of a company only.
    assert {name: m.remote_filter for name, m in mappings.items()} == {
        "CURRENCY": "statecode eq 0", "SALESPEOPLE": "isdisabled eq false",
        "UNITOFMEASURE": "statecode eq 0",
        "CUSTOMER": "statecode eq 0 and customertypecode eq 3",
        "CONTACTS": "statecode eq 0 and _parentcustomerid_value ne null",
        "RESOURCE-PRODUCT": "producttypecode eq 3 and statecode eq 0",
        "ITEM-PRODUCT": "producttypecode eq 1 and statecode eq 0"}
    constant = [f for f in customer.fields if f.remote_property == "customertypecode"]
    assert constant and constant[0].constant_value == "3"  # creates accounts as customers


def test_dependencies(engine: Engine) -> None:
    setup_defaults(engine)
    deps = {name: parents for name, parents in dependencies(engine).items() if parents}
    assert deps == {"CUSTOMER": {"CURRENCY", "SALESPEOPLE"}, "CONTACTS": {"CUSTOMER"},
                    "RESOURCE-PRODUCT": {"UNITOFMEASURE"}, "ITEM-PRODUCT": {"UNITOFMEASURE"}}


def test_field_mappings(engine: Engine) -> None:
    setup_defaults(engine)
    mappings = {m.name: m for m in load_all(engine)}
    assert {name: len(m.fields) for name, m in mappings.items()} == {
        spec.name: len(spec.fields) for spec in DEFAULT_MAPPINGS}
    by_column = {f.local_column: f for f in mappings["CUSTOMER"].fields}
    owner = by_column["salesperson_code"]
    assert (owner.remote_property, owner.lookup_mapping, owner.lookup_local_column,
            owner.remote_bind_property, owner.not_null) == \
        ("ownerid", "SALESPEOPLE", "code", "ownerid", True)
    assert by_column["currency_code"].lookup_mapping == "CURRENCY"
    assert [f.local_column for f in mappings["CUSTOMER"].match_fields] == ["no"]
    parent = next(f for f in mappings["CONTACTS"].fields if f.local_column == "customer_no")
    assert (parent.lookup_mapping, parent.lookup_local_column, parent.remote_bind_property) \
        == ("CUSTOMER", "no", "parentcustomerid_account")
    assert [f.local_column for f in mappings["CONTACTS"].match_fields] == ["email"]
    code = next(f for f in mappings["SALESPEOPLE"].fields if f.local_column == "code")
    assert code.transformation == {"before": "@", "case": "upper", "max_length": 20}
    for name, product_type in (("RESOURCE-PRODUCT", "3"), ("ITEM-PRODUCT", "1")):
        constant = next(f for f in mappings[name].fields if f.local_column is None)
        assert (constant.remote_property, constant.constant_value, constant.direction.value) \
            == ("producttypecode", product_type, "to_integration")


def test_one_recurring_entry_per_mapping_with_navs_defaults(engine: Engine) -> None:
    setup_defaults(engine)
    entries = {r["mapping_name"]: r for r in _rows(
        engine, "SELECT * FROM crmsync.job_queue_entries ORDER BY id")}
    assert list(entries) == SEED_ORDER
    for entry in entries.values():
        assert entry["job_kind"] == "sync_mapping" and entry["recurring"]
        assert entry["run_interval"] == timedelta(minutes=30)
        assert entry["max_attempts"] == 10 and entry["rerun_delay"] == timedelta(seconds=30)
        assert entry["status"] == "ready"
        assert entry["description"] == f"{entry['mapping_name']} - Dynamics CRM synchronization job"
    assert {n: e["inactivity_timeout"] / timedelta(minutes=1) for n, e in entries.items()} == {
        "CURRENCY": 720, "SALESPEOPLE": 1440, "UNITOFMEASURE": 720, "CUSTOMER": 720,
        "CONTACTS": 720, "RESOURCE-PRODUCT": 720, "ITEM-PRODUCT": 1440}
    categories = {n: e["category_code"] for n, e in entries.items()}
    assert categories["CUSTOMER"] == categories["CONTACTS"] is not None
    assert {categories[n] for n in SEED_ORDER if n not in ("CUSTOMER", "CONTACTS")} == {None}


def test_interval_and_connection_are_applied(engine: Engine) -> None:
    setup_defaults(engine, interval=timedelta(hours=2), connection="sales")
    assert {r["run_interval"] for r in _rows(
        engine, "SELECT run_interval FROM crmsync.job_queue_entries")} == {timedelta(hours=2)}
    assert {r["connection_name"] for r in _rows(
        engine, "SELECT connection_name FROM crmsync.integration_table_mappings")} == {"sales"}
    with pytest.raises(ValueError):
        setup_defaults(engine, interval=timedelta(0))


def test_running_twice_changes_nothing(engine: Engine) -> None:
    setup_defaults(engine)
    before = _everything(engine)
    summary = setup_defaults(engine)
    assert not summary.changed
    assert _everything(engine) == before


def test_a_users_changes_survive_a_second_run(engine: Engine) -> None:
    setup_defaults(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE crmsync.job_queue_entries SET run_interval = '5 minutes', "
                             "status = 'on_hold' WHERE mapping_name = 'CUSTOMER'"))
        conn.execute(sa.text("UPDATE crmsync.integration_table_mappings "
                             "SET remote_filter = 'statecode eq 0' WHERE name = 'CUSTOMER'"))
        conn.execute(sa.text("UPDATE crmsync.integration_field_mappings "
                             "SET direction = 'to_integration' "
                             "WHERE mapping_name = 'CUSTOMER' AND local_column = 'name'"))
    before = _everything(engine)
    assert not setup_defaults(engine, interval=timedelta(minutes=45)).changed
    assert _everything(engine) == before


def test_deleted_rows_come_back(engine: Engine) -> None:
    setup_defaults(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM crmsync.job_queue_entries "
                             "WHERE mapping_name = 'CURRENCY'"))
        conn.execute(sa.text("DELETE FROM crmsync.integration_field_mappings "
                             "WHERE mapping_name = 'CONTACTS' AND local_column = 'job_title'"))
    summary = setup_defaults(engine)
    assert summary.entries_created == ("CURRENCY",)
    assert summary.field_mappings_created == 1 and not summary.mappings_created


def test_overwrite_restores_the_defaults_but_keeps_status_and_ids(engine: Engine) -> None:
    setup_defaults(engine)
    name_field = _rows(engine, "SELECT id FROM crmsync.integration_field_mappings "
                               "WHERE mapping_name = 'CUSTOMER' AND local_column = 'name'")[0]
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE crmsync.job_queue_entries SET run_interval = '5 minutes', "
                             "status = 'on_hold' WHERE mapping_name = 'CUSTOMER'"))
        conn.execute(sa.text(
            "UPDATE crmsync.integration_table_mappings SET remote_filter = 'statecode eq 0', "
            "remote_modified_since = now(), enabled = false WHERE name = 'CUSTOMER'"))
        conn.execute(sa.text("UPDATE crmsync.integration_table_mappings "
                             "SET remote_modified_since = now() WHERE name = 'CONTACTS'"))
        conn.execute(sa.text("UPDATE crmsync.integration_field_mappings "
                             "SET direction = 'to_integration' WHERE id = :id"), name_field)
    summary = setup_defaults(engine, overwrite=True)
    assert summary.mappings_restored == ("CUSTOMER",)
    assert summary.field_mappings_restored == 1 and summary.entries_restored == 1
    customer = _rows(engine, "SELECT * FROM crmsync.integration_table_mappings "
                             "WHERE name IN ('CUSTOMER', 'CONTACTS') ORDER BY name")
    contacts, customer_row = customer
    # The filter changed back, so CUSTOMER reads everything again; CONTACTS keeps its mark.
    assert customer_row["remote_filter"] == "statecode eq 0 and customertypecode eq 3"
    assert customer_row["remote_modified_since"] is None
    assert contacts["remote_modified_since"] is not None
    assert customer_row["enabled"] is False
    entry = _rows(engine, "SELECT * FROM crmsync.job_queue_entries "
                          "WHERE mapping_name = 'CUSTOMER'")[0]
    assert entry["run_interval"] == timedelta(minutes=30) and entry["status"] == "on_hold"
    restored = _rows(engine, "SELECT id, direction FROM crmsync.integration_field_mappings "
                             "WHERE mapping_name = 'CUSTOMER' AND local_column = 'name'")[0]
    assert restored == {"id": name_field["id"], "direction": "bidirectional"}
    assert not setup_defaults(engine, overwrite=True).changed


def test_overwrite_replaces_a_field_that_took_a_defaults_property(engine: Engine) -> None:
    setup_defaults(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE crmsync.integration_field_mappings SET local_column = "
                             "'name_2' WHERE mapping_name = 'CUSTOMER' AND local_column = 'name'"))
    assert not setup_defaults(engine).changed  # the property is taken: nothing to add
    summary = setup_defaults(engine, overwrite=True)
    assert summary.field_mappings_created == 1
    fields = _rows(engine, "SELECT local_column FROM crmsync.integration_field_mappings "
                           "WHERE mapping_name = 'CUSTOMER' AND remote_property = 'name'")
    assert fields == [{"local_column": "name"}]


def test_a_users_own_mapping_of_the_same_name_is_left_alone(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO crmsync.integration_table_mappings (name, local_table, entity_set, "
            "remote_key) VALUES ('CUSTOMER', 'public.debtors', 'accounts', 'accountid')"))
    for overwrite in (False, True):
        summary = setup_defaults(engine, overwrite=overwrite)
        assert summary.mappings_skipped == ("CUSTOMER",)
    assert _rows(engine, "SELECT count(*) AS n FROM crmsync.integration_field_mappings "
                         "WHERE mapping_name = 'CUSTOMER'") == [{"n": 0}]
    assert _rows(engine, "SELECT local_table FROM crmsync.integration_table_mappings "
                         "WHERE name = 'CUSTOMER'") == [{"local_table": "public.debtors"}]


def test_a_bare_mapping_made_for_the_job_queue_is_completed(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO crmsync.integration_table_mappings (name) "
                             "VALUES ('CURRENCY')"))
    summary = setup_defaults(engine)
    assert summary.mappings_restored == ("CURRENCY",)
    assert {m.name for m in load_all(engine)} == set(SEED_ORDER)
