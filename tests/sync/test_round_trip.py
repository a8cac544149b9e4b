"""Round trips through the engine at the limits of the types: numeric(18,2) and money
(19,4), Int32 and Int64, dates and timestamps, ERP→CRM and CRM→ERP. Every digit arrives, a
second run finds nothing changed (no value differs by a rounding), and the one amount the
CRM cannot hold fails its record alone."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
import requests

from worker.remote import wire

from .conftest import World

SCHEMA = """
CREATE SCHEMA erp_r;
CREATE TABLE erp_r.account (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(), no varchar(20) UNIQUE NOT NULL,
    credit numeric(18,2), revenue numeric(19,4), employees int, seq bigint,
    on_hold timestamptz);
CREATE TABLE erp_r.person (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(), last varchar(50), birth date);
UPDATE crmsync.integration_table_mappings SET enabled = false WHERE name = 'CUSTOMER';
INSERT INTO crmsync.integration_table_mappings
       (name, local_table, entity_set, remote_key, direction, sync_only_coupled)
VALUES ('LIMITS', 'erp_r.account', 'accounts', '{account_key}', 'bidirectional', false),
       ('PEOPLE', 'erp_r.person', 'contacts', '{contact_key}', 'bidirectional', false);
UPDATE crmsync.integration_table_mappings SET remote_modified_on = '{modified_on}'
 WHERE name IN ('LIMITS', 'PEOPLE');
INSERT INTO crmsync.integration_field_mappings (mapping_name, local_column, remote_property)
VALUES ('LIMITS', 'no', 'accountnumber'), ('LIMITS', 'credit', 'creditlimit'),
       ('LIMITS', 'revenue', 'revenue'), ('LIMITS', 'employees', 'numberofemployees'),
       ('LIMITS', 'seq', 'new_externalsequence'), ('LIMITS', 'on_hold', 'lastonholdtime'),
       ('PEOPLE', 'last', 'lastname'), ('PEOPLE', 'birth', 'birthdate');
"""

ROWS = {  # no: (credit, revenue, employees, seq, on_hold)
    "MAX": ("999999999999999.99", "999999999999999.9999", 2**31 - 1, 2**63 - 1,
            "9999-12-31 23:59:59+00"),
    "MIN": ("-999999999999999.99", "-922337203685477.5808", -(2**31), -(2**63),
            "1753-01-01 00:00:00+00"),
    "SMALL": ("0.01", "0.0001", 0, 1, "2024-02-29 12:00:00+00"),
}


pytestmark = pytest.mark.parametrize("emulator_profile", ["dataverse", "odata"], indirect=True)


@pytest.fixture
def rworld(world: World, emulator_profile: str) -> World:
    odata = emulator_profile == "odata"
    with world.engine.begin() as conn:
        conn.exec_driver_sql(SCHEMA.format(
            account_key="ID" if odata else "accountid", contact_key="ID" if odata else "contactid",
            modified_on="modifiedAt" if odata else "modifiedon"))
    for no, (credit, revenue, employees, seq, on_hold) in ROWS.items():
        world.sql("INSERT INTO erp_r.account (no, credit, revenue, employees, seq, on_hold) "
                  "VALUES (:no, CAST(:c AS numeric), CAST(:r AS numeric), :e, :s, "
                  "CAST(:o AS timestamptz))", no=no, c=credit, r=revenue, e=employees,
                  s=seq, o=on_hold)
    return world


def _read(world: World, entity_set: str, key: str) -> dict[str, dict[str, Any]]:
    reply = requests.get(f"{world.emulator.base_url}/{entity_set}",
                         headers={"Prefer": "odata.maxpagesize=5000"}, timeout=10)
    reply.raise_for_status()
    return {r[key]: r for r in wire.loads(reply.content)["value"] if r.get(key)}


def _patch(world: World, entity_set: str, key: str, values: dict[str, Any]) -> None:
    reply = requests.patch(f"{world.emulator.base_url}/{entity_set}({key})",
                           data=wire.dumps(values), timeout=10,
                           headers={"If-Match": "*", "Content-Type": "application/json"})
    assert reply.status_code in (200, 204), reply.text


def test_limits_go_to_the_crm_exactly_and_stay_unchanged(rworld: World) -> None:
    rworld.sql("INSERT INTO erp_r.account (no, credit) VALUES ('TOOBIG', 9999999999999999.99)")
    counts = rworld.counts("LIMITS")[("LIMITS", "to")]
    assert (counts["inserted"], counts["failed"]) == (3, 1)
    (message,) = [r.message for r in rworld.sql("SELECT message FROM crmsync.sync_job_errors")]
    assert "field credit <-> creditlimit: 9999999999999999.99 is too large for creditlimit" \
        in message
    accounts = _read(rworld, "accounts", "accountnumber")
    for no, (credit, revenue, employees, seq, on_hold) in ROWS.items():
        record = accounts[no]
        assert (record["creditlimit"], record["revenue"]) == (Decimal(credit), Decimal(revenue))
        assert (record["numberofemployees"], record["new_externalsequence"]) == (employees, seq)
        assert record["lastonholdtime"] == datetime.fromisoformat(on_hold).astimezone(
            UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    again = rworld.counts("LIMITS")
    assert again[("LIMITS", "to")]["modified"] == 0 and again[("LIMITS", "from")]["modified"] == 0


def test_limits_come_back_from_the_crm_exactly(rworld: World) -> None:
    rworld.counts("LIMITS")
    accounts = _read(rworld, "accounts", "accountnumber")
    _patch(rworld, "accounts", rworld.rid(accounts["SMALL"]), {
        "creditlimit": Decimal("-999999999999999.99"), "revenue": Decimal("123456789012345.6789"),
        "numberofemployees": -(2**31), "new_externalsequence": 2**63 - 1,
        "lastonholdtime": "2038-01-19T03:14:08Z"})
    _patch(rworld, "accounts", rworld.rid(accounts["MAX"]), {"revenue": Decimal("0.0001")})
    counts = rworld.counts("LIMITS")[("LIMITS", "from")]
    assert (counts["modified"], counts["failed"]) == (2, 0)
    row = rworld.sql("SELECT credit, revenue, employees, seq, on_hold FROM erp_r.account "
                     "WHERE no = 'SMALL'")[0]
    assert tuple(row) == (Decimal("-999999999999999.99"), Decimal("123456789012345.6789"),
                          -(2**31), 2**63 - 1, datetime(2038, 1, 19, 3, 14, 8, tzinfo=UTC))
    assert rworld.scalar("SELECT revenue FROM erp_r.account WHERE no = 'MAX'") \
        == Decimal("0.0001")
    again = rworld.counts("LIMITS")
    assert again[("LIMITS", "to")]["modified"] == 0 and again[("LIMITS", "from")]["modified"] == 0


def test_dates_at_their_limits_both_ways(rworld: World) -> None:
    births = {"Last": date(9999, 12, 31), "First": date(1, 1, 1), "Leap": date(2024, 2, 29)}
    for last, birth in births.items():
        rworld.sql("INSERT INTO erp_r.person (last, birth) VALUES (:l, :b)", l=last, b=birth)
    assert rworld.counts("PEOPLE")[("PEOPLE", "to")]["inserted"] == 3
    contacts = _read(rworld, "contacts", "lastname")
    assert {k: contacts[k]["birthdate"] for k in births} == {
        k: v.isoformat() for k, v in births.items()}
    _patch(rworld, "contacts", rworld.rid(contacts["Leap"], "contacts"),
           {"birthdate": "1900-02-28"})
    counts = rworld.counts("PEOPLE")
    assert counts[("PEOPLE", "from")]["modified"] == 1
    assert rworld.scalar("SELECT birth FROM erp_r.person WHERE last = 'Leap'") \
        == date(1900, 2, 28)
    again = rworld.counts("PEOPLE")
    assert again[("PEOPLE", "to")]["modified"] == 0 and again[("PEOPLE", "from")]["modified"] == 0
