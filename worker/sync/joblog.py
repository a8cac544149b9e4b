"""Every query on ``crmsync.sync_jobs`` and ``crmsync.sync_job_errors``: NAV's Integration
Synchronization Jobs and their errors. Counters are committed as a pass goes, so a running
job's progress is visible."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from worker.db.engine import translate_errors
from worker.sync.model import Direction

COUNTERS = ("inserted", "modified", "deleted", "unchanged", "skipped", "failed", "coupled",
            "uncoupled")


@dataclass(frozen=True)
class RecordError:
    local_id: str | None
    remote_id: str | None
    message: str
    detail: str | None = None


def start(engine: Engine, mapping: str, direction: Direction, log_entry_id: int | None,
          job_type: str = "synchronization") -> int:
    with translate_errors(), engine.begin() as conn:
        return int(conn.scalar(sa.text(
            "INSERT INTO crmsync.sync_jobs (mapping_name, direction, job_type, "
            "job_queue_log_entry_id) VALUES (:m, :d, :t, :l) RETURNING id"),
            {"m": mapping, "d": direction.value, "t": job_type, "l": log_entry_id}))


def add(conn: Connection, job_id: int, counts: Counter[str],
        errors: Sequence[RecordError] = ()) -> None:
    """Add to a job's counters and errors, in the caller's transaction (the one that also
    wrote the records, so counts never disagree with the data)."""
    increments = {k: int(counts.get(k, 0)) for k in COUNTERS}
    if any(increments.values()):
        sets = ", ".join(f"{k} = {k} + :{k}" for k in COUNTERS)
        conn.execute(sa.text(f"UPDATE crmsync.sync_jobs SET {sets} WHERE id = :id"),
                     {"id": job_id, **increments})
    if errors:
        conn.execute(sa.text(
            "INSERT INTO crmsync.sync_job_errors (job_id, local_id, remote_id, message, detail) "
            "VALUES (:job, :l, :r, :m, :d)"),
            [{"job": job_id, "l": e.local_id, "r": e.remote_id, "m": e.message, "d": e.detail}
             for e in errors])


def finish(engine: Engine, job_id: int, message: str | None = None) -> dict[str, Any]:
    with translate_errors(), engine.begin() as conn:
        row = conn.execute(sa.text(
            "UPDATE crmsync.sync_jobs SET finished_at = now(), message = :msg "
            "WHERE id = :id RETURNING *"), {"id": job_id, "msg": message}).mappings().one()
        return dict(row)


def recent(engine: Engine, *, mapping: str | None = None, limit: int = 30) -> list[dict[str, Any]]:
    with translate_errors(), engine.connect() as conn:
        return [dict(r) for r in conn.execute(sa.text(
            "SELECT * FROM crmsync.sync_jobs WHERE CAST(:m AS text) IS NULL OR mapping_name = :m "
            "ORDER BY id DESC LIMIT :n"), {"m": mapping, "n": limit}).mappings()]


def errors(engine: Engine, *, mapping: str | None = None,
           limit: int = 50) -> list[dict[str, Any]]:
    with translate_errors(), engine.connect() as conn:
        return [dict(r) for r in conn.execute(sa.text(
            """
            SELECT e.*, j.mapping_name, j.direction
              FROM crmsync.sync_job_errors e JOIN crmsync.sync_jobs j ON j.id = e.job_id
             WHERE CAST(:m AS text) IS NULL OR j.mapping_name = :m
             ORDER BY e.id DESC LIMIT :n
            """), {"m": mapping, "n": limit}).mappings()]


def delete_older_than(conn: Connection, cutoff: datetime) -> str:
    """Retention (the 'cleanup' job): jobs finished before ``cutoff``, except those a
    skipped coupling still points at (NAV keeps them: they explain the skip)."""
    deleted = conn.execute(sa.text(
        """
        DELETE FROM crmsync.sync_jobs j
         WHERE j.finished_at < :cutoff
           AND NOT EXISTS (SELECT 1 FROM crmsync.couplings c
                            WHERE c.skipped AND (c.last_job_to = j.id OR c.last_job_from = j.id))
        """), {"cutoff": cutoff}).rowcount
    return f"{deleted} sync jobs"
