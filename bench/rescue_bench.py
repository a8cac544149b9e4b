"""How soon a killed worker's run runs again. Two `crmsync run` processes with the default
lease (60 s) and reaper interval (10 s); an entry every hour with a rerun delay of one hour
starts a 120 s job on one of them, which is SIGKILLed. Prints the seconds from the kill to
the rescued run's start (the same occurrence again, no attempt counted) against the bound
lease + reaper interval. Usage:

    CRMSYNC_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/test python bench/rescue_bench.py

The database's crmsync schema is dropped and recreated: use a scratch database.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from worker.db import migrate
from worker.db.engine import create_engine, normalize_url

ROOT = Path(__file__).resolve().parents[1]


def scalar(engine: Engine, sql: str) -> object:
    with engine.connect() as conn:
        return conn.scalar(sa.text(sql))


def wait(engine: Engine, sql: str, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not scalar(engine, sql):
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for: {sql}")
        time.sleep(0.05)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lease", type=float, default=60)
    args = parser.parse_args()
    reaper = max(min(args.lease / 2, 10.0), 0.5)  # as `crmsync run` sets it
    url = normalize_url(os.environ.get("CRMSYNC_DATABASE_URL",
                                       "postgresql://postgres@127.0.0.1:5432/test"))
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP SCHEMA IF EXISTS crmsync CASCADE"))
    migrate.upgrade(engine)
    env = {**os.environ, "CRMSYNC_DATABASE_URL": url, "CRMSYNC_PLUGINS": "tests.support.handlers",
           "PYTHONPATH": str(ROOT), "CRMSYNC_LOG_LEVEL": "WARNING",
           "CRMSYNC_METRICS_ADDRESS": "127.0.0.1:0"}
    exe = str(Path(sys.executable).with_name("crmsync"))
    cmd = [exe, "run", "--lease-seconds", str(args.lease)]
    victim = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait(engine, "SELECT count(*) = 1 FROM crmsync.workers")
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO crmsync.job_queue_entries (job_kind, run_interval, rerun_delay, "
            "parameters) VALUES ('cleanup', '1 hour', '1 hour', '{\"sleep\": 120}')"))
    wait(engine, "SELECT count(*) = 1 FROM crmsync.job_queue_log_entries")
    rescuer = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait(engine, "SELECT count(*) = 2 FROM crmsync.workers")
    time.sleep(args.lease / 2)  # kill mid-lease, as a crash would
    victim.kill()
    victim.wait()
    killed = scalar(engine, "SELECT clock_timestamp()")
    wait(engine, "SELECT count(*) = 2 FROM crmsync.job_queue_log_entries")
    with engine.connect() as conn:
        row = conn.execute(sa.text(
            "SELECT extract(epoch FROM r.started_at - :killed) AS seconds, "
            "       r.scheduled_for = a.scheduled_for AS same_occurrence, e.attempts "
            "  FROM crmsync.job_queue_log_entries a, crmsync.job_queue_log_entries r, "
            "       crmsync.job_queue_entries e "
            " WHERE a.status = 'abandoned' AND r.id > a.id"), {"killed": killed}).one()
    rescuer.kill()
    rescuer.wait()
    print(f"lease {args.lease:g} s, reaper every {reaper:g} s: rescued run started "
          f"{float(row.seconds):.1f} s after the kill (bound: lease + reaper = "
          f"{args.lease + reaper:g} s); same occurrence: {row.same_occurrence}; "
          f"attempts counted: {row.attempts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
