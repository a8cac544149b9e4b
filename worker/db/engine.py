"""Engine creation and translation of driver errors into crmsync's own exceptions."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterable, Iterator
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine

from worker.db.embedded import start_embedded
from worker.errors import DatabaseError, DatabaseUnavailable
from worker.settings import Settings


def resolve_database_url(settings: Settings) -> str:
    """The configured URL, or the embedded server's when none is configured."""
    if settings.database_url:
        return normalize_url(settings.database_url)
    return start_embedded(settings.home)


def normalize_url(url: str) -> str:
    """Accept plain ``postgresql://`` URLs and use the psycopg 3 driver for them."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def create_engine(url: str, *, pool_size: int = 5, application_name: str = "crmsync") -> Engine:
    """An engine whose pooled connections are checked before use, so a restarted database
    costs one failed attempt and not a broken pool."""
    engine = sa.create_engine(
        url,
        pool_pre_ping=True,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_recycle=1800,
        connect_args={"application_name": application_name, "connect_timeout": 5},
    )
    if engine.dialect.driver == "psycopg":
        sa.event.listen(engine, "connect", _read_json_fast)
    return engine


def _read_json_fast(dbapi_connection: Any, _record: Any) -> None:
    from psycopg.types.json import set_json_loads

    set_json_loads(jsonb_loads, dbapi_connection)


def jsonb_loads(data: bytes | str) -> Any:
    """A json/jsonb column's value as the json module reads it, read by orjson (a few
    times faster) when that gives the same: a value holding a float (a fraction, an
    exponent, an integer beyond 64 bits, which orjson would round) or one orjson refuses
    is read by the json module."""
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)
    return value if _no_float(value) else json.loads(data)


def _no_float(value: Any) -> bool:
    kind = type(value)
    if kind is dict:
        items: Any = value.values()
    elif kind is list:
        items = value
    else:
        return kind is not float
    for item in items:
        kind = type(item)
        if kind is float or ((kind is dict or kind is list) and not _no_float(item)):
            return False
    return True


def redacted(url: str) -> str:
    """The URL without its password, for messages."""
    return sa.engine.make_url(url).render_as_string(hide_password=True)


@contextlib.contextmanager
def translate_errors() -> Iterator[None]:
    """Re-raise driver errors as DatabaseUnavailable (retry later) or DatabaseError (the
    statement itself is wrong; the message carries the constraint name)."""
    try:
        yield
    except (sa_exc.OperationalError, sa_exc.InterfaceError) as exc:
        raise DatabaseUnavailable(describe_unavailable(exc)) from exc
    except sa_exc.DBAPIError as exc:
        if exc.connection_invalidated:
            raise DatabaseUnavailable(describe_unavailable(exc)) from exc
        raise DatabaseError(describe_db_error(exc)) from exc


# libpq's words for why a connection failed -> what to do about it.
_ADVICE = (
    ("does not exist", "create it (createdb) or correct CRMSYNC_DATABASE_URL"),
    ("connection refused", "is PostgreSQL running there? check CRMSYNC_DATABASE_URL"),
    ("resolve host", "check the host name in CRMSYNC_DATABASE_URL"),
    ("could not translate host name", "check the host name in CRMSYNC_DATABASE_URL"),
    ("timeout expired", "no answer within 5 s; check the host and port of "
                        "CRMSYNC_DATABASE_URL and the firewall"),
    ("password authentication failed", "check the user and its password (pgpass)"),
    ("No such file or directory", "no server on that socket; is PostgreSQL running? "
                                  "check CRMSYNC_DATABASE_URL"),
)


def describe_unavailable(exc: sa_exc.DBAPIError) -> str:
    """Why the database cannot be used, without libpq's 'connection to server at …'
    preamble, and what to do about it."""
    text = " ".join(str(exc.orig or exc).split())
    text = re.sub(r"^\(.*?\)\s*", "", text)
    text = re.sub(r"\[SQL:.*$|\(Background on this error.*$", "", text).strip()
    text = re.sub(r"^connection failed: ", "", text)
    text = re.sub(r'^connection to server (at|on) .*? failed: (FATAL: )?', "", text) or text
    text = re.sub(r"Connection refused\b.*$", "connection refused", text)
    for marker, advice in _ADVICE:
        if marker.lower() in text.lower():
            return f"{text.rstrip('.')}: {advice}"
    return text or type(exc.orig or exc).__name__


def describe_db_error(exc: sa_exc.DBAPIError) -> str:
    """'<message> (constraint <name>)' from a driver error, without the SQL text."""
    orig = exc.orig
    diag = getattr(orig, "diag", None)
    message = getattr(diag, "message_primary", None) or _first_line(exc)
    constraint = getattr(diag, "constraint_name", None)
    detail = getattr(diag, "message_detail", None)
    out = message
    if constraint and constraint not in message:
        out += f" (constraint {constraint})"
    if detail:
        out += f": {detail}"
    return out


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    return str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__


def asynchronous_commit(conn: sa.Connection) -> None:
    """Let this transaction's COMMIT return before its WAL is flushed to disk. Only for
    writes that a crash of the database server may lose without harm, because what they
    record is found again (a pass's progress, results that the intents committed before
    them let the next pass read back): a later synchronous commit flushes them too."""
    conn.execute(sa.text("SET LOCAL synchronous_commit TO OFF"))


def text_array(values: Iterable[Any]) -> str:
    """One PostgreSQL array literal of these values as text, for a parameter cast to an
    array (``CAST(:ids AS text[])``, or of any type whose text form the values are): psycopg
    dumps a list element by element in Python, about a microsecond an element — half a
    millisecond for a chunk's keys — where this is one join. Elements are double-quoted,
    quotes and backslashes escaped; None is NULL."""
    items = list(values)
    if not items:
        return "{}"
    if all(type(v) is str for v in items):
        joined = '","'.join(items)
        if '"' not in joined and "\\" not in joined:  # the usual keys: nothing to escape
            return '{"' + joined + '"}'
    return "{" + ",".join("NULL" if v is None else '"' + str(v).replace("\\", "\\\\")
                          .replace('"', '\\"') + '"' for v in items) + "}"
