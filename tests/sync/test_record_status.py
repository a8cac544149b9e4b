"""``crmsync.record_status`` and ``crmsync records``: after real runs, one row per record
crmsync knows — synced, failed (an update conflict, an ERP row the database refused),
skipped (the same conflict twice), pending (an update in flight, a lookup waiting for its
currency to be coupled) — with business key, ids, times and the last error; the view read
by a role that holds nothing else; the command's text, JSON, state filter and one-line
refusals."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from typing import Any

import pytest
import requests
import sqlalchemy as sa

from tests.acceptance.conftest import ROOT, crmsync_executable
from tests.sync.conftest import World, add_customers


def _statuses(world: World) -> dict[Any, Any]:
    rows = world.sql("SELECT * FROM crmsync.record_status WHERE mapping_name = 'CUSTOMER'")
    return {r.business_key: r for r in rows}


def _conflict(world: World, no: str, accounts: dict[str, str]) -> None:
    edit = uuid.uuid4().hex[:8]
    world.sql("UPDATE erp_t.customer SET city = :c WHERE no = :no", c=f"ERP {edit}", no=no)
    world.patch("accounts", accounts[no], {"address1_city": f"CRM {edit}"})


def _every_state(world: World) -> str:
    """C0001 synced, C0002 skipped, C0003 failed (conflict), C0004 pending (an update in
    flight), C0005 pending (waiting for CHF), C0098 a CRM account waiting for its currency
    (the ERP row not created yet), a CRM account the ERP refused; returns the
    refused account's id (its business key C0099)."""
    world.sql("UPDATE crmsync.integration_table_mappings SET business_key_column = 'no' "
              "WHERE name = 'CUSTOMER'")
    add_customers(world, 4)
    world.counts("CURRENCY", "CUSTOMER")
    accounts = {a["accountnumber"]: world.rid(a) for a in world.remote("accounts")}
    _conflict(world, "C0002", accounts)
    world.sync("CUSTOMER")
    _conflict(world, "C0002", accounts)
    _conflict(world, "C0003", accounts)
    world.sql("INSERT INTO erp_t.currency (code, description) VALUES ('CHF', 'Franc')")
    world.sql("INSERT INTO erp_t.customer (no, name, currency_code) "
              "VALUES ('C0005', 'Waiting', 'CHF')")
    world.sql("ALTER TABLE erp_t.customer ADD CONSTRAINT no_nowhere CHECK (city <> 'Nowhere')")
    reply = requests.post(f"{world.emulator.base_url}/accounts", timeout=10, json={
        "name": "Refused", "accountnumber": "C0099", "address1_city": "Nowhere"},
        headers={"Prefer": "return=representation"})
    reply.raise_for_status()
    yen = requests.post(f"{world.emulator.base_url}/transactioncurrencies", timeout=10, json={
        "isocurrencycode": "JPY", "currencyname": "Yen"},
        headers={"Prefer": "return=representation"})
    yen.raise_for_status()
    requests.post(f"{world.emulator.base_url}/accounts", timeout=10, json={
        "name": "Yen customer", "accountnumber": "C0098",
        "transactioncurrencyid@odata.bind":
            f"/transactioncurrencies({world.rid(yen.json(), 'transactioncurrencies')})"},
    ).raise_for_status()
    world.sync("CUSTOMER")
    world.sql("UPDATE crmsync.couplings SET pending_values = '{}' WHERE local_id = :l",
              l=world.local_id("erp_t.customer", "C0004"))
    return world.rid(reply.json())


def test_one_row_per_record_in_each_state(world: World) -> None:
    refused = _every_state(world)
    rows = _statuses(world)
    assert {k: r.state for k, r in rows.items()} == {
        "C0001": "synced", "C0002": "skipped", "C0003": "failed", "C0004": "pending",
        "C0005": "pending", "C0098": "pending", "C0099": "failed"}
    assert rows["C0002"].skipped and not rows["C0003"].skipped
    assert "changed on both sides: city <-> address1_city" in rows["C0003"].last_error
    assert rows["C0003"].last_error_at is not None
    assert rows["C0001"].last_synced_at is not None
    assert rows["C0001"].last_error is None and rows["C0001"].remote_id
    waiting = rows["C0005"]
    assert "'CHF' must be coupled to a record in transactioncurrencies" in waiting.last_error
    assert waiting.local_id == world.local_id("erp_t.customer", "C0005")
    assert waiting.last_synced_at is None
    yen = rows["C0098"]  # its currency is not coupled
    assert "must be coupled to a record in erp_t.currency" in yen.last_error
    assert yen.remote_id and yen.last_error_at is not None
    assert "no_nowhere" in rows["C0099"].last_error
    assert rows["C0099"].remote_id == refused

    world.counts("CURRENCY")  # the parent is coupled: the waiting record goes through
    world.sync("CUSTOMER")
    assert _statuses(world)["C0005"].state == "synced"


def test_a_role_reads_the_view_and_nothing_else(world: World) -> None:
    _every_state(world)
    role = f"erp_screens_{uuid.uuid4().hex[:8]}"
    world.sql(f"CREATE ROLE {role}")
    try:
        world.sql(f"GRANT USAGE ON SCHEMA crmsync TO {role}")
        world.sql(f"GRANT SELECT ON crmsync.record_status TO {role}")
        with world.engine.connect() as conn:
            conn.execute(sa.text(f"SET ROLE {role}"))
            n = conn.scalar(sa.text("SELECT count(*) FROM crmsync.record_status "
                                    "WHERE mapping_name = 'CUSTOMER' AND state = 'failed'"))
            assert n == 2
            with pytest.raises(sa.exc.ProgrammingError, match="permission denied"):
                conn.execute(sa.text("SELECT * FROM crmsync.couplings"))
            conn.rollback()
    finally:
        world.sql(f"DROP OWNED BY {role}")
        world.sql(f"DROP ROLE {role}")


def _crmsync(world: World, database_url: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "CRMSYNC_DATABASE_URL": database_url, "PYTHONPATH": str(ROOT),
           "CRMSYNC_CRM_URL": world.emulator.base_url, "COLUMNS": "200"}
    return subprocess.run([crmsync_executable(), *args], env=env, capture_output=True,
                          text=True, timeout=120)


def test_the_records_command(world: World, database_url: str) -> None:
    refused = _every_state(world)
    done = _crmsync(world, database_url, "records", "CUSTOMER")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split()[:4] == ["business", "key", "local", "id"]
    assert [line.split()[0] for line in lines[2:]] == [
        "C0001", "C0002", "C0003", "C0004", "C0005", "C0098", "C0099"]
    assert "skipped" in lines[3] and "update conflict" in lines[3]

    failed = _crmsync(world, database_url, "records", "CUSTOMER", "--state", "failed", "--json")
    assert failed.returncode == 0, failed.stderr
    doc = json.loads(failed.stdout)
    assert [(d["business_key"], d["state"]) for d in doc] == [("C0003", "failed"),
                                                              ("C0099", "failed")]
    assert doc[1]["remote_id"] == refused
    assert list(doc[0]) == ["mapping_name", "local_id", "business_key", "remote_id", "state",
                            "skipped", "last_synced_at", "last_error", "last_error_at"]
    assert json.loads(_crmsync(world, database_url, "records", "CURRENCY", "--state",
                               "failed", "--json").stdout) == []

    unknown = _crmsync(world, database_url, "records", "CUSTOMERS")
    assert unknown.returncode == 2 and "Traceback" not in unknown.stderr
    assert unknown.stderr.strip().splitlines() == [
        "crmsync: error: mapping 'CUSTOMERS' does not exist; crmsync mappings list shows the "
        "mappings"]
    bad = _crmsync(world, database_url, "records", "CUSTOMER", "--state", "broken")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "--state" in bad.stderr and "broken" in bad.stderr



def test_an_uncoupled_record_is_listed_while_the_newest_job_failed_it(world: World) -> None:
    # A failure logged without a coupling (a record never coupled, or whose coupling was
    # removed since): listed from the newest job of its mapping, and no older one.
    ((job,),) = world.sql("INSERT INTO crmsync.sync_jobs (mapping_name, direction) "
                          "VALUES ('CUSTOMER', 'to_integration') RETURNING id")
    world.sql("INSERT INTO crmsync.sync_job_errors (job_id, local_id, business_key, message) "
              "VALUES (:j, 'L1', 'C0042', 'refused')", j=job)
    assert [(r.business_key, r.local_id, r.state, r.last_error) for r in world.sql(
        "SELECT * FROM crmsync.record_status")] == [("C0042", "L1", "failed", "refused")]
    world.sql("INSERT INTO crmsync.sync_jobs (mapping_name, direction) "
              "VALUES ('CUSTOMER', 'to_integration')")
    assert world.sql("SELECT * FROM crmsync.record_status") == []
