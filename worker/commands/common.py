"""What several commands share: opening the database from the process settings, with one
error naming the database when it cannot be used, and the process' composition root on it
(``open_app``: what a command that synchronizes works with). Without ``CRMSYNC_DATABASE_URL`` a
command refuses, naming the setting, unless ``--embedded`` allows the embedded server
(then one line on stderr says so): a shell without the service's settings must not
quietly work on a new, empty database."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from sqlalchemy.engine import Engine

from worker.app import App
from worker.db import migrate
from worker.db.engine import create_engine, redacted, resolve_database_url, translate_errors
from worker.errors import ConfigurationError, DatabaseUnavailable, SchemaOutOfDate
from worker.settings import Settings

_noted: list[bool] = []
_embedded: list[bool] = []  # set by the command line (--embedded, or the demo)

NO_DATABASE_URL = (
    "CRMSYNC_DATABASE_URL: not set: set it to the database to work on "
    "(postgresql://user@host:5432/db), or read the service's settings with "
    "`crmsync --env-file /etc/crmsync/crmsync.env …`, or pass --embedded to use the "
    "embedded PostgreSQL under $CRMSYNC_HOME")


def allow_embedded(allowed: bool) -> None:
    """Whether this process may fall back to the embedded server (``--embedded``)."""
    _embedded[:] = [allowed]


def open_engine(*, require_schema: bool = True, pool_size: int = 5) -> Engine:
    """The engine for ``CRMSYNC_DATABASE_URL`` (or, allowed, the embedded server), checked by one
    connection, refusing an out-of-date schema unless the caller is the one that upgrades it."""
    settings = Settings.from_env()
    if settings.database_url is None and not any(_embedded):
        raise ConfigurationError(NO_DATABASE_URL)
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


def open_app(*, pass_observers: Sequence[object] | None = None) -> App:
    """The composition root on :func:`open_engine`'s engine: the command's one sync engine
    and OData clients (``app.close()`` closes the clients); ``pass_observers``: who shows
    the passes' progress (default: a log line every 30 s, see :class:`App`)."""
    return App(open_engine(), pass_observers=pass_observers)
