"""``crmsync jobs`` shows how long each job has run (a running one: so far) and its rate."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from tests.cli.helpers import crmsync
from worker.commands.sync import job_pace
from worker.errors import EXIT_OK


def test_a_running_job_shows_its_elapsed_time_and_rate(configured: dict[str, str],
                                                       tmp_path: Path) -> None:
    engine = sa.create_engine(configured["CRMSYNC_DATABASE_URL"])
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO crmsync.sync_jobs (mapping_name, direction, started_at, inserted, "
            "unchanged, status) VALUES ('CUSTOMER', 'to_integration', now() - interval "
            "'40 seconds', 3000, 1000, 'running'), ('CUSTOMER', 'from_integration', now() - "
            "interval '90 seconds', 500, 0, 'success')"))
        conn.execute(sa.text(
            "UPDATE crmsync.sync_jobs SET finished_at = started_at + interval '10 seconds' "
            "WHERE direction = 'from_integration'"))
    engine.dispose()
    done = crmsync(["jobs", "--json"], configured, tmp_path)
    assert done.returncode == EXIT_OK, done.stdout + done.stderr
    jobs = {j["direction"]: j for j in json.loads(done.stdout)}
    running, finished = jobs["to_integration"], jobs["from_integration"]
    assert 40 <= running["elapsed_seconds"] < 160  # still counting
    assert 0 < running["records_per_second"] <= 100  # 4,000 records in 40 s or more
    assert (finished["elapsed_seconds"], finished["records_per_second"]) == (10.0, 50.0)
    table = crmsync(["jobs"], configured, tmp_path).stdout
    header = next(line for line in table.splitlines() if line.startswith("job"))
    assert "seconds" in header and "rec/s" in header
    row = next(line for line in table.splitlines() if "from_integration" in line)
    assert " 10.0 " in row and " 50 " in row


def test_job_pace() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    row = {"started_at": start, "finished_at": None, "inserted": 10, "failed": 2}
    assert job_pace(row, start + timedelta(seconds=4)) == (4.0, 3.0)
    assert job_pace({**row, "inserted": 0, "failed": 0}, start + timedelta(seconds=4)) == (
        4.0, None)
    assert job_pace(row, start) == (0.0, None)
