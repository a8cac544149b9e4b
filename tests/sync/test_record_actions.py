"""Per-record actions through the installed command, as NAV's "Synchronize Now" and
"Couple to…": `crmsync sync MAPPING --record KEY [--take local|remote]` and
`crmsync couple MAPPING KEY REMOTE_ID [--take …]`, and the exit statuses of `sync`."""

from __future__ import annotations

import os
import subprocess
import uuid

import pytest
import requests

from tests.acceptance.conftest import ROOT, crmsync_executable
from tests.sync.conftest import World, add_customers


@pytest.fixture
def run(world: World, database_url: str):  # type: ignore[no-untyped-def]
    env = {**os.environ, "CRMSYNC_DATABASE_URL": database_url, "PYTHONPATH": str(ROOT),
           "CRMSYNC_CRM_URL": world.emulator.base_url}

    def crmsync(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([crmsync_executable(), *args], env=env, capture_output=True,
                              text=True, timeout=120)
    return crmsync


def _conflict(world: World) -> str:
    """C0001 with its city changed on both sides: an update conflict, then skipped."""
    world.sql("UPDATE crmsync.integration_table_mappings SET business_key_column = 'no' "
              "WHERE name = 'CUSTOMER'")
    add_customers(world, 2)
    world.counts()
    account = world.remote_one("accounts", "accountnumber eq 'C0001'")
    world.sql("UPDATE erp_t.customer SET city = 'ERP city' WHERE no = 'C0001'")
    world.patch("accounts", world.rid(account), {"address1_city": "CRM city"})
    for _ in range(2):
        world.sync("CUSTOMER")
    assert world.coupling("CUSTOMER", local_id=world.local_id("erp_t.customer", "C0001")).skipped
    return world.rid(account)


def test_take_remote_settles_an_update_conflict_in_one_step(world: World, run) -> None:  # type: ignore[no-untyped-def]
    _conflict(world)
    done = run("sync", "CUSTOMER", "--record", "C0001", "--take", "remote")
    assert done.returncode == 0, done.stdout + done.stderr
    assert world.scalar("SELECT city FROM erp_t.customer WHERE no = 'C0001'") == "CRM city"
    coupling = world.coupling("CUSTOMER", local_id=world.local_id("erp_t.customer", "C0001"))
    assert not coupling.skipped and coupling.last_result_from == "success"
    counts = world.counts("CUSTOMER")  # settled: nothing left to write either way
    assert all(c["modified"] + c["failed"] == 0 for c in counts.values())
    assert world.remote_one("accounts", "accountnumber eq 'C0001'")["address1_city"] == "CRM city"


def test_take_local_sends_the_erp_values(world: World, run) -> None:  # type: ignore[no-untyped-def]
    _conflict(world)
    done = run("sync", "CUSTOMER", "--record", world.local_id("erp_t.customer", "C0001"),
               "--take", "local")
    assert done.returncode == 0, done.stdout + done.stderr
    assert world.remote_one("accounts", "accountnumber eq 'C0001'")["address1_city"] == "ERP city"
    counts = world.counts("CUSTOMER")
    assert all(c["modified"] + c["failed"] == 0 for c in counts.values())
    assert world.scalar("SELECT city FROM erp_t.customer WHERE no = 'C0001'") == "ERP city"


def test_couple_to_a_chosen_crm_record_instead_of_creating_a_duplicate(
        world: World, run) -> None:  # type: ignore[no-untyped-def]
    world.sql("UPDATE crmsync.integration_table_mappings SET business_key_column = 'no', "
              "sync_only_coupled = true WHERE name = 'CUSTOMER'")
    world.counts("CURRENCY")
    add_customers(world, 1)
    key = str(uuid.uuid4())
    reply = requests.patch(f"{world.emulator.base_url}/accounts({key})" if world.profile !=
                           "odata" else f"{world.emulator.base_url}/accounts",
                           json={"name": "Customer 1 Ltd", "accountnumber": "C0001",
                                 "address1_city": "From the CRM"},
                           headers={"If-None-Match": "*"}, timeout=10)
    assert reply.status_code in (201, 204), reply.text
    done = run("couple", "CUSTOMER", "C0001", key, "--take", "remote")
    assert done.returncode == 0, done.stdout + done.stderr
    assert world.scalar("SELECT city FROM erp_t.customer WHERE no = 'C0001'") == "From the CRM"
    assert len(world.remote("accounts")) == 1
    again = run("couple", "CUSTOMER", "C0001", str(uuid.uuid4()))
    assert again.returncode == 2 and "already coupled" in again.stderr
    job = world.sql("SELECT job_type, coupled FROM crmsync.sync_jobs WHERE job_type = "
                    "'coupling'")
    assert [(j.job_type, j.coupled) for j in job] == [("coupling", 1)]


def test_unknown_records_and_failing_records_have_their_exit_status(
        world: World, run) -> None:  # type: ignore[no-untyped-def]
    world.counts("CURRENCY")
    unknown = run("sync", "CUSTOMER", "--record", "NOSUCH")
    assert unknown.returncode == 2
    assert unknown.stderr.strip().splitlines()[-1].startswith("crmsync: error:")
    assert "no record 'NOSUCH'" in unknown.stderr
    world.sql("INSERT INTO erp_t.currency (code, description) VALUES ('JPY', 'Yen')")
    world.sql("UPDATE crmsync.integration_table_mappings SET enabled = false "
              "WHERE name = 'CURRENCY'")
    add_customers(world, 2, currency="JPY")
    failing = run("sync", "CUSTOMER")  # records fail: the command ran, status 1
    assert failing.returncode == 1, failing.stdout + failing.stderr
    assert "CUSTOMER" in failing.stdout
