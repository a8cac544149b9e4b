"""A long pass shows its progress while it runs: the job log's counters and
``crmsync_sync_records_total`` grow as each chunk commits (seen from another database
connection at the moment the pass reports a chunk, never before its commit), the pass knows
its total up front (the local change set; the CRM's ``$count``, given as a lower bound when
Dataverse's count stops at 5,000), and the worker's sd_notify ``STATUS=`` says which pass
runs and how far it is."""

from __future__ import annotations

import re
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.remote.helpers import client_for, marker, seed_accounts
from tests.sync.conftest import World, add_customers
from worker.app import App
from worker.commands.sync import job_pace
from worker.emulator import EmulatorServer
from worker.metrics import REGISTRY, PassMetrics
from worker.remote.filters import eq
from worker.runtime.systemd import SystemdHooks
from worker.runtime.worker import WorkerConfig
from worker.sync.clients import Clients
from worker.sync.engine import SyncEngine
from worker.sync.model import Direction
from worker.sync.progress import PassObservers, PassProgress

TO, FROM = Direction.TO_INTEGRATION, Direction.FROM_INTEGRATION


class Watcher:
    """At each report of a chunk: the pass's job row as another connection sees it, and
    the metric."""

    def __init__(self, url: sa.URL) -> None:
        self.other = sa.create_engine(url)
        self.seen: list[dict[str, Any]] = []

    def pass_progress(self, progress: PassProgress, counts: Counter[str]) -> None:
        with self.other.connect() as conn:
            row = conn.execute(sa.text(
                "SELECT id, started_at, finished_at, inserted, modified, unchanged, status, "
                "(SELECT count(*) FROM crmsync.couplings c WHERE c.last_job_to = j.id "
                "AND c.state = 'coupled') "
                "AS coupled_by_job FROM crmsync.sync_jobs j "
                "WHERE mapping_name = :m AND direction = :d ORDER BY id DESC LIMIT 1"),
                {"m": progress.mapping, "d": progress.direction.value}).mappings().first()
            now = conn.scalar(sa.text("SELECT now()"))
        metric = REGISTRY.get_sample_value("crmsync_sync_records_total", {
            "mapping": progress.mapping, "direction": progress.direction.value,
            "result": "inserted"}) or 0.0
        self.seen.append({"direction": progress.direction, "added": +counts,
                          "done": progress.done, "total": progress.total_text(),
                          "job": dict(row) if row else None, "metric": metric,
                          "pace": job_pace(dict(row), now) if row else None})


@pytest.fixture
def watched(world: World) -> Iterator[tuple[SyncEngine, Watcher]]:
    watcher = Watcher(world.engine.url)
    clients = Clients()
    yield SyncEngine(world.engine, clients, PassObservers([PassMetrics(), watcher])), watcher
    clients.close()
    watcher.other.dispose()


def test_the_job_log_and_the_metric_grow_chunk_by_chunk(
        world: World, watched: tuple[SyncEngine, Watcher]) -> None:
    sync, watcher = watched
    world.counts("CURRENCY")
    add_customers(world, 1200)  # three chunks of at most 500
    before = REGISTRY.get_sample_value("crmsync_sync_records_total", {
        "mapping": "CUSTOMER", "direction": TO.value, "result": "inserted"}) or 0.0
    (summary,) = sync.run_all(["CUSTOMER"])
    assert summary.error is None and summary.passes[0].counts["inserted"] == 1200

    to_crm = [s for s in watcher.seen if s["direction"] is TO]
    assert to_crm[0]["added"] == Counter() and to_crm[0]["total"] == "1,200"  # known up front
    chunks = [s for s in to_crm if s["added"]]
    # Two chunks finish at once (worker.sync.pipeline): each reports what it committed.
    assert sorted(s["added"]["inserted"] for s in chunks) == [200, 500, 500]
    for s in chunks:  # committed and visible elsewhere when reported; the pass still runs
        assert s["job"]["status"] == "running"
        # The counters were committed with the chunk's couplings, never ahead of them,
        # and nothing is shown before it was committed.
        assert s["job"]["inserted"] == s["job"]["coupled_by_job"]
        assert s["done"] <= s["job"]["inserted"]
        assert s["metric"] - before <= s["job"]["inserted"]
        assert s["pace"][1] is not None and s["pace"][1] > 0  # crmsync jobs: a rate
    assert chunks[0]["job"]["inserted"] < 1200  # the first chunk shows long before the end
    assert max(s["done"] for s in chunks) == 1200
    assert REGISTRY.get_sample_value("crmsync_sync_records_total", {
        "mapping": "CUSTOMER", "direction": TO.value, "result": "inserted"}) - before == 1200
    # The CRM now holds the 1,200 records the pass wrote: the other pass's total is the
    # service's count, and their echoes count as read chunk by chunk (with no transaction).
    from_crm = [s for s in watcher.seen if s["direction"] is FROM]
    assert from_crm[0]["total"] == "1,200"
    assert [s["done"] for s in from_crm if s["added"]] == [500, 1000, 1200]


def test_a_pass_with_nothing_to_do_says_so_up_front(
        world: World, watched: tuple[SyncEngine, Watcher]) -> None:
    sync, watcher = watched
    world.counts("CURRENCY", "CUSTOMER")
    sync.run_all(["CUSTOMER"])
    totals = {s["direction"]: s["total"] for s in watcher.seen if not s["added"]}
    assert totals[TO] == "0"


def test_dataverse_counts_stop_at_5000_and_are_given_as_a_lower_bound(
        emulator: EmulatorServer) -> None:
    tag = marker()
    seed_accounts(emulator, 5001, tag)
    seed_accounts(emulator, 3, f"{tag}-few")
    counts: list[tuple[int, bool]] = []
    with client_for(emulator, page_size=100) as client:
        accounts = client.entity_set("accounts", "accountid")
        many = accounts.read_modified_since(None, filter=eq("description", tag),
                                            on_count=lambda n, capped: counts.append(
                                                (n, capped)))
        next(iter(many))  # the first page is enough
        few = accounts.read_modified_since(None, filter=eq("description", f"{tag}-few"),
                                           on_count=lambda n, capped: counts.append(
                                               (n, capped)))
        assert len(list(few)) == 3
    assert counts == [(5000, True), (3, False)]


@pytest.mark.parametrize("emulator_profile", ["odata"], indirect=True)
def test_a_generic_service_is_not_asked_for_a_count_unless_configured(
        emulator: EmulatorServer) -> None:
    tag = marker()
    seed_accounts(emulator, 7, tag)
    counts: list[tuple[int, bool]] = []
    for settings, expected in (({"dialect": "odata"}, []),
                               ({"dialect": "odata", "count_reads": "true"}, [(7, False)])):
        with client_for(emulator, **settings) as client:
            accounts = client.entity_set("accounts", "ID", "modifiedAt")
            list(accounts.read_modified_since(
                None, filter=eq("description", tag),
                on_count=lambda n, capped: counts.append((n, capped))))
        assert counts == expected


def test_the_worker_status_says_which_pass_runs_and_how_far(
        world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(60)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    world.counts("CURRENCY")
    add_customers(world, 1200)
    world.sql("INSERT INTO crmsync.job_queue_entries (job_kind, mapping_name, run_interval) "
              "VALUES ('sync_mapping', 'CUSTOMER', '1 hour')")
    app = App(world.engine)
    worker = app.worker(WorkerConfig(poll_interval=0.5), hooks=[SystemdHooks()])
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    statuses: list[str] = []
    try:
        while not any("CUSTOMER from CRM" in s for s in statuses) \
                or "CUSTOMER" in statuses[-1]:  # until the run is over
            message = sock.recv(4096).decode()
            statuses += [line for line in message.splitlines() if line.startswith("STATUS=")]
    finally:
        worker.stop(immediately=True)
        thread.join(20)
        sock.close()
        app.close()
    doing = re.compile(r"^STATUS=crmsync worker \S+ running; CUSTOMER to CRM: [\d,]+ / 1,200")
    assert any(doing.match(s) for s in statuses), statuses
    assert re.match(r"^STATUS=crmsync worker \S+ running$", statuses[-1]), statuses
