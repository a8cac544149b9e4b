"""The series an operator's panels and alert rules read exist from the first scrape: the
labelled counters at 0 for every known label, each job queue entry's status as a state set
with its run interval, timeout, current run and overdue time, the process' own memory and
CPU; and no ``_created`` series."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import Engine

from worker.queue.models import EntryStatus
from worker.sample.defaults import setup_defaults

# What a worker's metrics endpoint serves, fetched over HTTP by a fresh process.
SCRAPE = """
import sys
import requests
from worker.app import App
from worker.db.engine import create_engine
from worker.metrics import REGISTRY, prime
from worker.runtime.http import StatusServer

engine = create_engine(sys.argv[1])
prime(engine)
REGISTRY.register(App(engine).cluster_collector(cache_seconds=0))
server = StatusServer("127.0.0.1:0", lambda: {"ok": True}, lambda: {"ok": True}).start()
try:
    sys.stdout.write(requests.get(f"{server.url}/metrics", timeout=10).text)
finally:
    server.stop()
"""

Series = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
def scrape(engine: Engine, database_url: str) -> Iterator[Series]:
    setup_defaults(engine)
    with engine.begin() as conn:
        # CUSTOMER is due since an hour, CURRENCY on inactivity hold, ITEM-PRODUCT running.
        conn.execute(sa.text(
            "UPDATE crmsync.job_queue_entries SET next_run_at = now() - interval '1 hour' "
            "WHERE mapping_name = 'CUSTOMER'"))
        conn.execute(sa.text(
            "UPDATE crmsync.job_queue_entries SET status = 'on_hold_inactivity', "
            "next_run_at = now() - interval '2 hours' WHERE mapping_name = 'CURRENCY'"))
        conn.execute(sa.text("INSERT INTO crmsync.job_queue_entries (job_kind) "
                             "VALUES ('cleanup')"))
    # A process of its own: this one's registry holds what earlier tests counted.
    done = subprocess.run([sys.executable, "-c", SCRAPE, database_url], capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    text = done.stdout
    yield {(s.name, frozenset(s.labels.items())): s.value
           for family in text_string_to_metric_families(text) for s in family.samples}


def values(series: Series, name: str, **labels: str) -> list[float]:
    wanted = set(labels.items())
    return [v for (n, lbls), v in series.items() if n == name and wanted <= lbls]


def test_labelled_counters_exist_at_zero_before_anything_happened(scrape: Series) -> None:
    assert values(scrape, "crmsync_remote_throttled_seconds_total", connection="crm") == [0.0]
    assert values(scrape, "crmsync_remote_requests_total", connection="crm", method="GET",
                  status_class="5xx") == [0.0]
    assert values(scrape, "crmsync_remote_probes_total", mapping="CURRENCY",
                  result="changed") == [0.0]
    assert values(scrape, "crmsync_job_runs_total", mapping="CUSTOMER",
                  outcome="error") == [0.0]
    assert values(scrape, "crmsync_job_runs_total", job_kind="cleanup", mapping="",
                  outcome="success") == [0.0]
    assert values(scrape, "crmsync_sync_records_total", mapping="CONTACTS",
                  direction="from_integration", result="failed") == [0.0]


def test_each_entry_status_is_a_state_set(scrape: Series) -> None:
    for mapping, current in (("CUSTOMER", "ready"), ("CURRENCY", "on_hold_inactivity")):
        states = {dict(lbls)["status"]: v for (n, lbls), v in scrape.items()
                  if n == "crmsync_job_queue_entry_status" and ("mapping", mapping) in lbls}
        assert set(states) == {s.value for s in EntryStatus}
        assert {s for s, v in states.items() if v == 1.0} == {current}


def test_entry_interval_timeout_and_overdue_time(scrape: Series) -> None:
    assert values(scrape, "crmsync_job_queue_entry_run_interval_seconds",
                  mapping="CUSTOMER") == [1800.0]
    assert values(scrape, "crmsync_job_queue_entry_job_timeout_seconds",
                  mapping="CUSTOMER") == [12 * 3600.0]
    [overdue] = values(scrape, "crmsync_job_queue_entry_overdue_seconds", mapping="CUSTOMER")
    assert 3600 <= overdue < 3700
    # On hold: not due, whatever its next run time says.
    assert values(scrape, "crmsync_job_queue_entry_overdue_seconds",
                  mapping="CURRENCY") == [0.0]
    assert values(scrape, "crmsync_job_queue_entry_running_seconds",
                  mapping="CURRENCY") == [0.0]
    # Never succeeded: no last-success series rather than a success at the epoch.
    assert values(scrape, "crmsync_job_queue_entry_last_success_timestamp_seconds") == []


def test_process_metrics_and_no_created_series(scrape: Series) -> None:
    names = {name for name, _ in scrape}
    assert values(scrape, "process_resident_memory_bytes")[0] > 10 * 2**20
    assert {"process_cpu_seconds_total", "process_open_fds", "process_max_fds",
            "process_start_time_seconds"} <= names
    assert not [name for name in names if name.endswith("_created")]
