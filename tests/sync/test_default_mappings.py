"""The seed's seven default mappings on the sample ERP data, end to end against the
emulator: dependency order, every lookup pointing at the right record, a second run that
changes nothing, and changes flowing both ways afterwards."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from worker.emulator import EmulatorServer, start_emulator
from worker.sample.data import load_sample_data
from worker.sample.defaults import setup_defaults
from worker.sync.clients import Clients
from worker.sync.engine import SyncEngine

SEED_ORDER = ["CURRENCY", "SALESPEOPLE", "UNITOFMEASURE", "CUSTOMER", "CONTACTS",
              "RESOURCE-PRODUCT", "ITEM-PRODUCT"]


@pytest.fixture
def crm(monkeypatch: pytest.MonkeyPatch) -> Iterator[EmulatorServer]:
    server = start_emulator(port=0, sample_users=5)
    monkeypatch.setenv("CRMSYNC_CRM_URL", server.base_url)
    yield server
    server.stop()


def remote(crm: EmulatorServer, entity_set: str) -> list[dict]:
    reply = requests.get(f"{crm.base_url}/{entity_set}",
                         headers={"Prefer": "odata.maxpagesize=5000"}, timeout=10)
    reply.raise_for_status()
    return reply.json()["value"]


def coupled(engine: Engine, mapping: str) -> dict[str, str]:
    """local id → remote id of a mapping's couplings (all must be plain 'coupled')."""
    with engine.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT local_id, remote_id, state FROM crmsync.couplings WHERE mapping_name = :m"),
            {"m": mapping}).all()
    assert all(r.state == "coupled" for r in rows)
    return {r.local_id: r.remote_id for r in rows}


def by_code(engine: Engine, table: str, code_column: str) -> dict[str, str]:
    with engine.connect() as conn:
        return {str(code): str(i) for i, code in conn.execute(sa.text(
            f"SELECT id, {code_column} FROM {table}"))}


def test_seven_default_mappings_end_to_end(engine: Engine, crm: EmulatorServer) -> None:
    load_sample_data(engine, customers=25)
    setup_defaults(engine)
    sync = SyncEngine(engine, Clients())
    summaries = sync.run_all()
    assert [s.mapping for s in summaries] == SEED_ORDER
    assert all(s.error is None for s in summaries), [s.error for s in summaries]
    with engine.connect() as conn:
        jobs = conn.execute(sa.text(
            "SELECT mapping_name, failed FROM crmsync.sync_jobs ORDER BY id")).all()
    assert [j.mapping_name for j in jobs][:3] == ["CURRENCY", "SALESPEOPLE", "UNITOFMEASURE"]
    assert sum(j.failed for j in jobs) == 0

    currencies = coupled(engine, "CURRENCY")
    salespeople = coupled(engine, "SALESPEOPLE")
    units = coupled(engine, "UNITOFMEASURE")
    customers = coupled(engine, "CUSTOMER")
    contacts = coupled(engine, "CONTACTS")
    assert len(salespeople) == 5 and len(customers) == 25
    currency_ids = {code: currencies[i] for code, i in
                    by_code(engine, "erp.currency", "code").items()}
    salesperson_ids = {code: salespeople[i] for code, i in
                       by_code(engine, "erp.salesperson", "code").items()}
    unit_ids = {code: units[i] for code, i in
                by_code(engine, "erp.unit_of_measure", "code").items()}
    customer_ids = {no: customers[i] for no, i in by_code(engine, "erp.customer", "no").items()}

    with engine.connect() as conn:
        local_customers = conn.execute(sa.text(
            "SELECT id, no, name, currency_code, salesperson_code FROM erp.customer")).all()
        local_contacts = conn.execute(sa.text(
            "SELECT id, surname, customer_no FROM erp.contact")).all()
        local_items = conn.execute(sa.text(
            "SELECT id, no, base_unit_of_measure FROM erp.item")).all()
    accounts = {a["accountid"]: a for a in remote(crm, "accounts")}
    # The emulator's sample vendors and inactive accounts are not customers: not synced.
    assert sum(a["customertypecode"] == 3 and a["statecode"] == 0
               for a in accounts.values()) == 25
    for c in local_customers:
        account = accounts[customers[str(c.id)]]
        assert account["accountnumber"] == c.no and account["name"] == c.name
        assert account["_ownerid_value"] == salesperson_ids[c.salesperson_code]
        if c.currency_code:
            assert account["_transactioncurrencyid_value"] == currency_ids[c.currency_code]
    remote_contacts = {r["contactid"]: r for r in remote(crm, "contacts")
                       if r["statecode"] == 0 and r["_parentcustomerid_value"]}
    assert len(remote_contacts) == len(local_contacts) == len(contacts)
    for c in local_contacts:
        contact = remote_contacts[contacts[str(c.id)]]
        assert contact["lastname"] == c.surname
        assert contact["_parentcustomerid_value"] == customer_ids[c.customer_no]
    products = {p["productid"]: p for p in remote(crm, "products")}
    items = coupled(engine, "ITEM-PRODUCT")
    assert len(products) == len(items) + len(coupled(engine, "RESOURCE-PRODUCT"))
    for item in local_items:
        product = products[items[str(item.id)]]
        assert product["productnumber"] == item.no and product["producttypecode"] == 1
        assert product["_defaultuomscheduleid_value"] == unit_ids[item.base_unit_of_measure]

    # A second run changes nothing on either side.
    versions = {s: sorted(r["versionnumber"] for r in remote(crm, s))
                for s in ("accounts", "contacts", "products", "transactioncurrencies")}
    again = sync.run_all()
    for s in again:
        for p in s.passes:
            assert p.counts["inserted"] + p.counts["modified"] + p.counts["failed"] == 0, s
    assert versions == {s: sorted(r["versionnumber"] for r in remote(crm, s)) for s in versions}


def test_a_broken_mapping_beside_the_defaults_stops_none_of_them(
        engine: Engine, crm: EmulatorServer) -> None:
    """A mapping whose own configuration is broken fails alone: the seven defaults beside it
    (one of them on the same table) run, and so do the children of that one."""
    load_sample_data(engine, customers=10)
    setup_defaults(engine)
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO crmsync.integration_table_mappings (name, local_table, local_key, "
            "entity_set, remote_key, direction) VALUES ('BAD_M04', 'erp.currency', "
            "'no_such_column', 'transactioncurrencies', 'transactioncurrencyid', "
            "'to_integration')"))
        conn.execute(sa.text(
            "INSERT INTO crmsync.integration_field_mappings (mapping_name, local_column, "
            "remote_property) VALUES ('BAD_M04', 'code', 'isocurrencycode')"))
    sync = SyncEngine(engine, Clients())
    for _ in range(2):  # and again: the defaults' runs never wait for BAD_M04
        summaries = {s.mapping: s for s in sync.run_all()}
        assert "no_such_column" in (summaries["BAD_M04"].error or "")
        assert {name: summaries[name].error for name in SEED_ORDER} == \
            dict.fromkeys(SEED_ORDER)
    assert len(coupled(engine, "CUSTOMER")) == 10
