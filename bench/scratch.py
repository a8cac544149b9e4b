"""A scratch database for a benchmark: dropped if it exists, created empty and migrated,
on the server of CRMSYNC_DATABASE_URL (default: PostgreSQL on 127.0.0.1:5432)."""

from __future__ import annotations

import os

import sqlalchemy as sa

from worker.db import migrate
from worker.db.engine import create_engine, normalize_url

ADMIN_URL = os.environ.get("CRMSYNC_DATABASE_URL",
                           "postgresql://postgres@127.0.0.1:5432/postgres")


def scratch_database(name: str) -> str:
    """The URL of database ``name``, new and migrated (whatever it held is gone)."""
    base = normalize_url(ADMIN_URL)
    admin = create_engine(base, pool_size=1)
    try:
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    finally:
        admin.dispose()
    url = sa.engine.make_url(base).set(database=name).render_as_string(hide_password=False)
    engine = create_engine(url, pool_size=1)
    try:
        migrate.upgrade(engine)
    finally:
        engine.dispose()
    return url
