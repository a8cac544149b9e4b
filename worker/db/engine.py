"""Engine creation and translation of driver errors into crmsync's own exceptions."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

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
    return sa.create_engine(
        url,
        pool_pre_ping=True,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_recycle=1800,
        connect_args={"application_name": application_name, "connect_timeout": 5},
    )


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
