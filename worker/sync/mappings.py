"""Every query on the mapping configuration tables: integration table mappings, their
dependencies and their field mappings, and the high-water marks kept on the mapping row."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from worker.db.engine import translate_errors
from worker.errors import ConfigurationError
from worker.sync.model import FieldMapping, TableMapping


class MappingNotFound(ConfigurationError):
    """No integration table mapping has that name."""


def load_all(engine: Engine, *, enabled_only: bool = False) -> list[TableMapping]:
    with translate_errors(), engine.connect() as conn:
        names = conn.scalars(sa.text(
            "SELECT name FROM crmsync.integration_table_mappings "
            + ("WHERE enabled " if enabled_only else "") + "ORDER BY created_at, name")).all()
        return [_load(conn, name) for name in names]


def load(engine: Engine, name: str) -> TableMapping:
    with translate_errors(), engine.connect() as conn:
        return _load(conn, name)


def _load(conn: Connection, name: str) -> TableMapping:
    row = conn.execute(sa.text(
        "SELECT * FROM crmsync.integration_table_mappings WHERE name = :n"),
        {"n": name}).mappings().first()
    if row is None:
        raise MappingNotFound(f"mapping {name!r} does not exist")
    fields = tuple(FieldMapping.from_row(r) for r in conn.execute(sa.text(
        "SELECT * FROM crmsync.integration_field_mappings "
        "WHERE mapping_name = :n AND enabled ORDER BY id"), {"n": name}).mappings())
    depends = frozenset(conn.scalars(sa.text(
        "SELECT depends_on FROM crmsync.integration_table_mapping_dependencies "
        "WHERE mapping_name = :n"), {"n": name}))
    missing = [k for k in ("local_table", "entity_set", "remote_key") if not row[k]]
    if missing:
        raise ConfigurationError(f"mapping {name}: {', '.join(missing)} not set")
    return TableMapping.from_row(row, fields, depends)


def dependencies(engine: Engine) -> dict[str, set[str]]:
    """Enabled mappings (in creation order) with the enabled mappings they depend on."""
    with translate_errors(), engine.connect() as conn:
        names = conn.scalars(sa.text(
            "SELECT name FROM crmsync.integration_table_mappings WHERE enabled "
            "ORDER BY created_at, name")).all()
        deps: dict[str, set[str]] = {n: set() for n in names}
        for child, parent in conn.execute(sa.text(
                "SELECT mapping_name, depends_on "
                "FROM crmsync.integration_table_mapping_dependencies")):
            if child in deps and parent in deps:
                deps[child].add(parent)
    return deps


def save_local_snapshot(conn: Connection, name: str, snapshot: str) -> None:
    conn.execute(sa.text(
        "UPDATE crmsync.integration_table_mappings "
        "SET local_snapshot = CAST(:s AS text), updated_at = now(), local_watermark = "
        "CAST(CAST(pg_snapshot_xmin(CAST(CAST(:s AS text) AS pg_snapshot)) AS text) AS bigint) "
        "WHERE name = :n"), {"n": name, "s": snapshot})


def save_local_modified_since(conn: Connection, name: str, stamp: datetime) -> None:
    conn.execute(sa.text(
        "UPDATE crmsync.integration_table_mappings "
        "SET local_modified_since = GREATEST(local_modified_since, :s), updated_at = now() "
        "WHERE name = :n"), {"n": name, "s": stamp})


def save_remote_modified_since(conn: Connection, name: str, stamp: datetime) -> None:
    conn.execute(sa.text(
        "UPDATE crmsync.integration_table_mappings "
        "SET remote_modified_since = GREATEST(remote_modified_since, :s), updated_at = now() "
        "WHERE name = :n"), {"n": name, "s": stamp})


def save_delta_link(conn: Connection, name: str, link: str | None) -> None:
    conn.execute(sa.text(
        "UPDATE crmsync.integration_table_mappings SET delta_link = :l, updated_at = now() "
        "WHERE name = :n"), {"n": name, "l": link})


def delta_link(conn: Connection, name: str) -> str | None:
    return conn.scalar(sa.text(
        "SELECT delta_link FROM crmsync.integration_table_mappings WHERE name = :n"),
        {"n": name})


def clear_marks(engine: Engine, names: list[str]) -> None:
    """NAV's "Run Full Synchronization": the next passes read every record again."""
    with translate_errors(), engine.begin() as conn:
        conn.execute(sa.text(
            "UPDATE crmsync.integration_table_mappings SET local_watermark = NULL, "
            "local_snapshot = NULL, local_modified_since = NULL, remote_modified_since = NULL, "
            "delta_link = NULL WHERE name = ANY(:n)"), {"n": names})


def set_triggers_installed(conn: Connection, name: str, installed: bool) -> None:
    conn.execute(sa.text(
        "UPDATE crmsync.integration_table_mappings SET triggers_installed = :i WHERE name = :n"),
        {"n": name, "i": installed})
