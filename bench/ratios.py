"""The sync engine against the raw capacity of the same requests, in one run, as ratios.

Every figure is measured in this one run on this machine, the emulator in its own process,
PostgreSQL on loopback, and printed beside its target:

1. initial sync to the CRM (CUSTOMER + CONTACTS, both passes of each, whole wall time) vs
   the raw client sending the very requests the engine sent — its creates recorded as
   they went and replayed on the emptied emulator, same ids, bodies, binds, batch size,
   grouping and concurrency (target ≥ 0.7×) —, with the CPU time per record of each
   beside (``--bulk``: also both with Dataverse's CreateMultiple); the raw client's own
   synthetic creates (fewer properties, no binds: the figure of earlier sessions) beside;
   in ``--rounds`` rounds (3), each in a world of its own, the round of the median ratio
   shown and every round's ratio beside (the machine drifts more within minutes than a
   change of crmsync moves the figure);
2. initial import from the CRM (accounts → empty erp.customer) vs the rate of (1) in the
   same world (≥ 0.7×);
3. a run with nothing changed: statements and requests per pass, and the whole run's time
   on a large table vs a small one (≤ 5 statements and ≤ 1 request per CRM→ERP pass;
   ≤ 1.5×), crmsync's own time (without CRM waits) beside; measured in the steady state of
   a table synced long ago (the couplings vacuumed and analyzed after the initial sync, as
   autovacuum does within a minute);
4. 1 % of the large table changed on both sides vs the same number of changed records in
   the small table, whole run (≤ 1.2×);
5. (``--memory``) peak RSS of ``crmsync sync CUSTOMER`` in a process of its own — the
   initial sync, every customer created in the CRM and read back — over a large table vs
   a small one (≤ 1.2×, ≤ 150 MB);
6. the scheduler: 1,000 entries due every minute on 2 ``crmsync run`` workers (jobs that
   do nothing, through the plugin seam the tests use): start lag p99 (≤ 1 s); then with
   every entry on hold, one idle worker's CPU (≤ 2 % of a core) and transactions per
   second (≤ 1).

    python bench/ratios.py                       # 20,000 / 1,000 / 100,000 customers
    python bench/ratios.py --small 1000 --large 20000 --memory --bulk
    python bench/ratios.py --only-initial 5      # (1) alone, in five rounds

Uses CRMSYNC_DATABASE_URL's server (default: PostgreSQL on 127.0.0.1:5432) and scratch
databases named crmsync_ratio_*, dropped and recreated.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import sqlalchemy as sa
from emulator_process import SERVICE, free_port, start_emulator
from scratch import scratch_database

from worker import collector
from worker.db.engine import create_engine
from worker.remote.batch import Operation
from worker.remote.client import ODataClient
from worker.remote.config import load_connection
from worker.sample.data import load_sample_data
from worker.sample.defaults import setup_defaults
from worker.sync.clients import Clients
from worker.sync.engine import SyncEngine
from worker.sync.from_remote import SETTLED
from worker.sync.model import Direction

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.support.handlers, the scheduler target's jobs


@dataclass
class World:
    """A scratch database with the sample ERP and the defaults, and an emulator."""

    name: str
    engine: sa.engine.Engine
    url: str
    port: int
    process: subprocess.Popen[bytes]
    statements: int = 0
    in_pass: list[int] = field(default_factory=list)  # statements of each pass, in order
    waits: CrmWaits = field(default_factory=lambda: CrmWaits())
    _sync: SyncEngine | None = None

    @property
    def crm(self) -> str:
        return f"http://127.0.0.1:{self.port}{SERVICE}"

    def requests(self) -> int:
        stats = requests.get(f"http://127.0.0.1:{self.port}/_admin/stats", timeout=10).json()
        return int(stats.get("requests", stats.get("total", 0)))

    def sql(self, statement: str, **params: Any) -> Any:
        with self.engine.begin() as conn:
            return conn.execute(sa.text(statement), params)

    def vacuum(self, *tables: str) -> None:
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            for table in tables:
                conn.execute(sa.text(f"VACUUM ANALYZE {table}"))

    def sync_engine(self) -> SyncEngine:
        """The world's one engine, as a process has one (its reflected tables, trusted
        checks and connections kept from run to run); its requests are told to the
        CrmWaits of the run under way (``waits``)."""
        if self._sync is None:
            os.environ["CRMSYNC_CRM_URL"] = self.crm
            self._sync = SyncEngine(self.engine, Clients(observers=lambda _: _Current(self)))
        return self._sync

    def close(self) -> None:
        if self._sync is not None:
            self._sync.clients.close()
        self.process.terminate()
        self.process.wait(10)
        self.engine.dispose()


def cpu_seconds() -> float:
    """This process's CPU time (user + system, every thread): the raw client's and the
    engine's own work, both run here; the emulator and PostgreSQL run elsewhere."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) of another process of this machine, 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Cpu:
    """The CPU seconds of this process, the world's emulator and the PostgreSQL backends
    serving the world's database, from a start; the backends are those alive at the end
    (the engine's pool keeps its connections), what ended between is not counted."""

    w: World
    start: dict[str, float] = field(default_factory=dict)

    def backends(self) -> dict[str, float]:
        with self.w.engine.connect() as conn:
            pids = conn.execute(sa.text("SELECT pid FROM pg_stat_activity "
                                        "WHERE datname = current_database()")).scalars()
            return {f"pg{pid}": process_cpu(pid) for pid in pids}

    def now(self) -> dict[str, float]:
        return {"self": cpu_seconds(), "emulator": process_cpu(self.w.process.pid),
                **self.backends()}

    def __enter__(self) -> Cpu:
        self.start = self.now()
        return self

    def __exit__(self, *_: Any) -> None:
        end = self.now()
        self.seconds = {"self": end["self"] - self.start["self"],
                        "emulator": end["emulator"] - self.start["emulator"],
                        "postgresql": sum(v - self.start.get(k, 0.0) for k, v in end.items()
                                          if k.startswith("pg"))}

    def per_record(self, records: int) -> str:
        return ", ".join(f"{k} {v / records * 1e6:.0f}" for k, v in self.seconds.items())


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


@contextmanager
def world(name: str, customers: int, mappings: tuple[str, ...]) -> Iterator[World]:
    url = scratch_database(f"crmsync_ratio_{name}")
    engine = create_engine(url, pool_size=8)
    load_sample_data(engine, customers=customers)
    setup_defaults(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE crmsync.integration_table_mappings SET enabled = "
                             "(name = ANY(:m))"), {"m": list(mappings)})
    port = free_port()
    w = World(name, engine, url, port, start_emulator(port, "--sample-users", "5"))

    @sa.event.listens_for(engine, "before_cursor_execute")
    def count(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        # A pass's statements: from its sync job's INSERT to the UPDATE that finishes it;
        # the run's own (its lock, loading the mapping) are counted apart.
        w.statements += 1
        if statement.startswith("INSERT INTO crmsync.sync_jobs"):
            w.in_pass.append(0)
        if w.in_pass and w.in_pass[-1] >= 0:
            w.in_pass[-1] += 1
        if statement.startswith("UPDATE crmsync.sync_jobs SET finished_at") and w.in_pass:
            w.in_pass[-1] = -w.in_pass[-1]  # closed

    try:
        yield w
    finally:
        w.close()


@dataclass
class CrmWaits:
    """A RequestObserver: the wall-clock time spent waiting for the CRM (the union of the
    requests' intervals, as batch requests run in parallel)."""

    spans: list[tuple[float, float]] = field(default_factory=list)

    def request_finished(self, method: str, status_class: str, seconds: float) -> None:
        end = time.perf_counter()
        self.spans.append((end - seconds, end))

    def throttled(self, seconds: float) -> None:
        pass

    def seconds(self) -> float:
        total, reach = 0.0, float("-inf")
        for start, end in sorted(self.spans):
            if end > reach:
                total += end - max(start, reach)
                reach = end
        return total


@dataclass
class _Current:
    """A RequestObserver telling the world's current CrmWaits."""

    world: World

    def request_finished(self, method: str, status_class: str, seconds: float) -> None:
        self.world.waits.request_finished(method, status_class, seconds)

    def throttled(self, seconds: float) -> None:
        pass


@dataclass
class PassMarks:
    """A PassObserver noting statements and requests at the end of every pass."""

    world: World
    marks: list[tuple[Direction, int, int, float]] = field(default_factory=list)

    def pass_finished(self, mapping: str, direction: Direction, counts: Counter[str],
                      error: str | None) -> None:
        self.marks.append((direction, self.world.statements, self.world.requests(),
                           time.perf_counter()))

    def mapping_finished(self, mapping: str, ok: bool) -> None:
        pass


def run_mapping(w: World, name: str) -> dict[str, Any]:
    """Run one mapping; per pass: statements, requests, seconds, counts."""
    waits = w.waits = CrmWaits()
    sync = w.sync_engine()
    marks = PassMarks(w)
    sync.observer = marks
    start = (w.statements, w.requests(), time.perf_counter())
    w.in_pass.clear()
    summary = sync.run_mapping(name)
    seconds = time.perf_counter() - start[2]
    out: dict[str, Any] = {"seconds": seconds, "statements": w.statements - start[0],
                           "own": seconds - waits.seconds()}
    in_pass = [-n for n in w.in_pass]
    previous = start
    for (direction, statements, reqs, at), result in zip(marks.marks, summary.passes,
                                                          strict=True):
        short = "to" if direction is Direction.TO_INTEGRATION else "from"
        out[short] = {"statements": in_pass.pop(0),
                      "requests": reqs - previous[1],
                      "seconds": at - previous[2], "counts": result.counts}
        previous = (statements, reqs, at)
    return out


def raw_rate(w: World, accounts: int, contacts: int, *, bulk: bool = False
             ) -> tuple[float, float]:
    """Records/s of the client alone creating accounts and contacts (batch size and
    concurrency of the connection), as the engine sends them: one call per chunk of 500
    (``bulk``: as CreateMultiple, bulk_size records a request); and its CPU seconds per
    record."""
    env = {"CRMSYNC_RAW_URL": w.crm, "CRMSYNC_RAW_BULK_MESSAGES": "on" if bulk else "off"}
    with ODataClient(load_connection("raw", env=env)) as client:
        sets = {"accounts": client.entity_set("accounts", "accountid"),
                "contacts": client.entity_set("contacts", "contactid")}

        def body(entity_set: str, i: int) -> dict[str, Any]:
            if entity_set == "accounts":
                return {"name": f"Raw customer {i}", "accountnumber": f"R{i:06d}",
                        "address1_line1": f"{i} Raw Street", "address1_city": "Leeds",
                        "address1_postalcode": "LS1 1AA", "telephone1": "+44 113 000",
                        "emailaddress1": f"raw{i}@example.com", "customertypecode": 3}
            return {"firstname": f"Raw {i}", "lastname": "Contact", "jobtitle": "Buyer",
                    "emailaddress1": f"rawc{i}@example.com", "telephone1": "+44 113 111"}

        ops = [Operation("create", sets[s], str(uuid.uuid4()), body(s, i), ref=i)
               for s, n in (("accounts", accounts), ("contacts", contacts)) for i in range(n)]
        started, cpu = time.perf_counter(), cpu_seconds()
        for i in range(0, len(ops), 500):
            failed = [r for r in client.batch(ops[i:i + 500]) if not r.ok]
            if failed:
                raise SystemExit(f"raw create failed: {failed[0].error}")
        seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu
    requests.post(f"http://127.0.0.1:{w.port}/_admin/reset", timeout=30)
    return len(ops) / seconds, cpu / len(ops)


@contextmanager
def sent_by_engine(calls: list[list[Operation]]) -> Iterator[None]:
    """Every ``ODataClient.batch`` call made in this process meanwhile, its operations as
    they were sent (kept by reference: the engine's bodies are never changed once sent)."""
    original = ODataClient.batch

    def batch(self: ODataClient, operations: Any) -> Any:
        calls.append(list(operations))
        return original(self, operations)

    ODataClient.batch = batch  # type: ignore[method-assign]
    try:
        yield
    finally:
        ODataClient.batch = original  # type: ignore[method-assign]


def replay_rate(w: World, before: list[list[Operation]], timed: list[list[Operation]], *,
                bulk: bool = False) -> tuple[float, float, Cpu]:
    """Records/s of the client alone sending the very requests the engine sent: the
    emulator emptied (its seeded users and sample records made again, as the engine found
    them), ``before`` (what the prerequisite mappings created) sent untimed, then the
    ``timed`` calls in the engine's own groups, same ids, bodies and binds; and the
    client's CPU seconds per record."""
    requests.post(f"http://127.0.0.1:{w.port}/_admin/reset", timeout=30)
    env = {"CRMSYNC_RAW_URL": w.crm, "CRMSYNC_RAW_BULK_MESSAGES": "on" if bulk else "off"}
    with ODataClient(load_connection("raw", env=env)) as client:
        sets: dict[str, Any] = {}

        def again(call: list[Operation]) -> list[Operation]:
            out = []
            for n, op in enumerate(call):
                es = op.entity_set
                if es.name not in sets:
                    sets[es.name] = client.entity_set(es.name, es.key)
                out.append(Operation(op.kind, sets[es.name], op.key, op.values, op.etag, n,
                                     op.alternate))
            return out

        def send(calls: list[list[Operation]]) -> None:
            for call in calls:
                failed = [r for r in client.batch(call) if not r.ok]
                if failed:
                    raise SystemExit(f"replayed {call[0].kind} failed: {failed[0].error}")

        send([again(c) for c in before])
        calls = [again(c) for c in timed]
        records = sum(len(c) for c in calls)
        with Cpu(w) as by_process:
            started, cpu = time.perf_counter(), cpu_seconds()
            send(calls)
            seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu
    return records / seconds, cpu / records, by_process


def edit_both_sides(w: World, count: int) -> None:
    """``count`` changed customers: half edited in the ERP, half in the CRM."""
    local, remote = count // 2, count - count // 2
    w.sql("UPDATE erp.customer SET phone_no = '+1 555 ' || no "
          "WHERE no IN (SELECT no FROM erp.customer ORDER BY no LIMIT :n)", n=local)
    ids = [r["accountid"] for r in requests.get(f"{w.crm}/accounts", params={
        "$select": "accountid", "$orderby": "accountnumber desc", "$top": str(remote)},
        timeout=60).json()["value"]]
    operations = []
    with ODataClient(load_connection("raw", env={"CRMSYNC_RAW_URL": w.crm})) as client:
        accounts = client.entity_set("accounts", "accountid")
        operations = [Operation("update", accounts, i, {"address1_city": "Edited in CRM"})
                      for i in ids]
        client.batch(operations)


def scheduler(table: Table, entries: int, seconds: float) -> None:
    """Target 6 (see the module docstring). The first runs are due 10 s after the entries
    are written, once the workers are past their start-up."""
    url = scratch_database("crmsync_ratio_sched")
    engine = create_engine(url, pool_size=2)
    env = {**os.environ, "CRMSYNC_DATABASE_URL": url, "PYTHONPATH": str(ROOT),
           "CRMSYNC_PLUGINS": "tests.support.handlers", "CRMSYNC_LOG_LEVEL": "warning",
           "CRMSYNC_METRICS_ADDRESS": "127.0.0.1:0"}
    workers = [subprocess.Popen([sys.executable, "-m", "worker", "run"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
               for _ in range(2)]
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # both workers up before the entries arrive
            with engine.connect() as conn:
                if conn.scalar(sa.text("SELECT count(*) FROM crmsync.workers")) == 2:
                    break
            time.sleep(0.2)
        with engine.begin() as conn:
            conn.execute(sa.text(
                "INSERT INTO crmsync.job_queue_entries (job_kind, run_interval, next_run_at) "
                "SELECT 'cleanup', '1 minute', now() + (10 + n % 60) * interval '1 second' "
                "FROM generate_series(1, :n) n"), {"n": entries})
        time.sleep(seconds)
        with engine.connect() as conn:
            lags = sorted(conn.execute(sa.text(
                "SELECT extract(epoch FROM started_at - scheduled_for) FROM "
                "crmsync.job_queue_log_entries WHERE status = 'success'")).scalars())
        p99 = float(lags[int(len(lags) * 0.99) - 1]) if lags else float("inf")
        table.add(f"6. scheduler: {entries:,} entries every minute, 2 workers, "
                  f"{len(lags):,} runs: start lag p99", f"{p99 * 1000:.0f} ms", "≤ 1 s",
                  None, p99 <= 1.0)
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE crmsync.job_queue_entries SET status = 'on_hold'"))
        time.sleep(5)
        cpu, statements = _idle(url, workers[0].pid, 30.0)
        table.add("6. idle worker: CPU of a `crmsync run`, statements per second",
                  f"{cpu * 100:.1f} % of a core, {statements:.2f}/s", "≤ 2 %, ≤ 1/s",
                  None, cpu <= 0.02 and statements <= 1.0)
    finally:
        for w in workers:
            w.terminate()
        for w in workers:
            w.wait(60)
        engine.dispose()


def _idle(url: str, pid: int, seconds: float) -> tuple[float, float]:
    """The CPU share of the worker process ``pid``, and the statements per second of a
    worker with the same defaults run in this process (its statements counted at the
    driver: the database's own counters also see autovacuum)."""
    from worker.app import App
    from worker.runtime.worker import WorkerConfig

    def cpu_seconds() -> float:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    engine = create_engine(url, pool_size=4)
    count = [0]

    @sa.event.listens_for(engine, "before_cursor_execute")
    def counted(*_: Any) -> None:
        count[0] += 1

    worker = App(engine, plugins=["tests.support.handlers"]).worker(WorkerConfig())
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    worker.started.wait(30)
    time.sleep(3)  # past its start-up
    cpu0, n0, t0 = cpu_seconds(), count[0], time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - t0
    cpu, statements = (cpu_seconds() - cpu0) / elapsed, (count[0] - n0) / elapsed
    worker.stop(immediately=True)
    thread.join(30)
    engine.dispose()
    return cpu, statements


# The process's own high-water mark (VmHWM, kB). Not getrusage's ru_maxrss: a process
# started by fork and exec inherits as its maxrss the RSS of the parent it was forked from
# (this benchmark, holding a world of its own), so ru_maxrss said more than crmsync used.
PEAK_RSS = ("import sys\n"
            "from worker.cli import main\n"
            "status = main(sys.argv[1:])\n"
            "hwm = [line.split()[1] for line in open('/proc/self/status')\n"
            "       if line.startswith('VmHWM:')]\n"
            "print(hwm[0], file=sys.stderr)\n")


def peak_rss_mb(w: World) -> float:
    """Peak RSS of `crmsync sync CUSTOMER` in a process of its own. (A --full pass would
    read every coupled record back by key, which the emulator answers by scanning its
    whole set: quadratic in the table, a cost of the test double, not of crmsync.)"""
    env = {**os.environ, "CRMSYNC_DATABASE_URL": w.url, "CRMSYNC_CRM_URL": w.crm,
           "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", PEAK_RSS, "--log-level", "warning", "sync",
                           "CUSTOMER"], env=env, capture_output=True, text=True)
    return int(done.stderr.strip().splitlines()[-1]) / 1024


@dataclass
class Table:
    rows: list[tuple[str, str, str, str, str]] = field(default_factory=list)

    def add(self, what: str, figure: str, target: str, ratio: float | None,
            ok: bool | None) -> None:
        verdict = "" if ok is None else ("met" if ok else "NOT MET")
        self.rows.append((what, figure, target, f"{ratio:.2f}" if ratio is not None else "",
                          verdict))
        print(f"  {what}: {figure} (target {target}) {verdict}", flush=True)

    def print(self) -> None:
        header = ("what", "figure", "target", "ratio", "")
        widths = [max(len(r[i]) for r in [header, *self.rows]) for i in range(5)]
        for row in [header, tuple("-" * w for w in widths), *self.rows]:
            print("  ".join(c.ljust(widths[i]) for i, c in enumerate(row)).rstrip())


@dataclass
class Round:
    """One round of target 1 in a world of its own: the engine's initial sync, then the raw
    client replaying the very requests the engine sent (rates in records/s, CPU seconds per
    record of this process, the other processes' beside)."""

    done: int
    rate: float
    cpu: float
    engine_cpus: Cpu
    raw: float
    raw_cpu: float
    raw_cpus: Cpu
    load: str

    @property
    def ratio(self) -> float:
        return self.rate / self.raw


def initial_sync(w: World, how: str, *, bulk: bool = False) -> Round:
    """Target 1: the engine's initial sync of CUSTOMER and CONTACTS (whole wall time of
    both mapping runs, each pass included), then the raw client sending the very requests
    the engine sent (same records, bodies, binds and grouping), and the CPU time per record
    of each beside (this process's: the emulator and PostgreSQL run in their own). The
    replay leaves the CRM holding what the engine created."""
    before: list[list[Operation]] = []
    timed: list[list[Operation]] = []
    with sent_by_engine(before):
        for name in ("CURRENCY", "SALESPEOPLE"):
            run_mapping(w, name)
    with sent_by_engine(timed), Cpu(w) as engine_cpu:
        started, cpu = time.perf_counter(), cpu_seconds()
        done = sum(run_mapping(w, n)["to"]["counts"]["inserted"]
                   for n in ("CUSTOMER", "CONTACTS"))
        seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu
    creates = [c for c in timed if c and all(op.kind == "create" for op in c)]
    if sum(len(c) for c in creates) != done:
        raise SystemExit(f"the engine sent {sum(len(c) for c in creates)} creates in "
                         f"{len(creates)} calls for {done} records inserted")
    raw, raw_cpu, raw_cpus = replay_rate(w, before, creates, bulk=bulk)
    one = Round(done, done / seconds, cpu / done, engine_cpu, raw, raw_cpu, raw_cpus, load())
    print(f"  round of (1), {how}: engine {one.rate:,.0f} records/s, raw client "
          f"{one.raw:,.0f} records/s: {one.ratio:.2f}× ({one.load})", flush=True)
    return one


def initial_rounds(table: Table, customers: int, rounds: int, how: str, *, bulk: bool = False,
                   then: Callable[[World, Round], None] | None = None) -> Round:
    """Target 1 in ``rounds`` rounds, each in a world of its own (the raw client's synthetic
    creates of earlier sessions — fewer properties, no binds — in the first, without a
    ratio): the machine's own drift within minutes is larger than a change of crmsync
    (the raw client alone ranged 3,600–6,800 records/s on unchanged code), so the row
    shows the round of the median ratio, and every round's ratio beside. ``then``: what
    the last round's world is used for next. Returns the median round."""
    done: list[Round] = []
    synthetic = (0.0, 0.0)
    for n in range(rounds):
        with world("bulk" if bulk else "initial", customers,
                   ("CURRENCY", "SALESPEOPLE", "CUSTOMER", "CONTACTS")) as w:
            if n == 0:
                contacts = int(w.sql("SELECT count(*) FROM erp.contact").scalar())
                synthetic = raw_rate(w, customers, contacts, bulk=bulk)  # then reset
            done.append(initial_sync(w, how, bulk=bulk))
            if then is not None and n == rounds - 1:
                then(w, done[-1])
    median = sorted(done, key=lambda r: r.ratio)[len(done) // 2]
    table.add(f"raw client: the engine's own {how} requests replayed, concurrency 4",
              f"{median.raw:,.0f} records/s, CPU {median.raw_cpu * 1e6:.0f} µs/record", "-",
              None, None)
    table.add(f"raw client: synthetic creates ({how}; fewer properties, no binds)",
              f"{synthetic[0]:,.0f} records/s, CPU {synthetic[1] * 1e6:.0f} µs/record", "-",
              None, None)
    of = f", the median of {rounds} rounds" if rounds > 1 else ""
    # The issue's target is on $batch; the bulk messages' row has none (a ratio only).
    table.add(f"1. initial sync to the CRM ({how}), {median.done:,} customers + contacts{of}",
              f"{median.rate:,.0f} records/s, CPU {median.cpu * 1e6:.0f} µs/record",
              "-" if bulk else "≥ 0.7× raw (replayed)", median.ratio,
              None if bulk else median.ratio >= 0.7)
    table.add("   CPU µs/record by process: engine / raw",
              f"{median.engine_cpus.per_record(median.done)} / "
              f"{median.raw_cpus.per_record(median.done)}", "-", None, None)
    if rounds > 1:
        table.add("   every round's ratio, in order",
                  ", ".join(f"{r.ratio:.2f}" for r in done), "-", None, None)
    return median


def initial_import(table: Table, w: World, synced: Round) -> None:
    """Target 2: the CRM's accounts (what the round just created) into an empty customer
    table, against that round's rate of (1)."""
    w.sql("UPDATE crmsync.integration_table_mappings SET enabled = false "
          "WHERE name = 'CONTACTS'")
    w.sql("DELETE FROM crmsync.couplings WHERE mapping_name IN ('CUSTOMER', 'CONTACTS')")
    w.sql("DELETE FROM erp.contact")
    w.sql("DELETE FROM erp.customer")
    w.sql("UPDATE crmsync.integration_table_mappings SET remote_modified_since = NULL, "
          "local_snapshot = NULL, local_watermark = NULL WHERE name = 'CUSTOMER'")
    w.sql("DELETE FROM crmsync.local_changes")
    imported = run_mapping(w, "CUSTOMER")
    got = imported["from"]["counts"]["inserted"]
    rate = got / imported["from"]["seconds"]
    table.add(f"2. initial import from the CRM, {got:,} accounts → customers",
              f"{rate:,.0f} records/s", "≥ 0.7× (1) of the same round", rate / synced.rate,
              rate / synced.rate >= 0.7)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--initial", type=int, default=20000,
                        help="customers of the initial sync and import (1, 2)")
    parser.add_argument("--small", type=int, default=1000, help="small table (3, 4)")
    parser.add_argument("--large", type=int, default=100000, help="large table (3, 4)")
    parser.add_argument("--memory", action="store_true", help="also measure (5)")
    parser.add_argument("--bulk", action="store_true",
                        help="also (1) with Dataverse's bulk messages, raw and engine")
    parser.add_argument("--memory-small", type=int, default=10000)
    parser.add_argument("--memory-large", type=int, default=200000)
    parser.add_argument("--entries", type=int, default=1000, help="scheduler entries (6)")
    parser.add_argument("--scheduler-seconds", type=float, default=150)
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds of (1), each in a world of its own: the median shown")
    parser.add_argument("--only-initial", type=int, metavar="N", default=0,
                        help="only (1), in N rounds")
    args = parser.parse_args()
    collector.tune()  # as every crmsync process (the emulator's too) sets its collector
    print(f"crmsync ratios: {platform.python_implementation()} {platform.python_version()}, "
          f"{os.cpu_count()} CPUs, {platform.machine()}, {load()}", flush=True)
    table = Table()

    os.environ["CRMSYNC_CRM_BULK_MESSAGES"] = "off"  # $batch, as the raw client sends
    if args.only_initial:
        initial_rounds(table, args.initial, args.only_initial, "$batch 100")
        print()
        table.print()
        return 0
    initial_rounds(table, args.initial, args.rounds, "$batch 100",
                   then=lambda w, synced: initial_import(table, w, synced))
    if args.bulk:
        os.environ["CRMSYNC_CRM_BULK_MESSAGES"] = "on"
        initial_rounds(table, args.initial, 1, "CreateMultiple 500", bulk=True)
        os.environ["CRMSYNC_CRM_BULK_MESSAGES"] = "off"

    results: dict[str, dict[str, Any]] = {}
    for label, n in (("small", args.small), ("large", args.large)):
        with world(label, n, ("CURRENCY", "SALESPEOPLE", "CUSTOMER")) as w:
            t = time.perf_counter()
            for name in ("CURRENCY", "SALESPEOPLE", "CUSTOMER"):
                run_mapping(w, name)
            print(f"  ({label}: {n:,} customers synced in {time.perf_counter() - t:.0f} s)",
                  flush=True)
            run_mapping(w, "CUSTOMER")  # settles the echo of the first run
            # The steady state of a table synced long ago: what autovacuum does within a
            # minute of an initial sync (its 20k dead coupling versions and the statistics
            # of a table that just grew) is done now rather than waited for.
            w.vacuum("crmsync.couplings", "crmsync.local_changes")
            time.sleep(SETTLED.total_seconds() + 1)  # a quiet table: its last change is old
            run_mapping(w, "CUSTOMER")
            quiet = [run_mapping(w, "CUSTOMER") for _ in range(3)]
            changed = min(args.small, args.large // 100)  # 1 % of the large table
            edit_both_sides(w, changed)
            results[label] = {"quiet": min(quiet, key=lambda r: r["seconds"]),
                              "changed": run_mapping(w, "CUSTOMER"), "count": changed}
    quiet = results["large"]["quiet"]
    table.add("3. nothing changed: statements per pass (to / from; whole run)",
              f"{quiet['to']['statements']} / {quiet['from']['statements']} "
              f"({quiet['statements']})", "≤ 5", None,
              max(quiet["to"]["statements"], quiet["from"]["statements"]) <= 5)
    table.add("3. nothing changed: requests per CRM→ERP pass", str(quiet["from"]["requests"]),
              "≤ 1", None, quiet["from"]["requests"] <= 1)
    # The targets are on the whole run's wall time; crmsync's own time (minus the wall
    # time spent waiting for the CRM) is shown beside, as what grows with the table may be
    # the test double's (a real service answers its reads from indexes).
    for n, what, target, limit in ((3, "quiet", "nothing changed", 1.5),
                                   (4, "changed", "changed (both sides)", 1.2)):
        big, small = results["large"][what], results["small"][what]
        label = target if n == 3 else f"{results['large']['count']:,} {target}"
        ratio = big["seconds"] / small["seconds"]
        table.add(f"{n}. {label}: whole run, {args.large:,} vs {args.small:,} customers",
                  f"{big['seconds']:.3f} s vs {small['seconds']:.3f} s", f"≤ {limit}×", ratio,
                  ratio <= limit)
        table.add(f"{n}. {label}: crmsync's own time (without CRM waits)",
                  f"{big['own']:.3f} s vs {small['own']:.3f} s", "-",
                  big["own"] / small["own"], None)

    if args.memory:
        rss = {}
        for label, n in (("msmall", args.memory_small), ("mlarge", args.memory_large)):
            with world(label, n, ("CURRENCY", "SALESPEOPLE", "CUSTOMER")) as w:
                for name in ("CURRENCY", "SALESPEOPLE"):
                    run_mapping(w, name)
                rss[label] = peak_rss_mb(w)
        ratio = rss["mlarge"] / rss["msmall"]
        table.add(f"5. peak RSS of `crmsync sync CUSTOMER` (its own process), initial sync: "
                  f"{args.memory_large:,} vs {args.memory_small:,} customers",
                  f"{rss['mlarge']:.0f} MB vs {rss['msmall']:.0f} MB", "≤ 1.2×, ≤ 150 MB",
                  ratio, ratio <= 1.2 and rss["mlarge"] <= 150)
    scheduler(table, args.entries, args.scheduler_seconds)
    print()
    table.print()
    print(f"({load()} at the end)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
