"""The bad-input matrix of values, field mappings and mappings: for each input, where it is
caught (``crmsync check``, or the record's error row), the message, and that everything
else keeps syncing (the other records of the pass; for a mapping ``check`` refuses, the
other mappings of the run)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
import requests
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from worker.remote import wire
from worker.sync.check import check_mapping
from worker.sync.local import mark_own_writes

from .conftest import World

SCHEMA = """
CREATE SCHEMA erp_v;
CREATE TABLE erp_v.account (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(), no varchar(20) UNIQUE NOT NULL,
    name varchar(100), credit numeric(18,2), rate numeric(20,6), employees bigint,
    small smallint, seq numeric(25,0), on_hold timestamptz, note_date date, opens time,
    blob bytea, price money, extra jsonb, code int, short_name varchar(5));
INSERT INTO erp_v.account (no, name, credit, on_hold)
     VALUES ('V001', 'First', 100.10, '2024-01-02 03:04:05+00'),
            ('V002', 'Second', 200.20, '2024-01-02 03:04:05+00'),
            ('V003', 'Third', 300.30, '2024-01-02 03:04:05+00');
UPDATE crmsync.integration_table_mappings SET enabled = false WHERE name = 'CUSTOMER';
INSERT INTO crmsync.integration_table_mappings
       (name, local_table, entity_set, remote_key, direction, sync_only_coupled)
VALUES ('VALUES', 'erp_v.account', 'accounts', 'accountid', 'bidirectional', false);
INSERT INTO crmsync.integration_field_mappings (mapping_name, local_column, remote_property)
VALUES ('VALUES', 'no', 'accountnumber'), ('VALUES', 'name', 'name'),
       ('VALUES', 'credit', 'creditlimit'), ('VALUES', 'on_hold', 'lastonholdtime');
"""


def _field(local: str | None, remote: str, *, constant: str | None = None,
           transformation: str = "{}", lookup: str | None = None,
           lookup_column: str | None = None, direction: str = "bidirectional") -> str:
    def q(v: str | None) -> str:
        return "NULL" if v is None else "'" + v.replace("'", "''") + "'"
    return ("INSERT INTO crmsync.integration_field_mappings (mapping_name, local_column, "
            "remote_property, constant_value, transformation, lookup_mapping, "
            f"lookup_local_column, direction) VALUES ('VALUES', {q(local)}, {q(remote)}, "
            f"{q(constant)}, '{transformation}', {q(lookup)}, {q(lookup_column)}, "
            f"'{direction}')")


def _row(**values: str) -> str:
    columns = ", ".join(["no", "name", *values])
    literals = ", ".join(["'V999'", "'Bad'", *values.values()])
    return f"INSERT INTO erp_v.account ({columns}) VALUES ({literals})"


@dataclass(frozen=True)
class Case:
    """``where``: 'database' (the row is refused by a constraint), 'check' (refused before
    any run), 'report' (a finding about two mappings: ``check`` reports it, and neither
    mapping's run fails because of the other's configuration), 'to' / 'from' (the record's
    error row in that pass), 'synced' (not an error: the value syncs as stated)."""

    name: str
    where: str
    message: str
    setup: tuple[str, ...] = ()
    remote: dict[str, Any] | None = None  # written to V001's account before the CRM→ERP pass
    local_after: str | None = None  # crmsync's own write (not captured) after the first sync


CASES = [
    # -- values read from the ERP ---------------------------------------------------------
    Case("timestamp 'infinity'", "to", "field on_hold <-> lastonholdtime: column on_hold "
         "holds 'infinity', which cannot be read", (_row(on_hold="'infinity'"),)),
    Case("timestamp '-infinity'", "to", "column on_hold holds '-infinity'",
         (_row(on_hold="'-infinity'"),)),
    Case("timestamp after year 9999", "to", "column on_hold holds '10000-01-01 00:00:00+00'",
         (_row(on_hold="'10000-01-01 00:00:00+00'"),)),
    Case("date 'infinity' in a column that is not mapped", "synced", "",
         (_row(note_date="'infinity'"),)),
    Case("numeric(18,2) beyond money's 15 whole digits", "to",
         "field credit <-> creditlimit: 9999999999999999.99 is too large for creditlimit "
         "(Edm.Decimal) (precision 19, scale 4)", (_row(credit="9999999999999999.99"),)),
    Case("six decimals into money", "to", "field rate <-> revenue: 1.123456 has 6 decimals; "
         "revenue (Edm.Decimal) holds 4", (_field("rate", "revenue"), _row(rate="1.123456"))),
    Case("bigint beyond Edm.Int32", "to", "field employees <-> numberofemployees: 2147483648 "
         "is out of the range of Edm.Int32", (_field("employees", "numberofemployees"),
                                            _row(employees="2147483648"))),
    Case("numeric(25,0) beyond Edm.Int64", "to", "9223372036854775808 is out of the range of "
         "Edm.Int64", (_field("seq", "new_externalsequence"),
                       _row(seq="9223372036854775808"))),
    Case("time column to a text property (one way)", "synced", "08:30:00",
         (_field("opens", "description", direction="to_integration"),
          _row(opens="'08:30'"))),
    Case("time column to a text property both ways", "check", "field opens <-> description:"
         " description (Edm.String) cannot be stored in local column opens (time)",
         (_field("opens", "description"),)),
    # -- values read from the CRM ---------------------------------------------------------
    Case("money with 4 decimals into numeric(18,2)", "from", "field credit <-> creditlimit: "
         "1.2345 has 4 decimals; credit (numeric(18, 2)) holds 2",
         remote={"creditlimit": Decimal("1.2345")}),
    Case("money too large for numeric(20,6)", "from", "field rate <-> revenue: "
         "999999999999999.5 is too large for rate (numeric(20, 6)) (precision 20, scale 6)",
         (_field("rate", "revenue"),), remote={"revenue": Decimal("999999999999999.5")}),
    Case("Int32 into smallint", "from", "field small <-> numberofemployees: 40000 is out of "
         "the range of the column (-32768 to 32767)",
         (_field("small", "numberofemployees"),), remote={"numberofemployees": 40000}),
    Case("text longer than the column is cut, as NAV does", "synced", "x" * 100,
         remote={"name": "x" * 150}),
    Case("the local row of a CRM change holds 'infinity'", "from", "field on_hold <-> "
         "lastonholdtime: column on_hold holds 'infinity', which cannot be read",
         remote={"name": "Renamed in the CRM"},
         local_after="UPDATE erp_v.account SET on_hold = 'infinity' WHERE no = 'V001'"),
    # -- configuration caught by check ----------------------------------------------------
    Case("value_map that is not an object", "check",
         "field name <-> name: transformation.value_map must be an object of value → value, "
         "got 5", ("UPDATE crmsync.integration_field_mappings SET transformation = "
                   "'{\"value_map\": 5}' WHERE local_column = 'name'",)),
    Case("transformation that is not an object", "database",
         "field_mappings_transformation_must_be_an_object", (
             "UPDATE crmsync.integration_field_mappings SET transformation = '5' "
             "WHERE local_column = 'name'",)),
    Case("max_length that is not a number", "check",
         "transformation.max_length must be a positive whole number, got 'ten'",
         ("UPDATE crmsync.integration_field_mappings SET transformation = "
          "'{\"max_length\": \"ten\"}' WHERE local_column = 'name'",)),
    Case("unknown case rule", "check", "transformation.case must be 'upper' or 'lower'",
         ("UPDATE crmsync.integration_field_mappings SET transformation = "
          "'{\"case\": \"title\"}' WHERE local_column = 'name'",)),
    Case("bytea column to a text property", "check", "field blob <-> description: local "
         "column blob (bytea) cannot be sent to description (Edm.String)",
         (_field("blob", "description"),)),
    Case("money column to a decimal property", "check", "local column price (money) cannot "
         "be sent to revenue (Edm.Decimal)", (_field("price", "revenue"),)),
    Case("jsonb column to a text property", "check", "local column extra (jsonb) cannot be "
         "sent to description", (_field("extra", "description"),)),
    Case("text column to a number property", "check", "field short_name <-> revenue: local "
         "column short_name (varchar(5)) cannot be sent to revenue (Edm.Decimal)",
         (_field("short_name", "revenue"),)),
    Case("text property into an integer column", "check", "field code <-> telephone1: "
         "telephone1 (Edm.String) cannot be stored in local column code (integer)",
         (_field("code", "telephone1"),)),
    Case("constant that is not a number", "check",
         "constant_value 'many': a text value cannot be sent as Edm.Int32",
         (_field(None, "numberofemployees", constant="many", direction="to_integration"),)),
    Case("lookup column shorter than what it looks up", "check",
         "local column short_name (varchar(5)) is shorter than erp_t.currency.code "
         "(varchar(10)) that it looks up",
         (_field("short_name", "transactioncurrencyid", lookup="CURRENCY",
                 lookup_column="code"),
          "INSERT INTO crmsync.integration_table_mapping_dependencies "
          "VALUES ('VALUES', 'CURRENCY')")),
    Case("lookup of an integer column by a text code", "check",
         "local column code (integer) does not match erp_t.currency.code",
         (_field("code", "transactioncurrencyid", lookup="CURRENCY", lookup_column="code"),
          "INSERT INTO crmsync.integration_table_mapping_dependencies "
          "VALUES ('VALUES', 'CURRENCY')")),
    Case("a varchar(20) key where CRM→ERP creates choose a 36-character id", "check",
         "local_key: 'no' has no default and varchar(20) is shorter than the 36-character "
         "ids crmsync chooses", ("UPDATE crmsync.integration_table_mappings "
                                 "SET local_key = 'no' WHERE name = 'VALUES'",)),
    Case("a local filter value of the wrong type", "check",
         "is refused by the database: operator does not exist: numeric > character varying",
         (
             "UPDATE crmsync.integration_table_mappings SET local_filter = "
             "'[{\"column\": \"credit\", \"op\": \"gt\", \"value\": \"lots\"}]' "
             "WHERE name = 'VALUES'",)),
    Case("a second mapping on accounts without a filter", "report",
         "remote_filter: mapping VENDOR reads accounts too and neither has a filter", (
             "INSERT INTO crmsync.integration_table_mappings (name, local_table, entity_set, "
             "remote_key, direction) VALUES ('VENDOR', 'erp_v.account', 'accounts', "
             "'accountid', 'from_integration')",)),
    Case("a second mapping on the same table with the same filter", "report",
         "local_filter: mapping EXPORT sends erp_v.account to accounts too and their "
         "filters are identical", (
             "UPDATE crmsync.integration_table_mappings SET local_filter = "
             "'[{\"column\": \"credit\", \"op\": \"gt\", \"value\": 0}]' WHERE name = 'VALUES'",
             "INSERT INTO crmsync.integration_table_mappings (name, local_table, entity_set, "
             "remote_key, direction, remote_filter, local_filter) VALUES ('EXPORT', "
             "'erp_v.account', 'accounts', 'accountid', 'to_integration', 'statecode eq 1', "
             "'[{\"column\": \"credit\", \"op\": \"gt\", \"value\": 0}]')")),
]


@pytest.fixture
def vworld(world: World) -> World:
    world.sql(SCHEMA)
    return world


def _errors(world: World) -> list[str]:
    return [r.message for r in world.sql(
        "SELECT e.message FROM crmsync.sync_job_errors e JOIN crmsync.sync_jobs j "
        "ON j.id = e.job_id WHERE j.mapping_name = 'VALUES' ORDER BY e.id")]


def _accounts(world: World) -> dict[str, dict[str, Any]]:
    reply = requests.get(f"{world.emulator.base_url}/accounts",
                         headers={"Prefer": "odata.maxpagesize=5000"}, timeout=10)
    reply.raise_for_status()
    return {r["accountnumber"]: r for r in wire.loads(reply.content)["value"]
            if r.get("accountnumber")}


def _patch(world: World, key: str, values: dict[str, Any]) -> None:
    reply = requests.patch(f"{world.emulator.base_url}/accounts({key})",
                           data=wire.dumps(values), timeout=10,
                           headers={"If-Match": "*", "Content-Type": "application/json"})
    assert reply.status_code in (200, 204), reply.text


def test_the_matrix_has_at_least_twenty_inputs() -> None:
    assert len(CASES) >= 20
    assert {c.where for c in CASES} == {"database", "check", "report", "to", "from", "synced"}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_caught_where_expected(vworld: World, case: Case) -> None:
    if case.where == "database":
        with pytest.raises(sa_exc.IntegrityError, match=case.message):
            vworld.sql(*case.setup)
        assert vworld.counts("VALUES")[("VALUES", "to")]["inserted"] == 3
        return
    for statement in case.setup:
        vworld.sql(statement)
    if case.where in ("check", "report"):
        _caught_by_check(vworld, case)
    elif case.where == "from" or case.remote is not None:
        _caught_from_crm(vworld, case)
    else:
        _caught_to_crm(vworld, case)


def _caught_by_check(world: World, case: Case) -> None:
    problems = [str(p) for p in check_mapping(world.engine, world.sync_engine.clients,
                                              "VALUES")]
    assert any(case.message in p for p in problems), problems
    assert all(p.startswith("mapping VALUES: ") for p in problems)
    summaries = {s.mapping: s for s in world.sync()}
    if case.where == "report":  # a run depends on its own mapping's configuration only
        assert summaries["VALUES"].error is None
        return
    assert case.message in (summaries["VALUES"].error or "")  # refused before any record
    assert summaries["CURRENCY"].error is None  # the other mappings of the run go on
    assert world.scalar("SELECT count(*) FROM crmsync.couplings "
                        "WHERE mapping_name = 'CURRENCY'") == 3


def _caught_to_crm(world: World, case: Case) -> None:
    counts = world.counts("VALUES")[("VALUES", "to")]
    accounts = _accounts(world)
    assert {"V001", "V002", "V003"} <= set(accounts)  # the rest of the chunk synced
    assert accounts["V002"]["creditlimit"] == Decimal("200.20")
    if case.where == "synced":
        assert counts["failed"] == 0 and _errors(world) == []
        assert "V999" in accounts
        if case.message:
            assert case.message in accounts["V999"].values()
        return
    assert counts["failed"] == 1 and counts["inserted"] == 3, counts
    (message,) = _errors(world)
    bad_id = world.scalar("SELECT id FROM erp_v.account WHERE no = 'V999'")
    assert message.startswith(f"erp_v.account {bad_id}: ")
    assert case.message in message
    assert "V999" not in accounts


def _caught_from_crm(world: World, case: Case) -> None:
    world.counts("VALUES")
    if case.local_after:
        with world.engine.begin() as conn:
            mark_own_writes(conn)
            conn.execute(sa.text(case.local_after))
    accounts = _accounts(world)
    assert case.remote is not None
    _patch(world, accounts["V001"]["accountid"], case.remote)
    _patch(world, accounts["V002"]["accountid"], {"name": "Second, renamed"})
    counts = world.counts("VALUES")[("VALUES", "from")]
    assert world.scalar("SELECT name FROM erp_v.account WHERE no = 'V002'") \
        == "Second, renamed"  # the rest of the pass synced
    if case.where == "synced":
        assert counts["failed"] == 0 and _errors(world) == []
        assert case.message in world.sql("SELECT * FROM erp_v.account WHERE no = 'V001'")[0]
        return
    assert counts["failed"] == 1, counts
    (message,) = _errors(world)
    local_id = world.scalar("SELECT id FROM erp_v.account WHERE no = 'V001'")
    assert message.startswith((f"accounts {accounts['V001']['accountid']}: ",
                               f"erp_v.account {local_id}: "))
    assert case.message in message
    assert world.scalar("SELECT credit FROM erp_v.account WHERE no = 'V001'") \
        == Decimal("100.10")  # never rounded into the column


def test_a_record_failed_by_its_value_is_retried_and_syncs_once_fixed(vworld: World) -> None:
    vworld.sql(_row(on_hold="'infinity'"))
    assert vworld.counts("VALUES")[("VALUES", "to")]["failed"] == 1
    vworld.sql("UPDATE erp_v.account SET on_hold = '2030-05-06 07:08:09+00' "
               "WHERE no = 'V999'")
    again = vworld.counts("VALUES")[("VALUES", "to")]
    assert again["failed"] == 0 and again["inserted"] == 1
    assert _accounts(vworld)["V999"]["lastonholdtime"] == "2030-05-06T07:08:09Z"
    assert str(uuid.UUID(_accounts(vworld)["V999"]["accountid"]))


def test_a_modified_at_stamp_of_infinity_does_not_stop_the_pass(vworld: World) -> None:
    vworld.sql("ALTER TABLE erp_v.account ADD COLUMN changed_at timestamptz "
               "NOT NULL DEFAULT now()")
    vworld.sql("UPDATE crmsync.integration_table_mappings SET change_capture = 'modified_at', "
               "local_modified_column = 'changed_at' WHERE name = 'VALUES'")
    vworld.sql("UPDATE erp_v.account SET changed_at = 'infinity' WHERE no = 'V002'")
    counts = vworld.counts("VALUES")[("VALUES", "to")]
    assert (counts["inserted"], counts["failed"]) == (3, 0)
    vworld.sql("UPDATE erp_v.account SET name = 'First, renamed', changed_at = now() "
               "WHERE no = 'V001'")
    assert vworld.counts("VALUES")[("VALUES", "to")]["modified"] == 1
    assert _accounts(vworld)["V001"]["name"] == "First, renamed"
