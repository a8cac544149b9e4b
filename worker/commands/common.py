"""What several commands share: opening the database from the process settings, with one
line on stderr when that is the embedded server, and one error naming the database when it
cannot be used."""

from __future__ import annotations

import sys

from sqlalchemy.engine import Engine

from worker.db import migrate
from worker.db.engine import create_engine, redacted, resolve_database_url, translate_errors
from worker.errors import DatabaseUnavailable, SchemaOutOfDate
from worker.settings import Settings

_noted: list[bool] = []


def open_engine(*, require_schema: bool = True, pool_size: int = 5) -> Engine:
    """The engine for ``CRMSYNC_DATABASE_URL`` (or the embedded server), checked by one
    connection, refusing an out-of-date schema unless the caller is the one that upgrades it."""
    settings = Settings.from_env()
    url = resolve_database_url(settings)
    if settings.database_url is None and not _noted:
        _noted.append(True)  # once per process, however many engines a command opens
        print(f"crmsync: note: CRMSYNC_DATABASE_URL is unset: using the embedded PostgreSQL "
              f"with its data in {settings.home / 'pgdata'}; set CRMSYNC_DATABASE_URL="
              "postgresql://user@host:5432/db to use a server", file=sys.stderr)
    engine = create_engine(url, pool_size=pool_size)
    where = f"database {redacted(url)}"
    try:
        with translate_errors():
            with engine.connect():
                pass
            if require_schema:
                migrate.require_current(engine)
    except DatabaseUnavailable as exc:
        raise DatabaseUnavailable(f"{where}: {exc}") from exc
    except SchemaOutOfDate as exc:
        raise SchemaOutOfDate(f"{where}: {exc}") from exc
    return engine
