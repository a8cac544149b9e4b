"""What several commands share: opening the database from the process settings."""

from __future__ import annotations

from sqlalchemy.engine import Engine

from worker.db import migrate
from worker.db.engine import create_engine, resolve_database_url
from worker.settings import Settings


def open_engine(*, require_schema: bool = True, pool_size: int = 5) -> Engine:
    """The engine for ``CRMSYNC_DATABASE_URL`` (or the embedded server), refusing an
    out-of-date schema unless the caller is the one that upgrades it."""
    engine = create_engine(resolve_database_url(Settings.from_env()), pool_size=pool_size)
    if require_schema:
        migrate.require_current(engine)
    return engine
