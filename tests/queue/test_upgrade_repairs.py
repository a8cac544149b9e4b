"""Revision 0004 repairs the rows an older version accepted instead of failing the upgrade:
impossible instants put the entry on hold, out-of-range intervals are clamped, each with a
note in last_error."""

from __future__ import annotations

import sqlalchemy as sa

from worker.db import migrate
from worker.db.engine import create_engine

BAD_ROWS = """
INSERT INTO crmsync.job_queue_entries
       (description, job_kind, expires_at, earliest_start_at, run_interval, inactivity_timeout,
        job_timeout, max_attempts, attempts, starting_time, parameters)
VALUES ('infinite expiry', 'cleanup', 'infinity', NULL, '30 minutes', NULL, '12 hours', 10, 0,
        NULL, '{}'),
       ('infinite start', 'cleanup', NULL, 'infinity', '30 minutes', NULL, '12 hours', 10, 0,
        NULL, '{}'),
       ('huge intervals', 'cleanup', NULL, NULL, '9000 years', '9000 years', '9000 years',
        1000, 500, '24:00', '{}'),
       ('tiny interval', 'cleanup', NULL, NULL, '1 millisecond', NULL, '12 hours', 10, 0, NULL,
        '{}'),
       ('deep parameters', 'cleanup', NULL, NULL, '30 minutes', NULL, '12 hours', 10, 0, NULL,
        '{"a": [[[[[[[[[[[[1]]]]]]]]]]]]}'),
       ('healthy', 'cleanup', NULL, NULL, '30 minutes', NULL, '12 hours', 10, 0, NULL, '{}')
"""


def test_upgrade_repairs_rows_an_older_version_accepted(empty_database_url: str) -> None:
    engine = create_engine(empty_database_url, pool_size=1)
    migrate.upgrade(engine, "0003_sync_recovery")
    with engine.begin() as conn:
        conn.execute(sa.text(BAD_ROWS))
    migrate.upgrade(engine)
    with engine.connect() as conn:
        rows = {r.description: r for r in conn.execute(sa.text(
            "SELECT * FROM crmsync.job_queue_entries"))}
    engine.dispose()
    assert rows["infinite expiry"].status == "on_hold"
    assert rows["infinite expiry"].expires_at is None
    assert "expires_at infinity is outside 1970..2999" in rows["infinite expiry"].last_error
    assert rows["infinite start"].status == "on_hold"
    assert "earliest_start_at infinity" in rows["infinite start"].last_error
    huge = rows["huge intervals"]
    assert huge.run_interval.days == 366 and huge.inactivity_timeout.days == 366
    assert huge.job_timeout.days == 366
    assert (huge.max_attempts, huge.attempts, huge.starting_time) == (100, 100, None)
    assert "run_interval 9000 years clamped to 1 second..366 days" in huge.last_error
    assert rows["tiny interval"].run_interval.total_seconds() == 1
    assert rows["tiny interval"].status == "ready"
    assert rows["deep parameters"].status == "on_hold"
    assert rows["deep parameters"].parameters == {}
    assert "nested deeper than 10 levels" in rows["deep parameters"].last_error
    assert rows["healthy"].status == "ready" and rows["healthy"].last_error is None
