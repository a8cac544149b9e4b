"""The job queue's throughput and the claim's cost, in one run, beside their targets:

1. 1,000 entries every 10 s on 2 ``crmsync run`` workers for 75 s (jobs that do nothing,
   through the plugin seam the tests use), with categories and dependencies among them:
   runs against the ideal (≥ 90 %), start lag p50 (≤ 100 ms) and p99 (≤ 1 s), overlaps of
   one category and occurrences run twice (0 each);
2. the claim statement's time with 10,000 entries (100 due) against 100 entries (100 due)
   (≤ 1.5×), and with 10,000 due against 100 due (≤ 2×), each the median of repeated claims
   rolled back (the table unchanged between them); ``--explain`` prints the database's plan
   of the claim at 10,000 entries;
3. an idle worker (every entry on hold): CPU of a ``crmsync run`` (≤ 2 % of a core) and
   statements per second (≤ 1).

    python bench/queue_bench.py
    python bench/queue_bench.py --entries 1000 --interval 10 --seconds 75 --explain

Uses CRMSYNC_DATABASE_URL's server (default: PostgreSQL on 127.0.0.1:5432) and scratch
databases named crmsync_queue_*, dropped and recreated. The machine's load average is
printed at the start and the end: the figures are only comparable at a similar load.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from ratios import Table, _idle
from scratch import scratch_database

from worker.db.engine import create_engine
from worker.queue import queries

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.support.handlers: jobs that do nothing

CATEGORIES = 10  # CAT-0 … CAT-9, each with 1 % of the entries
MAPPINGS = 20  # M00 … M19: each odd one depends on the even one before it


def populate(engine: sa.Engine, entries: int, due: int, interval: str,
             spread_seconds: float) -> None:
    """``entries`` entries: 10 % in categories, 4 % sync entries of mappings with parents,
    the rest cleanup. ``due`` of them (of every kind, spread over the ids) are due now; the
    others either due within ``spread_seconds`` from now (when ``due`` is None) or in an
    hour."""
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO crmsync.integration_table_mappings (name) "
            "SELECT 'M' || lpad(n::text, 2, '0') FROM generate_series(0, :m - 1) n"),
            {"m": MAPPINGS})
        conn.execute(sa.text(
            "INSERT INTO crmsync.integration_table_mapping_dependencies (mapping_name, depends_on) "
            "SELECT 'M' || lpad(n::text, 2, '0'), 'M' || lpad((n - 1)::text, 2, '0') "
            "FROM generate_series(1, :m - 1, 2) n"), {"m": MAPPINGS})
        # Before revision 0008 the entries' insert trigger checked every time zone against
        # pg_timezone_names, some 70 ms a row; the rows below are valid by construction, so
        # triggers are off for them and the same script measures the claim before and after it.
        conn.execute(sa.text("SET LOCAL session_replication_role = replica"))
        conn.execute(sa.text(
            """
            INSERT INTO crmsync.job_queue_entries
                   (job_kind, mapping_name, category_code, run_interval, rerun_delay,
                    next_run_at)
            SELECT CASE WHEN n % 25 = 3 THEN 'sync_mapping' ELSE 'cleanup' END,
                   CASE WHEN n % 25 = 3 THEN 'M' || lpad((n / 25 % :m)::text, 2, '0') END,
                   CASE WHEN n % 10 = 7 THEN 'CAT-' || (n / 10 % :c) END,
                   CAST(:interval AS interval), '0 seconds',
                   CASE WHEN CAST(:due AS int) IS NULL
                        THEN now() + interval '5 seconds'
                             + (n % 1000) * CAST(:spread AS float8) / 1000 * interval '1 second'
                        WHEN n * 7919 % :n < :due THEN now() - interval '1 minute'
                        ELSE now() + interval '1 hour' END
              FROM generate_series(0, :n - 1) n
            """), {"n": entries, "m": MAPPINGS, "c": CATEGORIES, "interval": interval,
                   "due": due, "spread": spread_seconds})
        conn.execute(sa.text("SET LOCAL session_replication_role = DEFAULT"))
        conn.execute(sa.text("ANALYZE crmsync.job_queue_entries"))


def throughput(table: Table, entries: int, interval: float, seconds: float,
               workers_n: int) -> str:
    """Part 1; returns the scratch database's URL, the workers still running on it."""
    url = scratch_database("crmsync_queue_runs")
    engine = create_engine(url, pool_size=2)
    env = {**os.environ, "CRMSYNC_DATABASE_URL": url, "PYTHONPATH": str(ROOT),
           "CRMSYNC_PLUGINS": "tests.support.handlers", "CRMSYNC_LOG_LEVEL": "warning",
           "CRMSYNC_METRICS_ADDRESS": "127.0.0.1:0"}
    workers = [subprocess.Popen([sys.executable, "-m", "worker", "run"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
               for _ in range(workers_n)]
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # every worker up before the entries arrive
            with engine.connect() as conn:
                if conn.scalar(sa.text("SELECT count(*) FROM crmsync.workers")) == workers_n:
                    break
            time.sleep(0.2)
        populate(engine, entries, None, f"{interval} seconds", interval)
        with engine.connect() as conn:
            first = conn.scalar(sa.text("SELECT min(next_run_at) FROM crmsync.job_queue_entries"))
        window_end = first + timedelta(seconds=seconds)
        cpu0, commits0 = _cpu(workers), _commits(engine)
        time.sleep(5 + seconds + 2)
        cpu, commits = _cpu(workers) - cpu0, _commits(engine) - commits0
        runs = _report_runs(table, engine, entries, interval, seconds, workers_n, window_end)
        # What a run costs, whatever the machine's load: the workers' CPU and the database's
        # commits (every transaction of the workers, the bench's own few included).
        table.add("1. per run: workers' CPU, database transactions",
                  f"{cpu / max(runs, 1) * 1000:.2f} ms, {commits / max(runs, 1):.2f}", "-",
                  None, None)
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE crmsync.job_queue_entries SET status = 'on_hold'"))
        time.sleep(5)
        cpu, statements = _idle(url, workers[0].pid, 20.0)
        table.add("3. idle worker: CPU of a `crmsync run`, statements per second",
                  f"{cpu * 100:.1f} % of a core, {statements:.2f}/s", "≤ 2 %, ≤ 1/s",
                  None, cpu <= 0.02 and statements <= 1.0)
    finally:
        for w in workers:
            w.terminate()
        for w in workers:
            w.wait(60)
        engine.dispose()
    return url


def _cpu(workers: list[subprocess.Popen[bytes]]) -> float:
    """CPU seconds (user + system) the worker processes used so far."""
    total = 0.0
    for w in workers:
        fields = Path(f"/proc/{w.pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _commits(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.scalar(sa.text(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")))


def _report_runs(table: Table, engine: sa.Engine, entries: int, interval: float,
                 seconds: float, workers_n: int, window_end: Any) -> int:
    with engine.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT entry_id, scheduled_for, status, started_at, finished_at, category_code "
            "FROM crmsync.job_queue_log_entries ORDER BY started_at")).all()
    ok = [r for r in rows if r.status == "success" and r.scheduled_for < window_end]
    ideal = int(entries * seconds / interval)
    lags = sorted((r.started_at - r.scheduled_for).total_seconds() for r in ok)
    p50 = lags[len(lags) // 2] if lags else float("inf")
    p99 = lags[int(len(lags) * 0.99) - 1] if lags else float("inf")
    doubles = sum(c - 1 for c in Counter((r.entry_id, r.scheduled_for) for r in rows
                                         if r.status != "abandoned").values() if c > 1)
    overlaps = 0
    for cat in {r.category_code for r in rows if r.category_code}:
        runs = sorted((r.started_at, r.finished_at) for r in rows if r.category_code == cat)
        overlaps += sum(1 for a, b in zip(runs, runs[1:], strict=False)
                        if a[1] is None or b[0] < a[1])
    what = f"{entries:,} entries every {interval:g} s, {workers_n} workers, {seconds:g} s"
    table.add(f"1. {what}: runs", f"{len(ok):,} of {ideal:,} ({len(ok) / ideal:.0%})",
              "≥ 90 %", len(ok) / ideal, len(ok) >= 0.9 * ideal)
    table.add("1. start lag p50 / p99", f"{p50 * 1000:.0f} ms / {p99 * 1000:.0f} ms",
              "≤ 100 ms / ≤ 1 s", None, p50 <= 0.1 and p99 <= 1.0)
    table.add("1. category overlaps, occurrences run twice, errors",
              f"{overlaps}, {doubles}, {sum(r.status == 'error' for r in rows)}", "0, 0", None,
              overlaps == 0 and doubles == 0)
    return len([r for r in rows if r.status == "success"])


def claim_seconds(entries: int, due: int, repeat: int, explain: bool) -> float:
    """The median time of the claim statement (4 free slots), rolled back each time."""
    url = scratch_database(f"crmsync_queue_claim_{entries}_{due}")
    engine = create_engine(url, pool_size=1)
    try:
        populate(engine, entries, due, "10 seconds", 0)
        statement, params = _claim_statement()
        times = []
        with engine.connect() as conn:
            for i in range(repeat + 3):
                with conn.begin() as tx:
                    conn.execute(sa.text("SET LOCAL jit = off"))
                    now = conn.scalar(sa.text("SELECT clock_timestamp()"))
                    started = time.perf_counter()
                    conn.execute(statement, {**params, "now": now}).all()
                    if i >= 3:  # the first ones warm the caches
                        times.append(time.perf_counter() - started)
                    if explain and i == repeat + 2:
                        plan = conn.execute(sa.text(
                            "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + str(statement)),
                            {**params, "now": now}).scalars()
                        print(f"\nEXPLAIN of the claim, {entries:,} entries, {due:,} due:")
                        print("\n".join(f"  {line}" for line in plan), "\n", flush=True)
                    tx.rollback()
        return statistics.median(times)
    finally:
        engine.dispose()
        _drop(url)


def _claim_statement() -> tuple[sa.TextClause, dict[str, Any]]:
    if hasattr(queries, "CLAIMABLE"):
        return queries.CLAIMABLE, {"limit": 4 * queries.CLAIM_ROWS_PER_SLOT, "only": None}
    return queries.CANDIDATES, {"only": None}  # the one-at-a-time claim before revision 0008


def _drop(url: str) -> None:
    name = sa.engine.make_url(url).database
    admin = create_engine(sa.engine.make_url(url).set(database="postgres"), pool_size=1)
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=1000)
    parser.add_argument("--interval", type=float, default=10)
    parser.add_argument("--seconds", type=float, default=75)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=50, help="claims timed per size (2)")
    parser.add_argument("--explain", action="store_true", help="EXPLAIN ANALYZE the claim")
    parser.add_argument("--skip-runs", action="store_true", help="only (2)")
    args = parser.parse_args()
    print(f"crmsync queue bench: {os.cpu_count()} CPUs, load average "
          f"{'/'.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    table = Table()
    small = claim_seconds(100, 100, args.repeat, False)
    large = claim_seconds(10_000, 100, args.repeat, args.explain)
    all_due = claim_seconds(10_000, 10_000, args.repeat, args.explain)
    table.add("2. claim statement, 10,000 vs 100 entries (100 due)",
              f"{large * 1000:.2f} ms vs {small * 1000:.2f} ms", "≤ 1.5×", large / small,
              large / small <= 1.5)
    table.add("2. claim statement, 10,000 vs 100 due (10,000 entries)",
              f"{all_due * 1000:.2f} ms vs {large * 1000:.2f} ms", "≤ 2×", all_due / large,
              all_due / large <= 2)
    if not args.skip_runs:
        throughput(table, args.entries, args.interval, args.seconds, args.workers)
    print(f"\nload average at the end {'/'.join(f'{x:.2f}' for x in os.getloadavg())}")
    table.print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
