"""Applying and checking alembic revisions (``crmsync db upgrade``)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine

from worker.errors import SchemaOutOfDate


def migrations_dir() -> Path:
    """The alembic scripts: packaged as ``worker.migrations`` in a wheel, or the top-level
    ``migrations/`` folder of a source checkout (editable install)."""
    spec = importlib.util.find_spec("worker.migrations")
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return Path(__file__).resolve().parents[2] / "migrations"


def alembic_config(url: str | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    cfg.set_main_option("version_table_schema", "crmsync")
    if url:
        cfg.attributes["database_url"] = url
    return cfg


MIGRATION_LOCK_KEY = 0x63726D6D  # "crmm": one `crmsync db upgrade` at a time


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Apply revisions; several workers upgrading at once (ExecStartPre) take turns."""
    cfg = alembic_config()
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
        conn.commit()
        try:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
        finally:
            conn.rollback()
            conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK_KEY})
            conn.commit()


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"version_table_schema": "crmsync"})
        return ctx.get_current_revision()


def require_current(engine: Engine) -> None:
    """Refuse to work on a schema that is not at this version's head revision."""
    current, head = current_revision(engine), head_revision()
    if current != head:
        state = "empty" if current is None else f"at revision {current}"
        raise SchemaOutOfDate(
            f"the crmsync schema is {state}, this version needs {head}: run `crmsync db upgrade` "
            "with this CRMSYNC_DATABASE_URL"
        )
