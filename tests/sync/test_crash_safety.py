"""A worker killed (SIGKILL) after the CRM applied its creates but before crmsync recorded
them leaves, after a restart, exactly one remote record per local record, coupled."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from typing import Any

from tests.acceptance.conftest import ROOT, crmsync_executable
from tests.sync.conftest import World


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
