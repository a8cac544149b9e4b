"""The remote probe: an entry on a 12-hour inactivity hold learns of a CRM edit at its
run interval, at the price of one request; a probe that finds nothing costs exactly one
request and no local transaction."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
import sqlalchemy as sa

from tests.freshness.conftest import account_id, put_on_hold, status
from tests.queue.test_worker import wait_for
from tests.sync.conftest import World
from worker.app import App
from worker.metrics import REGISTRY
from worker.runtime.probe import Prober
from worker.runtime.worker import WorkerConfig
from worker.sync.clients import Clients


class StatementCounter:
    """Every SQL statement sent through the engine (the prober's only way to the database)."""

    def __init__(self, engine: sa.Engine) -> None:
        self.count = 0
        sa.event.listen(engine, "before_cursor_execute", self._seen)

    def _seen(self, *args: object) -> None:
        self.count += 1


@pytest.fixture
def prober(synced: World) -> Iterator[Prober]:
    clients = Clients()
    p = Prober(synced.engine, timedelta(seconds=30), clients=clients)
    yield p
    p.stop()
    p._release()
    clients.close()


def crm_requests(world: World) -> int:
    return int(world.emulator.stats.snapshot()["requests"])


def later() -> float:
    return time.monotonic() + 3600


def test_a_probe_that_finds_nothing_costs_one_request_and_no_transaction(
        synced: World, prober: Prober) -> None:
    put_on_hold(synced, "1 hour")
    assert prober.step() == 0  # targets read; none due yet (a hold has just begun)
    statements = StatementCounter(synced.engine)
    before = crm_requests(synced)
    assert prober.step(later()) == 1
    assert crm_requests(synced) - before == 1
    assert statements.count == 0
    assert status(synced) == "on_hold_inactivity"


def test_a_crm_edit_found_by_the_probe_wakes_the_entry_by_navs_30_second_rule(
        synced: World, prober: Prober) -> None:
    put_on_hold(synced, "1 hour")
    prober.step()
    synced.patch("accounts", account_id(synced, "C0002"), {"address1_city": "Probed"})
    before = crm_requests(synced)
    assert prober.step(later()) == 1
    assert crm_requests(synced) - before == 1
    assert status(synced) == "ready"
    due_in = synced.scalar("SELECT extract(epoch FROM next_run_at - now()) "
                           "FROM crmsync.job_queue_entries WHERE mapping_name = 'CUSTOMER'")
    assert 0 < due_in <= 30
    assert status(synced, "CURRENCY") == "on_hold_inactivity"  # to-CRM only: never probed


def test_no_probe_while_the_entry_or_a_mapping_it_depends_on_runs(
        synced: World, prober: Prober) -> None:
    put_on_hold(synced, "1 hour")
    synced.sql("UPDATE crmsync.job_queue_entries SET status = 'in_process', "
               "locked_by = 'another-worker', lease_expires_at = now() + interval '1 hour', "
               "running_since = now() WHERE mapping_name = 'CURRENCY'")
    synced.sql("UPDATE crmsync.integration_table_mappings SET direction = 'bidirectional' "
               "WHERE name = 'CURRENCY'")
    before = crm_requests(synced)
    prober.step()
    assert prober.step(later()) == 0  # CUSTOMER depends on CURRENCY, which runs
    assert crm_requests(synced) == before
    synced.sql("UPDATE crmsync.job_queue_entries SET status = 'on_hold_inactivity', "
               "locked_by = NULL, lease_expires_at = NULL, running_since = NULL "
               "WHERE mapping_name = 'CURRENCY'")
    prober.invalidate()
    assert prober.step(later()) == 1  # CUSTOMER now; CURRENCY's hold has only begun


def test_one_prober_per_cluster(synced: World, prober: Prober) -> None:
    put_on_hold(synced, "1 hour")
    prober.step()
    assert prober.leader
    clients = Clients()
    second = Prober(synced.engine, timedelta(seconds=30), clients=clients)
    try:
        assert second.step(later()) == 0
        assert not second.leader
    finally:
        second._release()
        clients.close()


def test_a_worker_wakes_a_12_hour_hold_within_its_run_interval_of_a_crm_edit(
        synced: World) -> None:
    put_on_hold(synced, "2 seconds")
    worker = App(synced.engine).worker(WorkerConfig(
        poll_interval=1.0, change_wake_delay=timedelta(milliseconds=200), remote_probe=True))
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    labels = {"mapping": "CUSTOMER", "direction": "from_integration"}
    carried = REGISTRY.get_sample_value("crmsync_change_to_sync_seconds_count", labels) or 0
    try:
        assert worker.started.wait(10)
        synced.patch("accounts", account_id(synced, "C0004"), {"address1_city": "Woken"})
        # run_interval 2 s + the 0.2 s wake rule + the run: a few seconds, not 12 hours.
        wait_for(lambda: synced.scalar(
            "SELECT city FROM erp_t.customer WHERE no = 'C0004'") == "Woken", timeout=20)
        wait_for(lambda: status(synced) == "on_hold_inactivity", timeout=20)
    finally:
        worker.stop(immediately=True)
        thread.join(10)
    after = REGISTRY.get_sample_value("crmsync_change_to_sync_seconds_count", labels) or 0
    assert after - carried >= 1


def test_with_change_tracking_the_probe_reads_the_delta_link_without_advancing_it(
        synced: World, prober: Prober, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRMSYNC_CRM_CHANGE_TRACKING", "true")
    synced.counts("CUSTOMER")  # the first tracked read stores a delta link
    synced.counts("CUSTOMER")
    link = synced.scalar("SELECT delta_link FROM crmsync.integration_table_mappings "
                         "WHERE name = 'CUSTOMER'")
    assert link
    put_on_hold(synced, "1 hour")
    prober.step()
    before = crm_requests(synced)
    assert prober.step(later()) == 1
    assert crm_requests(synced) - before == 1
    assert status(synced) == "on_hold_inactivity"
    synced.patch("accounts", account_id(synced, "C0001"), {"address1_city": "Tracked"})
    assert prober.step(later() + 3600) == 1
    assert status(synced) == "ready"
    assert synced.scalar("SELECT delta_link FROM crmsync.integration_table_mappings "
                         "WHERE name = 'CUSTOMER'") == link
    came = synced.counts("CUSTOMER")[("CUSTOMER", "from")]
    assert came["modified"] == 1  # the pass still finds the change the probe saw


def test_a_shorter_remote_probe_interval_applies_to_a_running_worker(synced: World) -> None:
    put_on_hold(synced, "1 hour")
    worker = App(synced.engine).worker(WorkerConfig(
        poll_interval=1.0, change_wake_delay=timedelta(milliseconds=200), remote_probe=True))
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        assert worker.started.wait(10)
        synced.patch("accounts", account_id(synced, "C0001"), {"address1_city": "Sooner"})
        synced.sql("UPDATE crmsync.integration_table_mappings "
                   "SET remote_probe_interval = '1 second' WHERE name = 'CUSTOMER'")
        wait_for(lambda: synced.scalar(
            "SELECT city FROM erp_t.customer WHERE no = 'C0001'") == "Sooner", timeout=20)
    finally:
        worker.stop(immediately=True)
        thread.join(10)
