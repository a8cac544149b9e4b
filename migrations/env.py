"""Alembic environment: every crmsync object lives in schema ``crmsync``, including the
version table, so one database can host the ERP tables and crmsync side by side."""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import create_engine, text

config = context.config


def _url() -> str:
    url = config.attributes.get("database_url") or os.environ.get("CRMSYNC_DATABASE_URL")
    if not url:
        raise RuntimeError("no database URL: set CRMSYNC_DATABASE_URL or use `crmsync db upgrade`")
    return str(url)


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = create_engine(_url())
    with engine.connect() as conn:
        _run(conn)
    engine.dispose()


def _run(connection) -> None:  # type: ignore[no-untyped-def]
    connection.execute(text("CREATE SCHEMA IF NOT EXISTS crmsync"))
    connection.commit()
    context.configure(
        connection=connection,
        version_table_schema="crmsync",
        transaction_per_migration=True,
    )
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()


if context.is_offline_mode():
    raise RuntimeError("crmsync migrations run online only")
run_migrations_online()
