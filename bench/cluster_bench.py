"""Three `crmsync run` processes against one database: 30 entries every 2 s for 60 s, one
worker killed with SIGKILL halfway. Prints runs per entry, double runs, category overlaps,
start lag, and whether anything stayed stuck. Usage:

    CRMSYNC_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/test python bench/cluster_bench.py

The database's crmsync schema is dropped and recreated: use a scratch database.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import sqlalchemy as sa

from worker.db import migrate
from worker.db.engine import create_engine, normalize_url

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--entries", type=int, default=30)
    parser.add_argument("--lease", type=float, default=5)
    args = parser.parse_args()
    url = normalize_url(os.environ.get("CRMSYNC_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"))
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP SCHEMA IF EXISTS crmsync CASCADE"))
    migrate.upgrade(engine)
    env = {**os.environ, "CRMSYNC_DATABASE_URL": url, "CRMSYNC_PLUGINS": "tests.support.handlers",
           "PYTHONPATH": str(ROOT), "CRMSYNC_LOG_LEVEL": "WARNING",
           "CRMSYNC_METRICS_ADDRESS": "127.0.0.1:0"}
    exe = str(Path(sys.executable).with_name("crmsync"))
    procs = [subprocess.Popen([exe, "run", "--lease-seconds", str(args.lease)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for _ in range(args.workers)]
    while True:
        with engine.connect() as conn:
            if conn.scalar(sa.text("SELECT count(*) FROM crmsync.workers")) == args.workers:
                break
        time.sleep(0.2)
    with engine.begin() as conn:
        conn.execute(sa.text(
            """
            INSERT INTO crmsync.job_queue_entries
                   (job_kind, run_interval, rerun_delay, category_code, parameters)
            SELECT 'cleanup', '2 seconds', '0 seconds',
                   CASE WHEN n % 5 = 0 THEN 'CAT-A' WHEN n % 5 = 1 THEN 'CAT-B' END,
                   CASE WHEN n = :n - 1 THEN '{"sleep": 1.5}' ELSE '{"sleep": 0.1}' END::jsonb
              FROM generate_series(1, :n) n
            """), {"n": args.entries})
    start = time.monotonic()
    time.sleep(args.seconds / 2)
    # Kill the worker that holds the slow entry, mid-run.
    victim = None
    while victim is None:
        with engine.connect() as conn:
            holder = conn.scalar(sa.text(
                "SELECT locked_by FROM crmsync.job_queue_entries WHERE status = 'in_process' "
                "AND parameters->>'sleep' = '1.5'"))
        victim = next((p for p in procs if holder and p.pid == int(holder.split(":")[1])), None)
        time.sleep(0.05)
    victim.kill()
    victim.wait()
    procs.remove(victim)
    procs.insert(0, victim)
    time.sleep(max(0, args.seconds - (time.monotonic() - start)))
    for p in procs[1:]:
        p.send_signal(signal.SIGTERM)
    for p in procs[1:]:
        p.wait(60)
    with engine.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT entry_id, scheduled_for, status, started_at, finished_at, category_code "
            "FROM crmsync.job_queue_log_entries ORDER BY started_at")).all()
        stuck = conn.scalar(sa.text(
            "SELECT count(*) FROM crmsync.job_queue_entries WHERE status = 'in_process'"))
    ok = [r for r in rows if r.status == "success"]
    per_entry = Counter(r.entry_id for r in ok)
    doubles = sum(c - 1 for c in Counter((r.entry_id, r.scheduled_for) for r in rows
                                         if r.status != "abandoned").values() if c > 1)
    overlaps = 0
    for cat in ("CAT-A", "CAT-B"):
        runs = sorted((r.started_at, r.finished_at) for r in rows if r.category_code == cat)
        overlaps += sum(1 for a, b in zip(runs, runs[1:], strict=False) if b[0] < a[1])
    lags = [(r.started_at - r.scheduled_for).total_seconds() for r in ok]
    print(f"workers={args.workers} entries={args.entries} interval=2s duration={args.seconds}s "
          f"(the worker running the slow entry SIGKILLed at ~{args.seconds / 2:.0f}s, "
          f"lease {args.lease}s)")
    print(f"runs: {len(rows)} total, {len(ok)} success, "
          f"{sum(r.status == 'abandoned' for r in rows)} abandoned, "
          f"{sum(r.status == 'error' for r in rows)} error")
    print(f"runs per entry: min {min(per_entry.values())} median "
          f"{statistics.median(per_entry.values())} max {max(per_entry.values())} "
          f"(ideal {args.seconds / 2:.0f})")
    print(f"occurrences run twice: {doubles}; category overlaps: {overlaps}; "
          f"entries stuck in_process: {stuck}")
    lags.sort()
    print(f"start lag: median {statistics.median(lags) * 1000:.0f} ms, "
          f"p95 {lags[int(len(lags) * 0.95)] * 1000:.0f} ms, max {lags[-1] * 1000:.0f} ms")
    engine.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
