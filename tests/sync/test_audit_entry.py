"""The 'audit' job kind: an entry audits its mappings on schedule in the worker, fixes the
drift when ``parameters.fix`` says so, and the gauge ``crmsync_drift_records`` reports what
the last audit found. (The audit's reads on both emulator profiles: test_audit.py.)"""

from __future__ import annotations

import os
import subprocess
import threading

from tests.acceptance.conftest import ROOT, crmsync_executable
from tests.queue.test_worker import wait_for
from tests.sync.conftest import World
from tests.sync.test_audit import _silent_crm_edit, _synced
from worker.app import App
from worker.runtime.worker import WorkerConfig


def test_an_audit_entry_runs_on_schedule_and_feeds_the_gauge(world: World,
                                                             database_url: str) -> None:
    accounts = _synced(world)
    _silent_crm_edit(world, accounts["C0002"], {"telephone1": "+49 CRM"})
    env = {**os.environ, "CRMSYNC_DATABASE_URL": database_url, "PYTHONPATH": str(ROOT)}
    added = subprocess.run(
        [crmsync_executable(), "entries", "add", "--kind", "audit", "--every", "1 day",
         "--parameters", '{"mappings": ["CUSTOMER"], "fix": true}'],
        env=env, capture_output=True, text=True, timeout=60)
    assert added.returncode == 0, added.stdout + added.stderr
    app = App(world.engine)
    w = app.worker(WorkerConfig(poll_interval=0.5))
    thread = threading.Thread(target=w.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: world.scalar("SELECT count(*) FROM crmsync.job_queue_log_entries "
                                      "WHERE status <> 'in_process'") == 1, timeout=30)
    finally:
        w.stop(immediately=True)
        thread.join(10)
    (status, message), = world.sql("SELECT status, coalesce(message, error_message) "
                                   "FROM crmsync.job_queue_log_entries")
    assert status == "success", message
    assert message == "CUSTOMER: 4 audited, 1 drifted, 1 fixed"
    families = {f.name: f for f in app.cluster_collector()._read()}
    drift = {s.labels["mapping"]: s.value for s in families["crmsync_drift_records"].samples}
    assert drift == {"CURRENCY": 0.0, "CUSTOMER": 1.0}
    world.counts("CUSTOMER")
    assert world.sql("SELECT phone_no FROM erp_t.customer WHERE no = 'C0002'") == [
        ("+49 CRM",)]
