"""One bad job queue row stops nobody else: the helpers that read rows one by one when a
value cannot be loaded, put a single entry in 'error' with a message naming it (and the
column), and tell a lost connection (retry later) from a refused statement."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection

from worker.db.engine import describe_db_error
from worker.errors import CrmsyncError
from worker.queue import queries, schedule

log = logging.getLogger(__name__)

# The constraints of running entries: a claim refused by one of them met another worker's
# claim of the same category or mapping, which is no fault of the entry.
ONE_RUNNING = ("job_queue_entries_one_running_per_category",
               "job_queue_entries_one_running_per_mapping",
               "job_queue_entries_sync_all_modified_runs_alone")


def apply_decision(conn: Connection, entry_id: int, decision: schedule.Decision) -> None:
    conn.execute(queries.APPLY_DECISION, {
        "id": entry_id, "status": decision.status.value,
        "next_run_at": decision.next_run_at, "attempts": decision.attempts,
        "last_error": decision.last_error,
    })


def db_now(conn: Connection) -> datetime:
    now: datetime = conn.scalar(sa.text("SELECT clock_timestamp()"))
    return now


def readable_rows(
    conn: Connection, query: sa.TextClause, params: Mapping[str, Any]
) -> list[sa.RowMapping]:
    """The rows of a query on job_queue_entries (which takes ``:only``, an id or NULL). When
    a row holds a value the driver cannot load, every row is loaded alone and the unreadable
    ones are put in 'error' with the column named, so they stop nobody else."""
    try:
        with conn.begin_nested():
            return list(conn.execute(query, {**params, "only": None}).mappings().all())
    except sa_exc.DBAPIError as exc:
        reraise_if_unavailable(exc)
    rows: list[sa.RowMapping] = []
    for entry_id in conn.scalars(sa.text(
            "SELECT id FROM crmsync.job_queue_entries ORDER BY priority, id")).all():
        try:
            with conn.begin_nested():
                rows += conn.execute(query, {**params, "only": entry_id}).mappings().all()
        except sa_exc.DBAPIError as exc:
            reraise_if_unavailable(exc)
            column = unreadable_column(conn, entry_id)
            mark_broken(conn, entry_id, "cannot be read", exc, column)
    return rows


def unreadable_column(conn: Connection, entry_id: int) -> str | None:
    columns = conn.scalars(sa.text(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = 'crmsync' "
        "AND table_name = 'job_queue_entries' ORDER BY ordinal_position")).all()
    for column in columns:
        try:
            with conn.begin_nested():
                conn.execute(sa.text(
                    f'SELECT "{column}" FROM crmsync.job_queue_entries WHERE id = :id'),
                    {"id": entry_id}).all()
        except sa_exc.DBAPIError:
            return str(column)
    return None


def mark_broken(
    conn: Connection, entry_id: int, what: str, exc: BaseException, column: str | None = None
) -> None:
    """Put one entry in 'error' with a message naming it (and the column when known)."""
    message = describe(entry_id, what, exc, column)
    log.error("job queue entry put in error", extra={"entry": entry_id, "error": message})
    try:
        with conn.begin_nested():
            conn.execute(queries.PUT_IN_ERROR, {"id": entry_id, "message": message})
    except sa_exc.DBAPIError as again:
        reraise_if_unavailable(again)
        log.error("could not put entry in error", extra={"entry": entry_id})


def describe(entry_id: int, what: str, exc: BaseException, column: str | None = None) -> str:
    """'entry #7 could not be claimed: run_interval: ...' from any exception."""
    if isinstance(exc, sa_exc.DBAPIError):
        detail = describe_db_error(exc)
    elif isinstance(exc, CrmsyncError):
        detail = str(exc)
    else:
        detail = f"{type(exc).__name__}: {exc}"
    prefix = f"column {column}: " if column else ""
    return f"entry #{entry_id} {what}: {prefix}{detail}".replace("\x00", "\\0")


def constraint_of(exc: BaseException) -> str | None:
    orig = getattr(exc, "orig", None)
    return getattr(getattr(orig, "diag", None), "constraint_name", None)


def reraise_if_unavailable(exc: BaseException) -> None:
    """A lost connection is not the entry's fault: let the caller retry later."""
    lost = isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError) or (
        isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated)
    if lost:
        raise exc
