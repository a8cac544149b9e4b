"""The installed ``crmsync run`` in subprocesses: rows in, runs out, SIGTERM, several
workers on one database, and kill -9 of one of them."""

from __future__ import annotations

import json
import signal
import subprocess
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
    assert done.returncode == 3  # database missing or not upgraded
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


def all_ran(engine: Engine, times: int) -> int:
    """The number of successful runs once each of the 30 entries has ``times`` of them
    (else 0)."""
    with engine.connect() as conn:
        total, fewest, entries = conn.execute(sa.text(
            "SELECT coalesce(sum(n), 0), coalesce(min(n), 0), count(*) FROM (SELECT count(*) n "
            "FROM crmsync.job_queue_log_entries WHERE status = 'success' GROUP BY entry_id) s"
        )).one()
    return int(total) if entries == 30 and fewest >= times else 0


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
    # Once every entry has run twice, kill the worker that holds the slow entry (or any
    # running one) mid-run.
    wait_for(lambda: all_ran(engine, 2), timeout=60)
    victim_id = wait_for(lambda: scalar(
        engine, "SELECT locked_by FROM crmsync.job_queue_entries WHERE status = 'in_process' "
                "ORDER BY parameters->>'sleep' DESC LIMIT 1"), timeout=30)
    pid = int(str(victim_id).split(":")[1])
    victim = next(w for w in workers if w.pid == pid)
    victim.kill()
    victim.wait(10)
    # The two others rescue its run once the lease expires, and go on with all entries.
    wait_for(lambda: scalar(engine, "SELECT count(*) FROM crmsync.job_queue_log_entries "
                                    "WHERE status = 'abandoned' AND worker_id = :w",
                            w=victim_id), timeout=60)
    runs_at_kill = all_ran(engine, 0)
    wait_for(lambda: all_ran(engine, 0) >= runs_at_kill + 60 and all_ran(engine, 5),
             timeout=90)
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

    # No occurrence ran twice.
    occurrences = Counter((r.entry_id, r.scheduled_for) for r in rows if r.status != "abandoned")
    assert max(occurrences.values()) == 1
    # The killed worker's run was rescued as abandoned.
    assert any(r.status == "abandoned" and r.worker_id == victim_id for r in rows)
    # Every entry went on running after the kill.
    per_entry = Counter(r.entry_id for r in rows if r.status == "success")
    assert len(per_entry) == 30 and min(per_entry.values()) >= 5, per_entry
    # No two runs of one category overlapped.
    for category in ("CAT-A", "CAT-B"):
        runs = sorted((r.started_at, r.finished_at) for r in rows if r.category_code == category)
        for (_, end), (start, _) in zip(runs, runs[1:], strict=False):
            assert start >= end, (category, end, start)


def crmsync(cli_env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([crmsync_executable(), *args], env=cli_env, capture_output=True,
                          text=True, timeout=60)


def successes(engine: Engine, entry_id: int) -> int:
    return int(scalar(engine, "SELECT count(*) FROM crmsync.job_queue_log_entries "  # type: ignore[arg-type]
                              "WHERE entry_id = :id AND status = 'success'", id=entry_id))


def test_a_schedule_change_is_honoured_by_a_running_worker(engine: Engine, spawn,
                                                           cli_env: dict[str, str]) -> None:
    """Two entries every 30 minutes run once; shortened by the CLI and by SQL, both run
    again within seconds (the worker is woken by NOTIFY and recomputes the next run)."""
    with engine.begin() as conn:
        ids = conn.scalars(sa.text(
            "INSERT INTO crmsync.job_queue_entries (job_kind, run_interval) "
            "VALUES ('cleanup', '30 minutes'), ('cleanup', '30 minutes') RETURNING id")).all()
    spawn("run", "--poll-interval", "30")
    for entry_id in ids:
        wait_for(lambda e=entry_id: successes(engine, e) == 1, timeout=30)
    edited = crmsync(cli_env, "entries", "edit", str(ids[0]), "--run-interval", "2 seconds")
    assert edited.returncode == 0, edited.stderr
    assert f"entry {ids[0]} (cleanup) changed: ready, next run" in edited.stdout
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE crmsync.job_queue_entries SET run_interval = '2 seconds' "
                             "WHERE id = :id"), {"id": ids[1]})
    for entry_id in ids:
        wait_for(lambda e=entry_id: successes(engine, e) >= 3, timeout=30)


def test_entries_actions_name_entries_by_id_or_mapping(engine: Engine,
                                                       cli_env: dict[str, str]) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO crmsync.integration_table_mappings (name) "
                             "VALUES ('CUSTOMER')"))
    added = crmsync(cli_env, "entries", "add", "--kind", "sync_mapping", "--mapping",
                    "CUSTOMER", "--every", "30 minutes")
    assert added.returncode == 0, added.stderr
    for action in ("edit", "remove", "hold", "restart", "run-now"):
        extra = ["--priority", "5"] if action == "edit" else []
        for name in ("VENDOR", "999"):
            done = crmsync(cli_env, "entries", action, name, *extra)
            assert done.returncode == 2, (action, done.stderr)
            assert done.stderr.strip() == (
                f"crmsync: error: entry {name}: no entry with this id or mapping name "
                "(`crmsync entries list` shows them)")
    refused = crmsync(cli_env, "entries", "edit", "customer", "--run-interval", "1 ms")
    assert refused.returncode == 2
    assert refused.stderr.strip() == (
        "crmsync: error: run_interval: must be between 1 second and 366 days "
        "(constraint job_queue_entries_run_interval_must_be_1s_to_366_days)")
    bad_type = crmsync(cli_env, "entries", "edit", "CUSTOMER", "--expires-at", "soon")
    assert bad_type.returncode == 2 and "expires_at: 'soon' is not a valid timestamptz" in (
        bad_type.stderr)
    assert crmsync(cli_env, "entries", "hold", "CUSTOMER").returncode == 0
    assert scalar(engine, "SELECT status FROM crmsync.job_queue_entries") == "on_hold"
    restarted = crmsync(cli_env, "entries", "restart", "CUSTOMER")
    assert restarted.returncode == 0 and "restarted: ready" in restarted.stdout
    edited = crmsync(cli_env, "entries", "edit", "CUSTOMER", "--window", "06:00-20:00",
                     "--time-zone", "Europe/Berlin", "--weekdays", "1,2,3,4,5")
    assert edited.returncode == 0, edited.stderr
    row = scalar(engine, "SELECT starting_time::text || ' ' || time_zone || ' ' || "
                         "run_on_weekdays::text FROM crmsync.job_queue_entries")
    assert row == "06:00:00 Europe/Berlin {1,2,3,4,5}"
    removed = crmsync(cli_env, "entries", "remove", "CUSTOMER")
    assert removed.returncode == 0 and "removed" in removed.stdout
    assert scalar(engine, "SELECT count(*) FROM crmsync.job_queue_entries") == 0


def test_the_worst_rows_beside_healthy_entries_stop_nothing(engine: Engine, spawn,
                                                            cli_env: dict[str, str]) -> None:
    """Rows at every edge the schema allows, rows it refuses only since revision 0004
    (its constraints dropped, as on a database restored from an old dump), and a run set to
    in_process by hand: the worker records each on its entry, the healthy entries keep
    running, status and entries list still work, nothing stays in_process."""
    with engine.begin() as conn:
        for constraint in ("run_interval_must_be_1s_to_366_days",
                           "attempts_must_be_0_to_max_attempts"):
            conn.execute(sa.text("ALTER TABLE crmsync.job_queue_entries "
                                 f"DROP CONSTRAINT job_queue_entries_{constraint}"))
        healthy = conn.scalars(sa.text(
            "INSERT INTO crmsync.job_queue_entries (job_kind, run_interval, parameters) "
            "SELECT 'cleanup', '1 second', '{}' FROM generate_series(1, 3) RETURNING id")).all()
        conn.execute(sa.text(
            """
            INSERT INTO crmsync.job_queue_entries
                   (description, job_kind, run_interval, inactivity_timeout, earliest_start_at,
                    expires_at, next_run_at, max_attempts, attempts, rerun_delay, starting_time,
                    ending_time, parameters, status, locked_by, lease_expires_at)
            VALUES ('edges', 'cleanup', '366 days', '366 days', '2999-12-30', '2999-12-31',
                    NULL, 100, 0, '1 hour', '23:59:59.999999', '00:00', '{}', 'ready',
                    NULL, NULL),
                   ('old epoch', 'cleanup', '1 second', NULL, NULL, NULL, '1970-01-01', 1, 0,
                    '0 seconds', NULL, NULL, '{"days": 1e400}', 'ready', NULL, NULL),
                   ('9000 years', 'cleanup', '9000 years', NULL, NULL, NULL, NULL, 10, 0,
                    '30 seconds', NULL, NULL, '{}', 'ready', NULL, NULL),
                   ('attempts over max', 'cleanup', '1 second', NULL, NULL, NULL, NULL, 1, 50,
                    '0 seconds', NULL, NULL, '{"days": -1}', 'ready', NULL, NULL),
                   ('by hand', 'cleanup', '1 second', NULL, NULL, NULL, NULL, 10, 0,
                    '0 seconds', NULL, NULL, '{}', 'in_process', 'ghost', '2999-12-31')
            """))
    cli_env["CRMSYNC_PLUGINS"] = ""  # the real cleanup job, which reads its parameters
    proc = spawn("run", "--lease-seconds", "4")
    try:
        wait_for(lambda: scalar(engine, "SELECT count(*) FROM crmsync.job_queue_entries "
                                        "WHERE status = 'error'") == 3, timeout=60)
    except AssertionError:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT id, description, status, last_error, attempts "
                                        "FROM crmsync.job_queue_entries")).all()
        raise AssertionError(f"{rows}\n{output_of(proc)[-3000:]}") from None
    with engine.connect() as conn:
        errors = dict(conn.execute(sa.text(
            "SELECT description, last_error FROM crmsync.job_queue_entries "
            "WHERE status = 'error'")).all())
    assert errors["9000 years"].startswith(
        "entry #6 could not be rescheduled: run_interval: 3285000 days takes the next run "
        "beyond the year 9999")
    assert "parameters.days" in errors["old epoch"]
    assert "parameters.days" in errors["attempts over max"]
    starts = {e: successes(engine, e) for e in healthy}
    wait_for(lambda: all(successes(engine, e) >= starts[e] + 3 for e in healthy), timeout=30)
    assert proc.poll() is None, output_of(proc)[-2000:]
    assert scalar(engine, "SELECT count(*) FROM crmsync.job_queue_entries "
                          "WHERE description = 'by hand' AND locked_by = 'ghost'") == 0
    assert scalar(engine, "SELECT status FROM crmsync.job_queue_entries "
                          "WHERE description = 'edges'") == "ready"
    for command in (("status",), ("status", "--json"), ("entries", "list"),
                    ("entries", "list", "--json")):
        shown = crmsync(cli_env, *command)
        assert shown.returncode == 0, (command, shown.stderr)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    assert scalar(engine, "SELECT count(*) FROM crmsync.job_queue_entries "
                          "WHERE status = 'in_process'") == 0


def test_a_killed_workers_run_is_due_again_at_once_without_an_attempt(
    engine: Engine, spawn,
) -> None:
    lease = 3
    victim = spawn("run", "--lease-seconds", str(lease))
    with engine.begin() as conn:
        entry_id = conn.scalar(sa.text(
            "INSERT INTO crmsync.job_queue_entries (job_kind, run_interval, rerun_delay, "
            "parameters) VALUES ('cleanup', '1 hour', '1 hour', '{\"sleep\": 20}') "
            "RETURNING id"))
    wait_for(lambda: scalar(engine, "SELECT status FROM crmsync.job_queue_entries") ==
             "in_process", timeout=30)
    victim.kill()
    victim.wait(10)
    spawn("run", "--lease-seconds", str(lease))
    # The rerun needs no rerun delay (1 hour) nor a new slot (1 hour): it is the same
    # occurrence, due at once once the lease expired.
    wait_for(lambda: scalar(engine, "SELECT count(*) FROM crmsync.job_queue_log_entries") == 2,
             timeout=60)
    with engine.connect() as conn:
        runs = conn.execute(sa.text(
            "SELECT status, scheduled_for, worker_id FROM crmsync.job_queue_log_entries "
            "ORDER BY id")).all()
        attempts = conn.scalar(sa.text("SELECT attempts FROM crmsync.job_queue_entries "
                                       "WHERE id = :id"), {"id": entry_id})
    assert runs[0].status == "abandoned" and runs[1].status in ("in_process", "success")
    assert runs[0].scheduled_for == runs[1].scheduled_for
    assert attempts == 0


def test_status_shows_why_a_child_waits_for_its_failed_parent(engine: Engine, spawn,
                                                              cli_env: dict[str, str]) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO crmsync.integration_table_mappings (name) VALUES ('CURRENCY'), "
            "('CUSTOMER'); INSERT INTO crmsync.integration_table_mapping_dependencies "
            "VALUES ('CUSTOMER', 'CURRENCY')"))
        job = conn.scalar(sa.text(
            "INSERT INTO crmsync.sync_jobs (mapping_name, direction, status, finished_at, "
            "message) VALUES ('CURRENCY', 'to_integration', 'failed', now(), "
            "'failed: connection refused') RETURNING id"))
        conn.execute(sa.text("INSERT INTO crmsync.job_queue_entries (job_kind, mapping_name) "
                             "VALUES ('sync_mapping', 'CUSTOMER')"))
    proc = spawn("run")
    wait_for(lambda: scalar(engine, "SELECT status FROM crmsync.job_queue_entries") ==
             "waiting", timeout=30)
    shown = crmsync(cli_env, "status")
    assert shown.returncode == 0, shown.stderr
    line = next(x for x in shown.stdout.splitlines() if "CUSTOMER" in x)
    assert "waiting" in line and f"waiting for parent: CURRENCY sync job {job} failed" in line
    listed = crmsync(cli_env, "entries", "list")
    assert f"waiting for parent: CURRENCY sync job {job} failed" in listed.stdout
    # The parent's next pass succeeds (here a foreground sync's job row): the child runs.
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO crmsync.sync_jobs (mapping_name, direction, status, finished_at) "
            "VALUES ('CURRENCY', 'to_integration', 'success', now())"))
    wait_for(lambda: scalar(engine, "SELECT count(*) FROM crmsync.job_queue_log_entries") == 1,
             timeout=30)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
