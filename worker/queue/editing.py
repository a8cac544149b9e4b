"""The administrator's writes to job queue entries (``crmsync entries``): find entries by id
or mapping name, add, edit, remove, hold, restart, run now. The worker's own queries (claim,
finish, rescue, reschedule) are in manager.py.

Every write is the same row a user could write with psql, checked by the same database
rules; a refused value becomes a ConfigurationError of one line naming the column and the
rule (worker/queue/columns.py)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection

from worker.db.engine import translate_errors
from worker.errors import ConfigurationError
from worker.queue import columns

_BIGINT_MAX = 2**63 - 1


@dataclass(frozen=True)
class EntryRef:
    """An entry as the administrator named it."""

    id: int
    label: str
    status: str


@contextlib.contextmanager
def refused_as_usage() -> Iterator[None]:
    """Database refusals of a row become one line naming the column and its rule."""
    try:
        with translate_errors():
            yield
    except Exception as exc:
        cause = exc.__cause__
        if isinstance(cause, sa_exc.DBAPIError) and (text := columns.explain(cause)):
            raise ConfigurationError(text) from exc
        raise


def resolve(conn: Connection, refs: Sequence[str]) -> list[EntryRef]:
    """The entries named by ids or mapping names (case-insensitive), in the order given;
    a name that matches nothing is an error naming it."""
    found: dict[int, EntryRef] = {}
    for ref in refs:
        number = int(ref) if ref.isdigit() and int(ref) <= _BIGINT_MAX else None
        rows = conn.execute(sa.text(
            """
            SELECT id, COALESCE(mapping_name, job_kind) AS label, status
              FROM crmsync.job_queue_entries
             WHERE id = CAST(:number AS bigint) OR upper(mapping_name) = upper(:ref)
             ORDER BY id
            """), {"number": number, "ref": ref}).all()
        if not rows:
            raise ConfigurationError(
                f"entry {ref}: no entry with this id or mapping name "
                "(`crmsync entries list` shows them)")
        for row in rows:
            found.setdefault(row.id, EntryRef(row.id, row.label, row.status))
    return list(found.values())


def check_value(conn: Connection, column: columns.UserColumn, value: str | None) -> None:
    """Whether PostgreSQL reads ``value`` as the column's type; an error names the column."""
    if value is None:
        return
    try:
        with conn.begin_nested():
            conn.execute(sa.text(f"SELECT CAST(:v AS {column.sql_type})"), {"v": value})
    except sa_exc.DataError as exc:
        reason = getattr(getattr(exc.orig, "diag", None), "message_primary", None) or "invalid"
        raise ConfigurationError(
            f"{column.name}: {value!r} is not a valid {column.sql_type} ({reason}); "
            f"for example {column.example}") from exc


def update(conn: Connection, entry_id: int, values: Mapping[str, str | None]) -> None:
    """Set user columns of one entry; the table's trigger flags a schedule change."""
    sets = []
    for name in values:
        column = columns.by_name(name)
        if column is None:
            raise ConfigurationError(f"{name}: not a column users set")
        sets.append(f"{name} = CAST(:{name} AS {column.sql_type})")
    with refused_as_usage():
        conn.execute(sa.text(
            f"UPDATE crmsync.job_queue_entries SET {', '.join(sets)} WHERE id = :id"),
            {**values, "id": entry_id})


def add(conn: Connection, values: Mapping[str, Any]) -> int:
    """Insert an entry (columns absent from ``values`` take their defaults)."""
    names = list(values)
    casts = []
    for name in names:
        column = columns.by_name(name)
        casts.append(f"CAST(:{name} AS {column.sql_type})" if column else f":{name}")
    with refused_as_usage():
        new_id: int = conn.scalar(sa.text(
            f"INSERT INTO crmsync.job_queue_entries ({', '.join(names)}) "
            f"VALUES ({', '.join(casts)}) RETURNING id"), dict(values))
    return new_id


def remove(conn: Connection, ids: Sequence[int]) -> list[int]:
    """Delete entries that are not running; returns the ids deleted. Their log rows stay."""
    with refused_as_usage():
        return list(conn.scalars(sa.text(
            "DELETE FROM crmsync.job_queue_entries WHERE id = ANY(:ids) "
            "AND status <> 'in_process' RETURNING id"), {"ids": list(ids)}))


def hold(conn: Connection, ids: Sequence[int]) -> list[int]:
    with refused_as_usage():
        return list(conn.scalars(sa.text(
            "UPDATE crmsync.job_queue_entries SET status = 'on_hold' "
            "WHERE id = ANY(:ids) AND status <> 'in_process' RETURNING id"),
            {"ids": list(ids)}))


def restart(conn: Connection, ids: Sequence[int]) -> list[int]:
    """Back to ready with fresh attempts, flagged so the next run is recomputed by the rules
    (manager.reschedule)."""
    with refused_as_usage():
        return list(conn.scalars(sa.text(
            "UPDATE crmsync.job_queue_entries "
            "SET status = 'ready', attempts = 0, schedule_changed = true, last_error = NULL, "
            "    next_run_at = COALESCE(next_run_at, now()) "
            "WHERE id = ANY(:ids) AND status <> 'in_process' RETURNING id"),
            {"ids": list(ids)}))


def run_now(conn: Connection, ids: Sequence[int]) -> list[int]:
    with refused_as_usage():
        return list(conn.scalars(sa.text(
            "UPDATE crmsync.job_queue_entries SET next_run_at = now(), schedule_changed = false, "
            "status = CASE WHEN status IN ('on_hold_inactivity', 'waiting') THEN 'ready' "
            "              ELSE status END "
            "WHERE id = ANY(:ids) RETURNING id"), {"ids": list(ids)}))


def next_runs(conn: Connection, ids: Sequence[int]) -> list[sa.Row[Any]]:
    """id, label, status and next run of entries, for what the command prints."""
    return list(conn.execute(sa.text(
        "SELECT id, COALESCE(mapping_name, job_kind) AS label, status, next_run_at "
        "FROM crmsync.job_queue_entries WHERE id = ANY(:ids) ORDER BY id"),
        {"ids": list(ids)}))
