"""``crmsync demo``: the first five minutes. With nothing configured it starts the embedded
PostgreSQL and the local Dataverse-compatible emulator, loads the sample ERP data, sets up
the seed's seven mappings with short intervals, runs a worker and shows what happens, while
a small script edits records on both sides so the user sees changes flow.

The entries keep NAV's 12-hour inactivity holds: ERP edits wake them through the change
triggers, CRM edits through the emulator's webhook calls (push) and the remote probe."""

from __future__ import annotations

import collections
import logging
import os
import random
import secrets
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from datetime import datetime, timedelta

import requests
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from worker.app import App
from worker.commands.entries import print_table
from worker.commands.status import entry_rows, read_status
from worker.db import migrate
from worker.db.embedded import start_embedded
from worker.db.engine import create_engine
from worker.emulator import EmulatorServer, start_emulator
from worker.errors import ConfigurationError
from worker.runtime.http import StatusServer
from worker.runtime.webhook import PATH_PREFIX, WebhookReceiver
from worker.runtime.worker import Worker, WorkerConfig
from worker.sample.data import load_sample_data
from worker.sample.defaults import DEFAULT_MAPPINGS, setup_defaults
from worker.settings import Settings
from worker.sync.capture import pending_change_age

log = logging.getLogger(__name__)
DEMO_DATABASE = "crmsync_demo"
# The CRM's customers (what the CUSTOMER mapping reads); vendors and others are left alone.
CUSTOMER_ACCOUNTS = "statecode eq 0 and customertypecode eq 3"


@dataclass(frozen=True)
class DemoOptions:
    duration: float | None = None
    customers: int = 50
    interval: timedelta = timedelta(seconds=10)
    crm_port: int = 8080
    metrics_address: str = "127.0.0.1:9465"
    change_every: float = 4.0


class Demo:
    def __init__(self, options: DemoOptions) -> None:
        self.options = options
        self.events: collections.deque[str] = collections.deque(maxlen=10)
        self.stop = threading.Event()
        self.engine: Engine | None = None
        self.crm: EmulatorServer | None = None
        self.worker: Worker | None = None
        self.status: StatusServer | None = None
        self.webhooks: WebhookReceiver | None = None
        self.database_url = ""
        self.worker_thread: threading.Thread | None = None
        self.shown_jobs: set[int] = set()

    # -- set-up --------------------------------------------------------------------------
    def start(self) -> None:
        # pgserver asks platformdirs for a runtime dir when imported, which warns when
        # XDG_RUNTIME_DIR is unset; its fallback is fine.
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        self._say("starting the embedded PostgreSQL (first start takes a few seconds)")
        self.database_url = _fresh_database(Settings.from_env())
        self.engine = create_engine(self.database_url, pool_size=10)
        migrate.upgrade(self.engine)
        self.crm = _start_crm(self.options.crm_port)
        os.environ["CRMSYNC_CRM_URL"] = self.crm.base_url
        os.environ["CRMSYNC_CRM_AUTH"] = "none"
        os.environ["CRMSYNC_CRM_WEBHOOK"] = "true"
        os.environ["CRMSYNC_CRM_WEBHOOK_SECRET"] = secrets.token_urlsafe(24)
        summary = load_sample_data(self.engine, customers=self.options.customers)
        rows = sum(t.inserted for t in summary.tables)
        self._say(f"sample ERP data loaded: {rows} rows in schema erp")
        setup_defaults(self.engine, interval=self.options.interval)
        self._say(f"seven default mappings set up, each synchronized every "
                  f"{self.options.interval.total_seconds():.0f} s; after a run that changed "
                  "nothing an entry is on hold for 12 hours (NAV's inactivity timeout) until "
                  "an edit wakes it")
        app = App(self.engine)  # the process' one engine, clients and metrics
        self.worker = app.worker(WorkerConfig(
            concurrency=2, poll_interval=1.0, change_wake_delay=timedelta(seconds=2),
            shutdown_timeout=10.0, remote_probe=True))
        app.install_cluster_metrics()
        self.webhooks = app.webhooks().start()
        self.status = _start_status(self.options.metrics_address, self.worker, self.webhooks)
        self._connect_push()
        if not sys.stdout.isatty():
            self._print_header()
        self.worker_thread = threading.Thread(target=self.worker.run, name="demo-worker",
                                              daemon=True)
        self.worker_thread.start()
        threading.Thread(target=self._make_changes, name="demo-changes", daemon=True).start()

    # -- running ---------------------------------------------------------------------------
    def run(self) -> int:
        started = time.monotonic()
        tty = sys.stdout.isatty()
        try:
            while not self.stop.is_set():
                if self.options.duration and time.monotonic() - started > self.options.duration:
                    break
                self._render(tty)
                self.stop.wait(1.0 if tty else 2.0)
        except KeyboardInterrupt:
            print("\nstopping (Ctrl-C)...")
        return self.finish()

    def finish(self) -> int:
        self.stop.set()  # no more edits; the worker carries what is left
        if self.worker is not None and self.worker_thread is not None:
            if self.engine is not None:
                _wait_until_carried(self.engine, seconds=20)
            self.worker.stop()
            self.worker_thread.join(20)
        status, line = _closing(self.engine, self.database_url) if self.engine is not None \
            else (1, "the demo did not start")
        if self.status is not None:
            self.status.stop()
        if self.webhooks is not None:
            self.webhooks.stop()
        if self.crm is not None:
            self.crm.stop()
        print(line)
        return status

    def _render(self, tty: bool) -> None:
        assert self.engine is not None and self.crm is not None
        status = read_status(self.engine)
        with self.engine.connect() as conn:
            jobs = conn.execute(sa.text(
                "SELECT id, mapping_name, direction, inserted, modified, deleted, unchanged, "
                "failed FROM crmsync.sync_jobs WHERE finished_at IS NOT NULL "
                "AND started_at > now() - interval '10 minutes' ORDER BY finished_at")).all()
        for job in jobs:
            if job.id in self.shown_jobs:
                continue
            self.shown_jobs.add(job.id)
            changed = job.inserted + job.modified + job.deleted + job.failed
            if changed:
                arrow = "→ CRM" if job.direction == "to_integration" else "← CRM"
                self._say(f"{job.mapping_name} {arrow}: inserted {job.inserted}, modified "
                          f"{job.modified}, deleted {job.deleted}, failed {job.failed}")
        if tty:
            print("\x1b[2J\x1b[H", end="")
            self._print_header()
            print()
            print_table(entry_rows(status["entries"]))
            print("\nrecent events:")
            for event in self.events:
                print(f"  {event}")
            sys.stdout.flush()

    def _print_header(self) -> None:
        assert self.crm is not None
        print("crmsync demo — ERP tables in PostgreSQL ↔ a local Dataverse-compatible "
              "test server (Ctrl-C stops)")
        print(f"  CRM (emulator):  {self.crm.base_url}/accounts")
        if self.status is not None:
            print(f"  metrics:         {self.status.url}/metrics")
        print(f"  database:        {_redacted(self.database_url)}  (schemas erp, crmsync)",
              flush=True)

    def _connect_push(self) -> None:
        """The emulator calls the worker's webhook after each CRM write, as a Dataverse
        service endpoint would (the key travels in a header, never on screen)."""
        assert self.crm is not None
        if self.status is None:
            self._say("no HTTP listener: CRM edits reach the ERP through the remote probe")
            return
        requests.post(f"{self.crm.admin_url}/webhooks", timeout=10, json={
            "url": f"{self.status.url}{PATH_PREFIX}crm",
            "headers": {"x-crmsync-webhook-key": os.environ["CRMSYNC_CRM_WEBHOOK_SECRET"]}})
        self._say("CRM edits are pushed to the worker (webhook) and probed for at each "
                  "run interval")

    def _say(self, text: str) -> None:
        line = f"{datetime.now():%H:%M:%S} {text}"
        self.events.append(line)
        if not sys.stdout.isatty():
            print(line, flush=True)

    # -- the change script ----------------------------------------------------------------
    def _make_changes(self) -> None:
        rng = random.Random(7)
        actions = [self._edit_local_customer, self._edit_remote_account,
                   self._add_local_customer, self._add_remote_contact, self._edit_local_item]
        step = 0
        self.stop.wait(self.options.interval.total_seconds() + 2)
        while not self.stop.is_set():
            try:
                actions[step % len(actions)](rng)
            except Exception as exc:  # a demo edit failing must not end the demo
                self._say(f"demo edit failed: {exc}")
            step += 1
            self.stop.wait(self.options.change_every)

    def _edit_local_customer(self, rng: random.Random) -> None:
        assert self.engine is not None
        with self.engine.begin() as conn:
            no, name = conn.execute(sa.text(
                "SELECT no, name FROM erp.customer ORDER BY random() LIMIT 1")).one()
            phone = f"+49 30 {rng.randint(1000000, 9999999)}"
            conn.execute(sa.text("UPDATE erp.customer SET phone_no = :p WHERE no = :n"),
                         {"p": phone, "n": no})
        self._say(f"ERP: customer {no} {name}: phone_no := {phone}")

    def _edit_remote_account(self, rng: random.Random) -> None:
        assert self.crm is not None
        accounts = requests.get(f"{self.crm.base_url}/accounts",
                                params={"$select": "accountid,name", "$top": "50",
                                        "$filter": CUSTOMER_ACCOUNTS},
                                timeout=10).json()["value"]
        if not accounts:
            return
        account = rng.choice(accounts)
        city = rng.choice(["Aarhus", "Lyon", "Graz", "Leeds", "Turin", "Ghent", "Porto"])
        requests.patch(f"{self.crm.base_url}/accounts({account['accountid']})",
                       json={"address1_city": city}, headers={"If-Match": "*"}, timeout=10)
        self._say(f"CRM: account {account['name']}: address1_city := {city}")

    def _add_local_customer(self, rng: random.Random) -> None:
        assert self.engine is not None
        name = f"Demo Customer {rng.randint(100, 999)}"
        with self.engine.begin() as conn:
            no = conn.scalar(sa.text(
                "INSERT INTO erp.customer (name, city, currency_code, salesperson_code) "
                "SELECT :name, 'Berlin', 'EUR', (SELECT code FROM erp.salesperson "
                "ORDER BY code LIMIT 1) RETURNING no"), {"name": name})
        self._say(f"ERP: new customer {no} {name}")

    def _add_remote_contact(self, rng: random.Random) -> None:
        assert self.crm is not None
        accounts = requests.get(f"{self.crm.base_url}/accounts",
                                params={"$select": "accountid,name", "$top": "20",
                                        "$filter": CUSTOMER_ACCOUNTS},
                                timeout=10).json()["value"]
        if not accounts:
            return
        account = rng.choice(accounts)
        first, last = rng.choice(["Ana", "Bo", "Chloé", "Dev"]), rng.choice(
            ["Novak", "Berg", "Silva", "Kaur"])
        requests.post(f"{self.crm.base_url}/contacts", json={
            "firstname": first, "lastname": last,
            "emailaddress1": f"{first.lower()}.{last.lower()}@example.com",
            "parentcustomerid_account@odata.bind": f"/accounts({account['accountid']})",
        }, timeout=10)
        self._say(f"CRM: new contact {first} {last} at {account['name']}")

    def _edit_local_item(self, rng: random.Random) -> None:
        assert self.engine is not None
        with self.engine.begin() as conn:
            no, price = conn.execute(sa.text(
                "UPDATE erp.item SET unit_price = round(unit_price * 1.05, 2) "
                "WHERE no = (SELECT no FROM erp.item ORDER BY random() LIMIT 1) "
                "RETURNING no, unit_price")).one()
        self._say(f"ERP: item {no}: unit_price := {price}")


def _fresh_database(settings: Settings) -> str:
    """A new, empty demo database on the embedded server (or on CRMSYNC_DATABASE_URL's
    server when the user points the demo there explicitly)."""
    base = settings.database_url or start_embedded(settings.home)
    admin = create_engine(base, pool_size=1)
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{DEMO_DATABASE}" WITH (FORCE)'))
        conn.execute(sa.text(f'CREATE DATABASE "{DEMO_DATABASE}"'))
    admin.dispose()
    return sa.engine.make_url(base).set(database=DEMO_DATABASE).render_as_string(
        hide_password=False)


def _start_crm(port: int) -> EmulatorServer:
    try:
        return start_emulator(port=port, sample_users=5)
    except OSError:
        return start_emulator(port=0, sample_users=5)


def _start_status(address: str, worker: Worker,
                  webhooks: WebhookReceiver) -> StatusServer | None:
    if not address:
        return None
    try:
        return StatusServer(address, worker.health, worker.readiness, webhooks).start()
    except ConfigurationError:
        host = address.rpartition(":")[0] or "127.0.0.1"
        return StatusServer(f"{host}:0", worker.health, worker.readiness, webhooks).start()


def _wait_until_carried(engine: Engine, seconds: float) -> None:
    """Until no ERP change waits for a pass (the worker is still running), at most
    ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            if not pending_change_age(conn):
                return
        time.sleep(0.5)


def _closing(engine: Engine, database_url: str) -> tuple[int, str]:
    """The demo's exit status and last line, true when it is printed: which mappings have
    synchronized, and whether an ERP edit still waits to be carried."""
    with engine.connect() as conn:
        synced = set(conn.scalars(sa.text(
            "SELECT DISTINCT mapping_name FROM crmsync.job_queue_log_entries "
            "WHERE status = 'success' AND mapping_name IS NOT NULL")))
        pending = sorted(pending_change_age(conn))
    expected = [m.name for m in DEFAULT_MAPPINGS]
    missing = [m for m in expected if m not in synced]
    if missing:
        return 1, f"not yet synchronized successfully: {', '.join(missing)}"
    where = f"The demo database stays at {_redacted(database_url)}."
    if pending:
        return 0, (f"all seven mappings synchronized; ERP edits of {', '.join(pending)} were "
                   f"not carried yet when the demo stopped. {where}")
    return 0, (f"all seven mappings synchronized ({', '.join(expected)}), and every ERP edit "
               f"was carried to the CRM. {where}")


def _redacted(url: str) -> str:
    return sa.engine.make_url(url).render_as_string(hide_password=True)
