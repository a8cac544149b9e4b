"""The installed ``crmsync run`` in subprocesses: rows in, runs out, SIGTERM, several
workers on one database, and kill -9 of one of them."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections import Counter

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from tests.acceptance.conftest import crmsync_executable, output_of
from tests.queue.test_worker import scalar, wait_for


def test_help_lists_the_commands(cli_env: dict[str, str]) -> None:
    out = subprocess.run([crmsync_executable(), "--help"], env=cli_env, capture_output=True,
                         text=True, check=True).stdout
    for command in ("db", "run", "entries"):
        assert command in out


def test_run_refuses_an_empty_schema(empty_database_url: str, cli_env: dict[str, str]) -> None:
    cli_env["CRMSYNC_DATABASE_URL"] = empty_database_url
    done = subprocess.run([crmsync_executable(), "run"], env=cli_env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 1
    assert "run `crmsync db upgrade`" in done.stderr
    up = subprocess.run([crmsync_executable(), "db", "upgrade"], env=cli_env,
                        capture_output=True, text=True, timeout=60)
    assert up.returncode == 0, up.stderr


def test_worker_runs_inserted_rows_and_stops_cleanly_on_sigterm(engine: Engine, spawn) -> None:
    proc = spawn("run", "--poll-interval", "30")
    wait_for(lambda: scalar(engine, "SELECT count(*) FROM crmsync.workers") == 1, timeout=30)
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO crmsync.job_queue_entries (job_kind, run_interval, parameters) "
            "VALUES ('cleanup', '1 second', '{}'), "
            "       ('sync_all_modified', '1 second', '{\"sleep\": 1.5}')"))
    wait_for(lambda: scalar(engine, "SELECT count(*) FROM crmsync.job_queue_log_entries "
                                    "WHERE status = 'success'") >= 3)
    wait_for(lambda: scalar(engine, "SELECT count(*) FROM crmsync.job_queue_entries "
                                    "WHERE job_kind = 'sync_all_modified' "
                                    "AND status = 'in_process'") == 1)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    # The slow run in hand was allowed to finish; nothing is left running or registered.
    assert scalar(engine, "SELECT count(*) FROM crmsync.job_queue_log_entries "
                          "WHERE status <> 'success'") == 0
    assert scalar(engine, "SELECT count(*) FROM crmsync.job_queue_entries "
                          "WHERE status = 'in_process'") == 0
    assert scalar(engine, "SELECT count(*) FROM crmsync.workers") == 0
    events = [json.loads(line)["msg"] for line in output_of(proc).splitlines()
              if line.startswith("{")]
    assert "worker started" in events and "worker stopped" in events


def test_three_workers_share_the_queue_without_double_runs(engine: Engine, spawn) -> None:
    """30 entries every 2 s, three workers; one is killed with SIGKILL mid-run."""
    lease = 3
    workers = [spawn("run", "--lease-seconds", str(lease), "--concurrency", "4")
               for _ in range(3)]
    wait_for(lambda: scalar(engine, "SELECT count(*) FROM crmsync.workers") == 3, timeout=30)
    with engine.begin() as conn:
        conn.execute(sa.text(
            """
            INSERT INTO crmsync.job_queue_entries
                   (job_kind, run_interval, rerun_delay, category_code, parameters)
            SELECT 'cleanup', '2 seconds', '0 seconds',
                   CASE WHEN n % 5 = 0 THEN 'CAT-A' WHEN n % 5 = 1 THEN 'CAT-B' END,
                   CASE WHEN n = 29 THEN '{"sleep": 1.5}' ELSE '{"sleep": 0.1}' END::jsonb
              FROM generate_series(0, 29) n
            """))
    started = time.monotonic()
    time.sleep(7)
    # Kill the worker that holds the slow entry (or any running one) mid-run.
    victim_id = None
    while victim_id is None:
        victim_id = scalar(engine, "SELECT locked_by FROM crmsync.job_queue_entries "
                                   "WHERE status = 'in_process' ORDER BY parameters->>'sleep' "
                                   "DESC LIMIT 1")
    pid = int(str(victim_id).split(":")[1])
    victim = next(w for w in workers if w.pid == pid)
    victim.kill()
    victim.wait(10)
    killed_at = time.monotonic()
    time.sleep(max(0.0, 20 - (time.monotonic() - started)))
    for proc in workers:
        if proc is not victim:
            proc.send_signal(signal.SIGTERM)
    for proc in workers:
        if proc is not victim:
            assert proc.wait(30) == 0, output_of(proc)[-2000:]

    with engine.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT entry_id, scheduled_for, status, started_at, finished_at, category_code, "
            "worker_id FROM crmsync.job_queue_log_entries ORDER BY started_at")).all()
        stuck = conn.scalar(sa.text(
            "SELECT count(*) FROM crmsync.job_queue_entries WHERE status = 'in_process'"))
    assert stuck == 0
    assert time.monotonic() - killed_at > lease

    # No occurrence ran twice.
    occurrences = Counter((r.entry_id, r.scheduled_for) for r in rows if r.status != "abandoned")
    assert max(occurrences.values()) == 1
    # The killed worker's run was rescued as abandoned.
    assert any(r.status == "abandoned" and r.worker_id == victim_id for r in rows)
    # Every entry ran about every 2 s for 20 s.
    per_entry = Counter(r.entry_id for r in rows if r.status == "success")
    assert len(per_entry) == 30
    assert min(per_entry.values()) >= 5, per_entry
    assert max(per_entry.values()) <= 11, per_entry
    # No two runs of one category overlapped.
    for category in ("CAT-A", "CAT-B"):
        runs = sorted((r.started_at, r.finished_at) for r in rows if r.category_code == category)
        for (_, end), (start, _) in zip(runs, runs[1:], strict=False):
            assert start >= end, (category, end, start)
