"""End-to-end freshness with the default schedule (the seven default mappings, NAV's 30-minute
entries, 12-hour inactivity holds, the 30-second change rule): how long an edit on one side
takes to appear on the other, measured from the edit to its arrival (median, p95), in three
set-ups, one run:

- before: no remote probe, no push (the behaviour before both existed),
- probe: the remote probe at a 60 s ``remote_probe_interval`` (the default is the entry's
  run interval, 30 minutes: too long to measure here), no push,
- push: the emulator calls the worker's webhook after each write (plus the probe at its
  default interval).

Each set-up starts from the steady state of a quiet system: everything synchronized and
every entry on its 12-hour hold. CRM edits (an account's city) and ERP edits (a customer's
phone number) are measured in separate phases, so that a run woken by one side does not
carry the other side's edits. An edit not arrived after ``--cap`` seconds counts as "> cap".

    .venv/bin/python bench/freshness_bench.py [--edits 6] [--spacing 4] [--cap 150]
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import requests
import sqlalchemy as sa
from emulator_process import SERVICE, free_port, start_emulator
from scratch import scratch_database

from worker.app import App
from worker.db.engine import create_engine
from worker.runtime.http import StatusServer
from worker.runtime.webhook import PATH_PREFIX
from worker.runtime.worker import WorkerConfig
from worker.sample.data import load_sample_data
from worker.sample.defaults import setup_defaults
from worker.sync.clients import Clients
from worker.sync.engine import SyncEngine

QUIET = ("UPDATE crmsync.job_queue_entries SET status = 'on_hold_inactivity', "
         "next_run_at = now() + inactivity_timeout, attempts = 0")


@dataclass
class Bench:
    engine: sa.engine.Engine
    crm: str  # service root URL
    admin: str
    args: argparse.Namespace
    session: requests.Session

    def settle(self) -> None:
        """Everything synchronized, every entry on its 12-hour hold, no webhook."""
        clients = Clients()
        SyncEngine(self.engine, clients).run_all()
        clients.close()
        self.session.delete(f"{self.admin}/webhooks", timeout=10)
        with self.engine.begin() as conn:
            conn.execute(sa.text(QUIET))

    def customers(self, offset: int) -> list[tuple[str, str]]:
        """(customer no, account id) pairs of coupled customers, a fresh slice per phase."""
        with self.engine.connect() as conn:
            return [(r.local_no, r.remote_id) for r in conn.execute(sa.text(
                "SELECT c.no AS local_no, k.remote_id FROM erp.customer c "
                "JOIN crmsync.couplings k ON k.mapping_name = 'CUSTOMER' "
                "AND k.local_id = CAST(c.id AS text) ORDER BY c.no OFFSET :o LIMIT :n"),
                {"o": offset, "n": self.args.edits})]

    def crm_edit(self, pair: tuple[str, str], token: str) -> Callable[[], bool]:
        self.session.patch(f"{self.crm}/accounts({pair[1]})", json={"address1_city": token},
                           headers={"If-Match": "*"}, timeout=10).raise_for_status()
        return lambda: self._erp_value("city", pair[0]) == token

    def erp_edit(self, pair: tuple[str, str], token: str) -> Callable[[], bool]:
        with self.engine.begin() as conn:
            conn.execute(sa.text("UPDATE erp.customer SET phone_no = :t WHERE no = :n"),
                         {"t": token, "n": pair[0]})
        return lambda: self.session.get(
            f"{self.crm}/accounts({pair[1]})", params={"$select": "telephone1"},
            timeout=10).json().get("telephone1") == token

    def _erp_value(self, column: str, no: str) -> object:
        with self.engine.connect() as conn:
            return conn.scalar(sa.text(f"SELECT {column} FROM erp.customer WHERE no = :n"),
                               {"n": no})

    def phase(self, edit: Callable[[tuple[str, str], str], Callable[[], bool]],
              offset: int) -> list[float | None]:
        """Edits spaced ``--spacing`` s apart; the seconds until each arrived (None: not
        within ``--cap``)."""
        waiting: dict[int, tuple[float, Callable[[], bool]]] = {}
        found: dict[int, float | None] = {}
        for n, pair in enumerate(self.customers(offset)):
            token = f"F{secrets.token_hex(4)}"
            waiting[n] = (time.monotonic(), edit(pair, token))
            self._poll(waiting, found, until=time.monotonic() + self.args.spacing)
        self._poll(waiting, found, until=float("inf"))
        return [found[n] for n in sorted(found)]

    def _poll(self, waiting: dict[int, tuple[float, Callable[[], bool]]],
              found: dict[int, float | None], until: float) -> None:
        """Check the outstanding edits every 0.2 s until ``until`` (inf: until none is
        outstanding)."""
        while time.monotonic() < until and (waiting or until != float("inf")):
            for n, (started, arrived) in list(waiting.items()):
                if arrived():
                    found[n] = time.monotonic() - started
                    del waiting[n]
                elif time.monotonic() - started > self.args.cap:
                    found[n] = None
                    del waiting[n]
            time.sleep(0.2)


@contextmanager
def running_worker(bench: Bench, *, probe: bool, push: bool) -> Iterator[None]:
    """A worker as ``crmsync run`` makes one (NAV's 30 s change rule), with or without the
    remote probe and the webhook."""
    app = App(bench.engine)
    worker = app.worker(WorkerConfig(concurrency=4, remote_probe=probe, poll_interval=2.0))
    receiver = app.webhooks().start()
    server = StatusServer("127.0.0.1:0", worker.health, worker.readiness, receiver).start()
    if push:
        bench.session.post(f"{bench.admin}/webhooks", timeout=10, json={
            "url": f"{server.url}{PATH_PREFIX}crm",
            "headers": {"x-crmsync-webhook-key": os.environ["CRMSYNC_CRM_WEBHOOK_SECRET"]},
        }).raise_for_status()
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    worker.started.wait(30)
    try:
        yield
    finally:
        worker.stop(immediately=True)
        thread.join(30)
        server.stop()
        receiver.stop()


def describe(label: str, seconds: list[float | None], cap: float) -> str:
    arrived = sorted(s for s in seconds if s is not None)
    late = len(seconds) - len(arrived)
    ordered = arrived + [float("inf")] * late
    median = statistics.median(ordered)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]

    def show(value: float) -> str:
        return f"> {cap:.0f} s" if value == float("inf") else f"{value:.1f} s"

    return (f"  {label:<9} median {show(median):>9}, p95 {show(p95):>9} "
            f"({len(arrived)} of {len(seconds)} edits arrived within {cap:.0f} s)")


def prepare(args: argparse.Namespace) -> tuple[sa.engine.Engine, str]:
    url = scratch_database("crmsync_freshness_bench")
    engine = create_engine(url, pool_size=12)
    load_sample_data(engine, customers=args.customers)
    setup_defaults(engine)
    return engine, url


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=100)
    parser.add_argument("--edits", type=int, default=6, help="edits per direction and set-up")
    parser.add_argument("--spacing", type=float, default=4.0, help="seconds between edits")
    parser.add_argument("--cap", type=float, default=150.0,
                        help="an edit not arrived after this many seconds counts as late")
    args = parser.parse_args()
    port = free_port()
    emulator = start_emulator(port, "--sample-users", "5")
    os.environ["CRMSYNC_CRM_URL"] = f"http://127.0.0.1:{port}{SERVICE}"
    os.environ["CRMSYNC_CRM_WEBHOOK"] = "true"
    os.environ["CRMSYNC_CRM_WEBHOOK_SECRET"] = secrets.token_urlsafe(24)
    engine, _ = prepare(args)
    bench = Bench(engine, os.environ["CRMSYNC_CRM_URL"], f"http://127.0.0.1:{port}/_admin",
                  args, requests.Session())
    results: dict[str, dict[str, list[float | None]]] = {}
    offset = 0
    try:
        for label, probe, push, interval in (("before", False, False, None),
                                             ("probe", True, False, "60 seconds"),
                                             ("push", True, True, None)):
            bench.settle()
            with engine.begin() as conn:
                conn.execute(sa.text("UPDATE crmsync.integration_table_mappings "
                                     "SET remote_probe_interval = CAST(:i AS interval)"),
                             {"i": interval})
            with running_worker(bench, probe=probe, push=push):
                crm = bench.phase(bench.crm_edit, offset)
                offset += args.edits
                erp = bench.phase(bench.erp_edit, offset) if label != "probe" else []
                offset += args.edits
            results[label] = {"CRM → ERP": crm, "ERP → CRM": erp}
            print(f"{label}: done", flush=True)
    finally:
        emulator.terminate()
        emulator.wait(10)
        engine.dispose()
    print(f"\nEdit to arrival, default schedule (30-minute entries, 12-hour inactivity holds, "
          f"30 s change rule), {args.edits} edits per direction {args.spacing:.0f} s apart:")
    for direction in ("CRM → ERP", "ERP → CRM"):
        print(direction)
        for label, by_direction in results.items():
            if by_direction[direction]:
                print(describe(label, by_direction[direction], args.cap))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
