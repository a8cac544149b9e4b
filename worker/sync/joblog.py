"""Every query on ``crmsync.sync_jobs`` and ``crmsync.sync_job_errors``: NAV's Integration
Synchronization Jobs and their errors. Counters are committed as a pass goes, so a running
job's progress is visible."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
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
    # The record's business key (customer no ...); filled from the mapping's
    # business_key_column by ``add`` when the caller does not know it.
    business_key: str | None = None
    # The remote record of a record that has no local row yet (a failed create from the
    # CRM): its business key is the value of the field mapped to business_key_column.
    remote_record: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)


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
        keys = business_keys(conn, job_id, errors)
        conn.execute(sa.text(
            "INSERT INTO crmsync.sync_job_errors "
            "(job_id, local_id, remote_id, message, detail, business_key) "
            "VALUES (:job, :l, :r, :m, :d, :b)"),
            [{"job": job_id, "l": e.local_id, "r": e.remote_id, "m": e.message, "d": e.detail,
              "b": key} for e, key in zip(errors, keys, strict=True)])


def business_keys(conn: Connection, job_id: int,
                  errors: Sequence[RecordError]) -> list[str | None]:
    """The business key of each failed record of a chunk: the caller's, else the local
    row's business_key_column, else the remote record's value of the field mapped to it.
    One query for the mapping's settings and one for the local rows, per chunk. Never fails
    the caller's transaction: a key that cannot be read is simply not shown."""
    keys = [e.business_key for e in errors]
    if all(k is not None for k in keys):
        return keys
    found = conn.execute(sa.text(
        """
        SELECT m.local_table, m.local_key, m.business_key_column,
               format_type(a.atttypid, NULL) AS key_type,
               (SELECT f.remote_property FROM crmsync.integration_field_mappings f
                 WHERE f.mapping_name = m.name AND f.local_column = m.business_key_column
                   AND f.lookup_mapping IS NULL AND f.enabled
                 ORDER BY f.id LIMIT 1) AS remote_property
          FROM crmsync.sync_jobs j
          JOIN crmsync.integration_table_mappings m ON m.name = j.mapping_name
          LEFT JOIN pg_attribute a ON a.attrelid = to_regclass(m.local_table)
                                  AND a.attname = m.local_key AND NOT a.attisdropped
         WHERE j.id = :job
        """), {"job": job_id}).first()
    if found is None or not found.business_key_column:
        return keys
    local = _local_business_keys(conn, found, [
        e.local_id for e, k in zip(errors, keys, strict=True) if k is None and e.local_id])
    for n, e in enumerate(errors):
        if keys[n] is None and e.local_id in local:
            keys[n] = local[e.local_id]
        elif keys[n] is None and e.remote_record and found.remote_property:
            value = e.remote_record.get(found.remote_property)
            keys[n] = None if value is None else str(value)
    return keys


def _local_business_keys(conn: Connection, found: Any, local_ids: Sequence[str]) -> dict[str, str]:
    if not local_ids or not found.key_type:
        return {}
    quote = conn.dialect.identifier_preparer.quote
    table = ".".join(quote(part) for part in found.local_table.split(".", 1))
    key, shown = quote(found.local_key), quote(found.business_key_column)
    # The ids are cast to the key's type (not the key to text) so the key's index is used.
    query = sa.text(f"SELECT CAST({key} AS text), CAST({shown} AS text) FROM {table} "
                    f"WHERE {key} = ANY(CAST(:ids AS {found.key_type}[]))")
    try:
        with conn.begin_nested():
            rows = conn.execute(query, {"ids": list(dict.fromkeys(local_ids))}).all()
    except sa.exc.DBAPIError:
        return {}
    return {str(k): str(v) for k, v in rows if v is not None}


def finish(engine: Engine, job_id: int, message: str | None = None, *,
           failed: bool = False) -> dict[str, Any]:
    """Close a job: 'failed' when a connection- or mapping-level failure ended the pass
    (what the pass confirmed before is recorded all the same), else 'success'."""
    with translate_errors(), engine.begin() as conn:
        row = conn.execute(sa.text(
            "UPDATE crmsync.sync_jobs SET finished_at = now(), message = :msg, status = :st "
            "WHERE id = :id RETURNING *"),
            {"id": job_id, "msg": message, "st": "failed" if failed else "success"}
        ).mappings().one()
        return dict(row)


def fail(engine: Engine, job_id: int, message: str) -> dict[str, Any]:
    """Close a job ended by a connection- or mapping-level failure: status 'failed', the
    message, and an error row (with no record) that says it, so `crmsync errors` shows it.
    What the pass confirmed before the failure is already recorded."""
    with translate_errors(), engine.begin() as conn:
        add(conn, job_id, Counter(), [RecordError(None, None, f"pass failed: {message}")])
    return finish(engine, job_id, f"failed: {message}", failed=True)


def close_abandoned(engine: Engine, mapping: str) -> int:
    """Jobs of ``mapping`` still 'running' although no process runs the mapping (the
    caller holds the mapping's run lock): their process died. Marked 'abandoned'."""
    with translate_errors(), engine.begin() as conn:
        return conn.execute(sa.text(
            "UPDATE crmsync.sync_jobs SET status = 'abandoned', finished_at = now(), "
            "message = coalesce(message || '; ', '') || 'abandoned: the process running this "
            "pass stopped before it finished; the next run resumed the work' "
            "WHERE mapping_name = :m AND status = 'running'"), {"m": mapping}).rowcount


def failed_parents(engine: Engine, mapping: str) -> list[str]:
    """The mappings ``mapping`` depends on (transitively) whose latest pass in some
    direction failed or was abandoned: running the child now would fail its lookups."""
    with translate_errors(), engine.connect() as conn:
        return list(conn.execute(sa.text(
            """
            WITH RECURSIVE parents(name) AS (
                SELECT depends_on FROM crmsync.integration_table_mapping_dependencies
                 WHERE mapping_name = :m
                UNION
                SELECT d.depends_on FROM crmsync.integration_table_mapping_dependencies d
                  JOIN parents p ON d.mapping_name = p.name)
            SELECT p.name FROM parents p
             WHERE EXISTS (
                SELECT 1 FROM (SELECT DISTINCT ON (direction) status
                                 FROM crmsync.sync_jobs j
                                WHERE j.mapping_name = p.name AND j.job_type = 'synchronization'
                                  AND j.status <> 'running'
                                ORDER BY direction, id DESC) latest
                 WHERE latest.status IN ('failed', 'abandoned'))
             ORDER BY p.name
            """), {"m": mapping}).scalars())


def recent(engine: Engine, *, mapping: str | None = None, limit: int = 30) -> list[dict[str, Any]]:
    with translate_errors(), engine.connect() as conn:
        return [dict(r) for r in conn.execute(sa.text(
            "SELECT * FROM crmsync.sync_jobs WHERE CAST(:m AS text) IS NULL OR mapping_name = :m "
            "ORDER BY id DESC LIMIT :n"), {"m": mapping, "n": limit}).mappings()]


def errors(engine: Engine, *, mapping: str | None = None, record: str | None = None,
           limit: int = 50) -> list[dict[str, Any]]:
    """The latest error rows, newest first; ``record`` matches the business key, the local
    id or the remote id."""
    with translate_errors(), engine.connect() as conn:
        return [dict(r) for r in conn.execute(sa.text(
            """
            SELECT e.id, e.job_id, j.mapping_name, j.direction, e.created_at, e.business_key,
                   e.local_id, e.remote_id, e.message, e.detail
              FROM crmsync.sync_job_errors e JOIN crmsync.sync_jobs j ON j.id = e.job_id
             WHERE (CAST(:m AS text) IS NULL OR j.mapping_name = :m)
               AND (CAST(:r AS text) IS NULL OR e.business_key = :r OR e.local_id = :r
                    OR lower(e.remote_id) = lower(:r))
             ORDER BY e.id DESC LIMIT :n
            """), {"m": mapping, "r": record, "n": limit}).mappings()]


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
