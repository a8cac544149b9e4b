"""``crmsync sync --plan``: the read and decide steps alone. The plan writes nothing on
either side and changes no crmsync row, and the run that follows with no edits in between
does exactly what it said — with edits on both sides, a conflict, a delete and a match."""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

import pytest
import requests

from tests.acceptance.conftest import ROOT, crmsync_executable
from tests.fixtures.emulator import PROFILES
from tests.sync.conftest import World, add_customers
from worker.sync.plan import COUNTERS, plan_run

pytestmark = pytest.mark.parametrize("emulator_profile", PROFILES, indirect=True)


def _everything(world: World) -> Any:
    """Every crmsync row and ERP row the run could touch, and every CRM record."""
    tables = ("crmsync.couplings", "crmsync.sync_jobs", "crmsync.sync_job_errors",
              "crmsync.integration_table_mappings", "crmsync.local_changes", "erp_t.customer")
    rows = {t: sorted(map(repr, world.sql(f"SELECT * FROM {t}"))) for t in tables}
    return rows, sorted(map(repr, world.remote("accounts")))


def _edits_on_both_sides(world: World) -> None:
    world.sql("UPDATE crmsync.integration_table_mappings SET deletion_conflict_resolution = "
              "'propagate_delete', business_key_column = 'no' WHERE name = 'CUSTOMER'")
    world.sql("UPDATE crmsync.integration_field_mappings SET use_for_matching = true "
              "WHERE mapping_name = 'CUSTOMER' AND local_column = 'no'")
    world.counts("CURRENCY")
    add_customers(world, 10)
    world.counts("CUSTOMER")
    accounts = {a["accountnumber"]: world.rid(a) for a in world.remote("accounts")}
    world.sql("UPDATE erp_t.customer SET city = 'ERP edit' WHERE no = 'C0001'")
    add_customers(world, 1, start=11)
    world.sql("DELETE FROM erp_t.customer WHERE no = 'C0003'")
    world.patch("accounts", accounts["C0002"], {"telephone1": "+49 30 555"})
    world.sql("UPDATE erp_t.customer SET city = 'ERP city' WHERE no = 'C0004'")  # a conflict
    world.patch("accounts", accounts["C0004"], {"address1_city": "CRM city"})
    world.sql("DELETE FROM crmsync.couplings WHERE local_id = :l",  # uncoupled: matched again
              l=world.local_id("erp_t.customer", "C0005"))
    world.patch("accounts", accounts["C0005"], {"telephone1": "+49 30 777"})
    requests.post(f"{world.emulator.base_url}/accounts", json={"name": "New in the CRM"},
                  timeout=10).raise_for_status()  # a new record in the CRM


def test_the_run_does_what_the_plan_said(world: World) -> None:
    _edits_on_both_sides(world)
    before = _everything(world)
    plans = {(p.mapping, p.direction.value): p for p in plan_run(world.sync_engine,
                                                                  ["CUSTOMER"])}
    assert _everything(world) == before  # nothing written anywhere
    to, back = plans[("CUSTOMER", "to_integration")], plans[("CUSTOMER", "from_integration")]
    assert (to.counts["inserted"], to.counts["modified"], to.counts["deleted"],
            to.counts["failed"], to.conflicts) == (1, 1, 1, 1, 1)
    assert (back.counts["inserted"], back.counts["modified"], back.counts["coupled"],
            back.counts["failed"], back.conflicts) == (1, 2, 1, 1, 1)
    (edit,) = to.examples["modified"]
    assert edit["business_key"] == "C0001"
    assert edit["fields"] == {"city <-> address1_city": ["City 1", "ERP edit"]}
    assert "changed on both sides: city <-> address1_city" in to.examples["failed"][0]["message"]

    ran = world.counts("CUSTOMER")
    for (mapping, direction), p in plans.items():
        short = "to" if direction == "to_integration" else "from"
        assert {k: ran[(mapping, short)][k] for k in COUNTERS} == \
            {k: p.counts[k] for k in COUNTERS}, (direction, ran[(mapping, short)], p.counts)


def test_the_plan_command_prints_json_and_exits_like_sync(world: World,
                                                          database_url: str) -> None:
    _edits_on_both_sides(world)
    before = _everything(world)
    env = {**os.environ, "CRMSYNC_DATABASE_URL": database_url, "PYTHONPATH": str(ROOT),
           "CRMSYNC_CRM_URL": world.emulator.base_url}
    done = subprocess.run([crmsync_executable(), "sync", "--plan", "--json", "CUSTOMER"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr  # a record would fail (the conflict)
    doc = json.loads(done.stdout)
    assert [(d["mapping"], d["direction"]) for d in doc] == [
        ("CUSTOMER", "to_integration"), ("CUSTOMER", "from_integration")]
    assert {k: doc[0][k] for k in ("inserted", "modified", "deleted", "failed")} == {
        "inserted": 1, "modified": 1, "deleted": 1, "failed": 1}
    assert doc[0]["examples"]["inserted"][0]["business_key"] == "C0011"
    assert _everything(world) == before
    text = subprocess.run([crmsync_executable(), "sync", "--plan", "--all"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert "plan: nothing has been written" in text.stdout
    assert "C0001 (CRM " in text.stdout and "'City 1' → 'ERP edit'" in text.stdout
    assert _everything(world) == before
