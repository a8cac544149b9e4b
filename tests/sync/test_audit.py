"""``crmsync audit`` on both emulator profiles: an ERP row written with the triggers off and a
CRM change that moved neither ``modifiedon`` nor the version are found (business key, CRM
id, both values, the side that moved) while a captured edit is not; the audit sends only
GET requests and writes nothing on either side; ``--fix`` makes the next run carry them
(the side that moved wins; both moved: the mapping's conflict rule); the last audit's
count is kept for the gauge."""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

import pytest

from tests.acceptance.conftest import ROOT, crmsync_executable
from tests.fixtures.emulator import PROFILES
from tests.sync.conftest import World, add_customers
from worker.sync.audit import audit_run, drift_by_mapping
from worker.sync.drift import RecordDrift

pytestmark = pytest.mark.parametrize("emulator_profile", PROFILES, indirect=True)


def _synced(world: World, n: int = 4) -> dict[str, str]:
    world.sql("UPDATE crmsync.integration_table_mappings SET business_key_column = 'no' "
              "WHERE name = 'CUSTOMER'")
    add_customers(world, n)
    world.counts("CURRENCY", "CUSTOMER")
    return {a["accountnumber"]: world.rid(a) for a in world.remote("accounts")}


def _bulk_load(world: World, statement: str) -> None:
    """An ERP write the capture triggers do not see."""
    with world.engine.begin() as conn:
        conn.exec_driver_sql("SET LOCAL session_replication_role = replica")
        conn.exec_driver_sql(statement)


def _silent_crm_edit(world: World, key: str, values: dict[str, Any]) -> None:
    """A CRM change that moves neither modifiedon nor the version (a data fix in the
    service's own database)."""
    store = world.emulator.store
    with store.lock:
        record = store.get("accounts", key)
        assert record is not None
        record.update(values)


def _audit(world: World, *, fix: bool = False) -> tuple[Any, list[RecordDrift]]:
    found: list[RecordDrift] = []
    (result,) = audit_run(world.sync_engine, ["CUSTOMER"], fix=fix,
                          on_drift=lambda _m, d: found.append(d))
    return result, sorted(found, key=lambda d: str(d.business_key))


def _state(world: World) -> Any:
    return (sorted(map(repr, world.sql("SELECT * FROM erp_t.customer"))),
            sorted(map(repr, world.sql("SELECT * FROM crmsync.couplings"))),
            sorted(map(repr, world.sql("SELECT * FROM crmsync.sync_jobs"))),
            sorted(map(repr, world.remote("accounts"))))


def test_drift_is_found_and_nothing_is_written(world: World) -> None:
    accounts = _synced(world)
    result, found = _audit(world)
    assert (result.audited, result.drifted, found) == (4, 0, [])

    _bulk_load(world, "UPDATE erp_t.customer SET city = 'Bulk city' WHERE no = 'C0001'")
    _silent_crm_edit(world, accounts["C0002"], {"telephone1": "+49 CRM"})
    _bulk_load(world, "UPDATE erp_t.customer SET name = 'ERP name' WHERE no = 'C0003'")
    _silent_crm_edit(world, accounts["C0003"], {"name": "CRM name"})
    world.sql("UPDATE erp_t.customer SET city = 'Captured' WHERE no = 'C0004'")  # not drift
    before = _state(world)
    methods = dict(world.emulator.stats.snapshot()["by_method"])
    result, found = _audit(world)
    assert _state(world) == before  # nothing written on either side, no crmsync row
    used = {k: v - methods.get(k, 0) for k, v in world.emulator.stats.snapshot()[
        "by_method"].items() if v != methods.get(k, 0)}
    assert set(used) <= {"GET"}, used  # only GET requests (a $batch of GETs is a POST)
    assert (result.audited, result.drifted) == (4, 3)
    docs = [d.as_json() for d in found]
    assert docs[0] == {"business_key": "C0001", "local_id": found[0].coupling.local_id,
                       "crm_id": accounts["C0001"], "moved": "erp",
                       "fields": {"city <-> address1_city": {
                           "erp": "Bulk city", "crm": "City 1", "moved": "erp"}}}
    assert (docs[1]["business_key"], docs[1]["moved"], docs[1]["fields"]) == (
        "C0002", "crm", {"phone_no <-> telephone1": {"erp": None, "crm": "+49 CRM",
                                                     "moved": "crm"}})
    assert (docs[2]["business_key"], docs[2]["moved"]) == ("C0003", "both")
    assert world.sql("SELECT mapping_name, audited, drifted, fixed FROM crmsync.audits") == [
        ("CUSTOMER", 4, 3, 0)]
    with world.engine.connect() as conn:
        assert dict(drift_by_mapping(conn))["CUSTOMER"] == 3


def test_fix_makes_the_next_run_carry_them(world: World) -> None:
    accounts = _synced(world)
    world.sql("UPDATE crmsync.integration_table_mappings SET update_conflict_resolution = "
              "'get_update_from_integration' WHERE name = 'CUSTOMER'")
    _bulk_load(world, "UPDATE erp_t.customer SET city = 'Bulk city' WHERE no = 'C0001'")
    _silent_crm_edit(world, accounts["C0002"], {"telephone1": "+49 CRM"})
    _bulk_load(world, "UPDATE erp_t.customer SET name = 'ERP name' WHERE no = 'C0003'")
    _silent_crm_edit(world, accounts["C0003"], {"name": "CRM name"})
    world.counts("CUSTOMER")  # an ordinary run does not see them
    assert _audit(world)[0].drifted == 3

    result, _ = _audit(world, fix=True)
    assert (result.drifted, result.fixed) == (3, 3)
    states = dict(world.sql("SELECT business_key, state FROM crmsync.record_status"))
    assert states["C0001"] == states["C0002"] == states["C0003"] == "pending"
    ran = world.counts("CUSTOMER")
    assert ran[("CUSTOMER", "to")]["failed"] == ran[("CUSTOMER", "from")]["failed"] == 0
    after = {a["accountnumber"]: a for a in world.remote("accounts")}
    assert after["C0001"]["address1_city"] == "Bulk city"            # the ERP moved: it wins
    assert world.sql("SELECT phone_no FROM erp_t.customer WHERE no = 'C0002'") == [
        ("+49 CRM",)]                                                  # the CRM moved: it wins
    assert after["C0003"]["name"] == "CRM name"                       # both: the conflict rule
    assert world.sql("SELECT name FROM erp_t.customer WHERE no = 'C0003'") == [("CRM name",)]
    assert _audit(world)[0].drifted == 0
    assert set(dict(world.sql("SELECT business_key, state FROM crmsync.record_status"))
               .values()) == {"synced"}


def test_the_audit_command(world: World, database_url: str) -> None:
    accounts = _synced(world)
    _bulk_load(world, "UPDATE erp_t.customer SET city = 'Bulk city' WHERE no = 'C0001'")
    _silent_crm_edit(world, accounts["C0002"], {"telephone1": "+49 CRM"})
    env = {**os.environ, "CRMSYNC_DATABASE_URL": database_url, "PYTHONPATH": str(ROOT),
           "CRMSYNC_CRM_URL": world.emulator.base_url}
    if world.profile != "dataverse":
        env.update({"CRMSYNC_CRM_DIALECT": "odata", "CRMSYNC_CRM_BATCH": "true"})

    def crmsync(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([crmsync_executable(), *args], env=env, capture_output=True,
                              text=True, timeout=120)

    done = crmsync("audit", "CUSTOMER", "--json")
    assert done.returncode == 1, done.stderr  # drift found
    doc = json.loads(done.stdout)
    assert doc["mappings"] == [{"mapping": "CUSTOMER", "audited": 4, "drifted": 2,
                                "fixed": 0}]
    assert sorted((r["business_key"], r["moved"]) for r in doc["records"]) == [
        ("C0001", "erp"), ("C0002", "crm")]
    text = crmsync("audit", "--all")
    assert text.returncode == 1, text.stderr
    assert f"CUSTOMER C0001 (CRM {accounts['C0001']}): moved: erp" in text.stdout
    assert "  city <-> address1_city: ERP 'Bulk city', CRM 'City 1' (moved: erp)" in text.stdout
    assert "audit: nothing has been written" in text.stdout
    fixed = crmsync("audit", "CUSTOMER", "--fix")
    assert "audit: 2 records put on the next run's retry list" in fixed.stdout
    world.counts("CUSTOMER")
    clean = crmsync("audit", "CUSTOMER", "CURRENCY")
    assert clean.returncode == 0, clean.stdout + clean.stderr

    for args, expected in ((["audit", "CUSTOMERS"], "no enabled mapping named CUSTOMERS"),
                           (["audit"], "audit: name mappings or use --all")):
        bad = crmsync(*args)
        assert bad.returncode == 2 and "Traceback" not in bad.stderr, bad.stderr
        assert bad.stdout == ""
        (line,) = bad.stderr.strip().splitlines()
        assert line.startswith("crmsync: error: ") and expected in line, line

