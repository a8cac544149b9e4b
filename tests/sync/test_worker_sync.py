"""The worker runs the sync job kinds: a recurring CUSTOMER entry picks up local changes
(woken by the change itself), goes on hold after a run that changed nothing, and a broken
mapping fails its own entry while the others go on."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest

from tests.queue.test_worker import wait_for
from tests.sync.conftest import World, add_customers
from worker.app import App
from worker.runtime.worker import Worker, WorkerConfig


@pytest.fixture
def worker(world: World) -> Iterator[Worker]:
    w = App(world.engine).worker(WorkerConfig(
        poll_interval=1.0, change_wake_delay=timedelta(milliseconds=200)))
    thread = threading.Thread(target=w.run, daemon=True)
    thread.start()
    assert w.started.wait(10)
    yield w
    w.stop(immediately=True)
    thread.join(10)


def test_entries_sync_in_dependency_order_and_wake_on_local_change(world: World,
                                                                   worker: Worker) -> None:
    add_customers(world, 5)
    world.sql("""INSERT INTO crmsync.job_queue_entries
                 (job_kind, mapping_name, run_interval, inactivity_timeout, priority)
                 VALUES ('sync_mapping', 'CUSTOMER', '1 hour', '1 hour', 1),
                        ('sync_mapping', 'CURRENCY', '1 hour', '1 hour', 2)""")
    wait_for(lambda: len(world.remote("accounts")) == 5, timeout=20)
    wait_for(lambda: world.scalar("SELECT count(*) FROM crmsync.job_queue_log_entries "
                                  "WHERE status = 'success'") == 2)
    runs = world.sql("SELECT mapping_name, status, started_at, finished_at "
                     "FROM crmsync.job_queue_log_entries ORDER BY started_at")
    assert [r.mapping_name for r in runs][:2] == ["CURRENCY", "CUSTOMER"]
    assert runs[0].finished_at <= runs[1].started_at
    assert all(r.status == "success" for r in runs), runs
    wait_for(lambda: world.scalar("SELECT count(*) FROM crmsync.job_queue_entries "
                                  "WHERE status = 'ready'") == 2)
    # A change to erp_t.customer pulls CUSTOMER forward from an hour away.
    world.sql("UPDATE erp_t.customer SET city = 'Woken' WHERE no = 'C0003'")
    wait_for(lambda: world.remote_one("accounts", "accountnumber eq 'C0003'")["address1_city"]
             == "Woken", timeout=10)
    # Nothing changed in the next CURRENCY run → on hold with inactivity timeout.
    world.sql("UPDATE crmsync.job_queue_entries SET next_run_at = now() "
              "WHERE mapping_name = 'CURRENCY'")
    wait_for(lambda: world.scalar("SELECT status FROM crmsync.job_queue_entries "
                                  "WHERE mapping_name = 'CURRENCY'") == "on_hold_inactivity")
    message = world.scalar("SELECT message FROM crmsync.job_queue_log_entries "
                           "WHERE mapping_name = 'CUSTOMER' ORDER BY id LIMIT 1")
    assert message.startswith("CUSTOMER: to CRM: inserted 5")
    (job,) = world.sql("SELECT job_queue_log_entry_id FROM crmsync.sync_jobs "
                       "WHERE mapping_name = 'CUSTOMER' AND inserted = 5")
    assert job.job_queue_log_entry_id is not None


def test_a_broken_mapping_fails_alone(world: World, worker: Worker) -> None:
    world.sql("UPDATE crmsync.integration_field_mappings SET local_column = 'nmae' "
              "WHERE mapping_name = 'CUSTOMER' AND remote_property = 'name'")
    # The first run fails after CURRENCY's records were confirmed: progress, not an attempt;
    # the next one, at once, confirms nothing and uses up the only attempt.
    world.sql("""INSERT INTO crmsync.job_queue_entries
                 (job_kind, run_interval, max_attempts, rerun_delay)
                 VALUES ('sync_all_modified', '1 hour', 1, '0 seconds')""")
    wait_for(lambda: world.scalar("SELECT status FROM crmsync.job_queue_entries") == "error",
             timeout=20)
    error = world.scalar("SELECT error_message FROM crmsync.job_queue_log_entries")
    assert "mapping CUSTOMER: field nmae <-> name: local_column 'nmae' is not a column" in error
    assert len(world.remote("transactioncurrencies")) == 3  # CURRENCY went on
