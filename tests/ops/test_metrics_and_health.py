"""What an operator sees: /metrics after a demo-sized run of the seven default mappings,
/healthz following the database down and up, and sd_notify messages to systemd."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator, Sequence
from datetime import timedelta
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import Engine

from tests.queue.test_database_restart import Server
from tests.queue.test_worker import wait_for
from worker import __version__
from worker.app import App
from worker.db import migrate
from worker.db.engine import create_engine
from worker.emulator import EmulatorServer, start_emulator
from worker.observers import RunHooks
from worker.runtime.http import StatusServer
from worker.runtime.systemd import SystemdHooks
from worker.runtime.worker import Worker, WorkerConfig
from worker.sample.data import load_sample_data
from worker.sample.defaults import setup_defaults

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> Samples:
    text = requests.get(f"{url}/metrics", timeout=10).text
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def crm(monkeypatch: pytest.MonkeyPatch) -> Iterator[EmulatorServer]:
    server = start_emulator(port=0, sample_users=5)
    monkeypatch.setenv("CRMSYNC_CRM_URL", server.base_url)
    yield server
    server.stop()


def new_worker(app: App, hooks: Sequence[RunHooks] = ()) -> Worker:
    return app.worker(WorkerConfig(poll_interval=0.5, lease=timedelta(seconds=2)),
                      hooks=hooks)


def start(worker: Worker) -> threading.Thread:
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    assert worker.started.wait(10)
    return thread


def run_worker(app: App, hooks: Sequence[RunHooks] = ()) -> tuple[Worker, threading.Thread]:
    worker = new_worker(app, hooks)
    return worker, start(worker)


def test_metrics_after_a_demo_sized_run(engine: Engine, crm: EmulatorServer) -> None:
    load_sample_data(engine, customers=20)
    setup_defaults(engine)
    app = App(engine)
    worker = new_worker(app)
    app.install_cluster_metrics()
    status = StatusServer("127.0.0.1:0", worker.health, worker.readiness).start()
    before = scrape(status.url)  # before the worker starts: its first runs start at once
    thread = start(worker)
    try:
        wait_for(lambda: engine.connect().execute(sa.text(
            "SELECT count(*) FROM crmsync.job_queue_log_entries WHERE status = 'success'"
        )).scalar() == 7, timeout=60)
        after = scrape(status.url)
    finally:
        worker.stop()
        thread.join(15)
        status.stop()

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    with engine.connect() as conn:
        contacts = conn.scalar(sa.text("SELECT count(*) FROM erp.contact"))
    assert delta("crmsync_sync_records_total", mapping="CUSTOMER", direction="to_integration",
                 result="inserted") == 20
    assert delta("crmsync_sync_records_total", mapping="CONTACTS", direction="to_integration",
                 result="inserted") == contacts
    assert delta("crmsync_sync_records_total", mapping="SALESPEOPLE",
                 direction="from_integration", result="coupled") == 5
    for mapping in ("CURRENCY", "SALESPEOPLE", "UNITOFMEASURE", "CUSTOMER", "CONTACTS",
                    "RESOURCE-PRODUCT", "ITEM-PRODUCT"):
        assert delta("crmsync_job_runs_total", job_kind="sync_mapping", mapping=mapping,
                     outcome="success") == 1
        assert value(after, "crmsync_mapping_last_success_timestamp_seconds",
                     mapping=mapping) > 0
    # One $batch of creates per mapping that creates (all but SALESPEOPLE), and reads.
    assert delta("crmsync_remote_requests_total", connection="crm", method="POST",
                 status_class="2xx") == 6
    assert delta("crmsync_remote_requests_total", connection="crm", method="GET",
                 status_class="2xx") >= 5
    statuses = {s: value(after, "crmsync_job_queue_entries", status=s)
                for s in ("ready", "waiting", "in_process", "on_hold_inactivity", "error")}
    assert sum(statuses.values()) == 7 and statuses["error"] == 0
    assert value(after, "crmsync_skipped_couplings", mapping="CUSTOMER") == 0
    assert value(after, "crmsync_build_info", version=__version__) == 1
    assert delta("crmsync_job_start_lag_seconds_count", job_kind="sync_mapping") == 7


def test_healthz_follows_the_database(tmp_path_factory: pytest.TempPathFactory) -> None:
    server = Server(tmp_path_factory.mktemp("pg") / "data")
    engine = create_engine(server.url, pool_size=4)
    try:
        migrate.upgrade(engine)
        worker, thread = run_worker(App(engine))
        status = StatusServer("127.0.0.1:0", worker.health, worker.readiness).start()
        url = f"{status.url}/healthz"
        assert requests.get(url, timeout=10).status_code == 200
        server.stop()
        # The answer is kept a second (scrapes must not load the database pool).
        wait_for(lambda: requests.get(url, timeout=20).status_code == 503, timeout=30)
        assert requests.get(url, timeout=20).json()["database"] is False
        server.start()
        wait_for(lambda: requests.get(url, timeout=20).status_code == 200, timeout=30)
        worker.stop(immediately=True)
        thread.join(15)
        status.stop()
    finally:
        engine.dispose()
        server.cleanup()


def test_sd_notify_ready_watchdog_stopping(engine: Engine, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(10)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    worker, thread = run_worker(App(engine), [SystemdHooks()])
    messages = [sock.recv(4096).decode() for _ in range(2)]
    worker.stop()
    thread.join(15)
    while True:
        try:
            messages.append(sock.recv(4096).decode())
        except TimeoutError:
            break
        if messages[-1].startswith("STOPPING=1"):
            break
    sock.close()
    assert messages[0].startswith("READY=1")
    assert any(m.startswith("WATCHDOG=1\nSTATUS=crmsync worker ") for m in messages)
    assert messages[-1].startswith("STOPPING=1")
    assert os.environ["NOTIFY_SOCKET"] == path
