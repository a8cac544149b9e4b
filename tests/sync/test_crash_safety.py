"""A worker killed (SIGKILL) after the CRM applied its creates but before crmsync recorded
them leaves, after a restart, exactly one remote record per local record, coupled; one
killed while it writes CRM edits to the ERP loses that write whole, and the next run makes
it once."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from typing import Any

import pytest
import sqlalchemy as sa

from tests.acceptance.conftest import ROOT, crmsync_executable
from tests.fixtures.emulator import PROFILES
from tests.sync.conftest import World, add_customers


def test_kill_between_remote_create_and_local_commit(world: World, database_url: str) -> None:
    app = world.emulator.emulator
    original = app.handle
    applied = threading.Event()
    release = threading.Event()

    def hold_after_writes(request: Any) -> Any:
        outcome = original(request)
        if request.method in ("POST", "PATCH"):
            applied.set()
            release.wait(60)  # the answer never reaches the killed process
        return outcome

    app.handle = hold_after_writes  # type: ignore[method-assign]
    env = {**os.environ, "CRMSYNC_DATABASE_URL": database_url,
           "CRMSYNC_CRM_URL": world.emulator.base_url, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([crmsync_executable(), "sync", "CURRENCY"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert applied.wait(60), "the create never reached the CRM"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        app.handle = original  # type: ignore[method-assign]
        release.set()
    assert len(world.remote("transactioncurrencies")) == 3  # the CRM has them...
    states = [r.state for r in world.sql("SELECT state FROM crmsync.couplings")]
    assert states == ["creating_remote"] * 3  # ...and crmsync knew their ids before sending

    counts = world.counts("CURRENCY")[("CURRENCY", "to")]
    assert counts["failed"] == 0
    remote = world.remote("transactioncurrencies")
    assert sorted(r["isocurrencycode"] for r in remote) == ["EUR", "GBP", "USD"]
    couplings = world.sql("SELECT remote_id, state FROM crmsync.couplings ORDER BY remote_id")
    assert [c.state for c in couplings] == ["coupled"] * 3
    assert sorted(c.remote_id for c in couplings) == sorted(
        r["transactioncurrencyid"] for r in remote)
    assert world.counts("CURRENCY")[("CURRENCY", "to")]["inserted"] == 0


@pytest.mark.parametrize("emulator_profile", PROFILES, indirect=True)
def test_kill_while_the_remote_to_local_pass_writes_the_erp(world: World,
                                                            database_url: str) -> None:
    """A CRM edit being written to the ERP when the worker is killed: the chunk's ERP rows,
    couplings and job log are one transaction, lost whole, and the remote mark (or change
    token) only moves after it, so the next run decides the record again from the same
    snapshot. The CRM edit lands once, an ERP edit of another field made meanwhile flows
    the other way, and neither is taken for a conflict."""
    world.counts("CURRENCY")
    add_customers(world, 3)
    world.counts("CUSTOMER")
    account = world.remote_one("accounts", "accountnumber eq 'C0001'")
    world.patch("accounts", world.rid(account), {"telephone1": "+31 20 555 0101"})
    env = {**os.environ, "CRMSYNC_DATABASE_URL": database_url, "PYTHONPATH": str(ROOT)}
    with world.engine.connect() as holder:
        # An ERP user's open transaction holds the row: crmsync's write waits for it.
        holder.execute(sa.text("SELECT 1 FROM erp_t.customer WHERE no = 'C0001' FOR UPDATE"))
        proc = subprocess.Popen([crmsync_executable(), "sync", "CUSTOMER"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            waiting = _backend_waiting_for_a_lock(world)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        holder.rollback()
    _wait_until_gone(world, waiting)  # its transaction rolled back
    assert world.scalar("SELECT phone_no FROM erp_t.customer WHERE no = 'C0001'") is None
    world.sql("UPDATE erp_t.customer SET city = 'ERP city' WHERE no = 'C0001'")

    counts = world.counts("CUSTOMER")
    to, back = counts[("CUSTOMER", "to")], counts[("CUSTOMER", "from")]
    assert (to["modified"], to["failed"], back["modified"], back["failed"]) == (1, 0, 1, 0)
    remote = world.remote_one("accounts", "accountnumber eq 'C0001'")
    local = world.sql("SELECT city, phone_no FROM erp_t.customer WHERE no = 'C0001'")[0]
    assert (remote["address1_city"], remote["telephone1"]) == (local.city, local.phone_no) \
        == ("ERP city", "+31 20 555 0101")
    assert world.scalar("SELECT count(*) FROM crmsync.sync_job_errors") == 0
    again = world.counts("CUSTOMER")
    assert [c["inserted"] + c["modified"] + c["deleted"] + c["failed"]
            for c in again.values()] == [0, 0]


def _backend_waiting_for_a_lock(world: World) -> int:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        pid = world.scalar("SELECT pid FROM pg_stat_activity WHERE datname = "
                           "current_database() AND wait_event_type = 'Lock' "
                           "AND query LIKE 'UPDATE erp_t.customer SET %' LIMIT 1")
        if pid is not None:
            return int(pid)
        time.sleep(0.05)
    raise AssertionError("crmsync never waited for the ERP row")


def _wait_until_gone(world: World, pid: int) -> None:
    deadline = time.monotonic() + 30
    while world.scalar("SELECT count(*) FROM pg_stat_activity WHERE pid = :p", p=pid):
        assert time.monotonic() < deadline, "the killed run's session never ended"
        time.sleep(0.05)
