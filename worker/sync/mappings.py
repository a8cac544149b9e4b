"""Every query on the mapping configuration tables: integration table mappings, their
dependencies and their field mappings, the high-water marks kept on the mapping row, and
reading and applying a mapping document (with the job queue entries it states)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from worker.db.engine import translate_errors
from worker.errors import ConfigurationError
from worker.sync.document_plan import SCOPE_COLUMNS, Change, Plan
from worker.sync.documents import ENTRY_COLUMNS, FIELD_COLUMNS, MAPPING_COLUMNS, MappingDoc
from worker.sync.model import ApplyOn, FieldMapping, Marks, TableMapping


class MappingNotFound(ConfigurationError):
    """No integration table mapping has that name."""


class ChangeRefused(Exception):
    """The database refused one change of a mapping document (a constraint)."""

    def __init__(self, change: Change, error: sa.exc.DBAPIError) -> None:
        super().__init__(str(error))
        self.change = change
        self.error = error


def load_all(engine: Engine, *, enabled_only: bool = False) -> list[TableMapping]:
    with translate_errors(), engine.connect() as conn:
        names = conn.scalars(sa.text(
            "SELECT name FROM crmsync.integration_table_mappings "
            + ("WHERE enabled " if enabled_only else "") + "ORDER BY created_at, name")).all()
        return [_load(conn, name)[0] for name in names]


def load(engine: Engine, name: str) -> TableMapping:
    with translate_errors(), engine.connect() as conn:
        return _load(conn, name)[0]


def load_with_marks(engine: Engine, name: str) -> tuple[TableMapping, Marks]:
    """The mapping's definition and its marks, read together (one run's start)."""
    with translate_errors(), engine.connect() as conn:
        return _load(conn, name)


def load_in(conn: Connection, name: str) -> TableMapping:
    """``load`` in the caller's transaction."""
    return _load(conn, name)[0]


def triggers_installed(conn: Connection, name: str) -> bool:
    return bool(conn.scalar(sa.text(
        "SELECT triggers_installed FROM crmsync.integration_table_mappings WHERE name = :n"),
        {"n": name}))


def _load(conn: Connection, name: str) -> tuple[TableMapping, Marks]:
    row = conn.execute(sa.text(
        "SELECT * FROM crmsync.integration_table_mappings WHERE name = :n"),
        {"n": name}).mappings().first()
    if row is None:
        raise MappingNotFound(f"mapping {name!r} does not exist")
    fields = tuple(_field_mapping(name, r) for r in conn.execute(sa.text(
        "SELECT * FROM crmsync.integration_field_mappings "
        "WHERE mapping_name = :n AND enabled ORDER BY id"), {"n": name}).mappings())
    depends = frozenset(conn.scalars(sa.text(
        "SELECT depends_on FROM crmsync.integration_table_mapping_dependencies "
        "WHERE mapping_name = :n"), {"n": name}))
    missing = [k for k in ("local_table", "entity_set", "remote_key") if not row[k]]
    if missing:
        raise ConfigurationError(f"mapping {name}: {', '.join(missing)} not set")
    return TableMapping.from_row(row, fields, depends), Marks.from_row(row)


def _field_mapping(mapping: str, row: Mapping[Any, Any]) -> FieldMapping:
    """A field mapping row; a value outside a fixed vocabulary (a schema whose constraint
    was dropped) is a one-line configuration error naming the mapping and the field."""
    apply_on = row.get("apply_on") or ApplyOn.ALWAYS
    if apply_on not in tuple(ApplyOn):
        label = " <-> ".join(row[c] or "(constant)" for c in ("local_column", "remote_property"))
        raise ConfigurationError(
            f"mapping {mapping}: field {label}: apply_on {apply_on!r} is not one of "
            f"{', '.join(ApplyOn)}")
    return FieldMapping.from_row(row)


def require_exists(engine: Engine, name: str) -> None:
    """MappingNotFound (a one-line configuration error) unless mapping ``name`` exists."""
    with translate_errors(), engine.connect() as conn:
        found = conn.scalar(sa.text(
            "SELECT 1 FROM crmsync.integration_table_mappings WHERE name = :n"), {"n": name})
    if found is None:
        raise MappingNotFound(f"mapping {name!r} does not exist; crmsync mappings list "
                              "shows the mappings")


def creating_nothing(engine: Engine) -> list[str]:
    """Notes for enabled mappings that will create nothing: only coupled records are
    synchronized (NAV's "Synch. Only Coupled Records") and none is coupled yet."""
    with translate_errors(), engine.connect() as conn:
        names = conn.scalars(sa.text(
            "SELECT m.name FROM crmsync.integration_table_mappings m "
            "WHERE m.enabled AND m.sync_only_coupled AND NOT EXISTS "
            "(SELECT 1 FROM crmsync.couplings c WHERE c.mapping_name = m.name) "
            "ORDER BY m.created_at, m.name")).all()
    return [f"note: mapping {name} will create nothing: sync_only_coupled = true and no "
            f"record is coupled (couple with crmsync couple --match {name}, or set "
            "sync_only_coupled = false)" for name in names]


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
        "SET local_snapshot = CAST(:s AS text), updated_at = now(), "
        "local_pass_snapshot = NULL, local_pass_done_key = NULL, local_watermark = "
        "CAST(CAST(pg_snapshot_xmin(CAST(CAST(:s AS text) AS pg_snapshot)) AS text) AS bigint) "
        "WHERE name = :n"), {"n": name, "s": snapshot})


def save_local_pass_progress(conn: Connection, name: str, snapshot: str | None,
                             done_key: str | None) -> None:
    """The snapshot a local→remote pass reads up to and the last key it finished (both
    None once the pass completed)."""
    conn.execute(sa.text(
        "UPDATE crmsync.integration_table_mappings "
        "SET local_pass_snapshot = :s, local_pass_done_key = :k WHERE name = :n"),
        {"n": name, "s": snapshot, "k": done_key})


def save_local_modified_since(conn: Connection, name: str, stamp: datetime) -> None:
    conn.execute(sa.text(
        "UPDATE crmsync.integration_table_mappings "
        "SET local_modified_since = GREATEST(local_modified_since, :s), updated_at = now() "
        "WHERE name = :n"), {"n": name, "s": stamp})


def save_remote_modified_since(conn: Connection, name: str, stamp: datetime, *,
                               complete: bool = False) -> None:
    """Move the remote mark forward (never back); ``complete``: every record stamped at
    or before it was read (see migration 0003)."""
    conn.execute(sa.text(
        "UPDATE crmsync.integration_table_mappings "
        "SET remote_modified_complete = CASE WHEN remote_modified_since IS NULL "
        "        OR :s >= remote_modified_since THEN :c ELSE remote_modified_complete END, "
        "    remote_modified_since = GREATEST(remote_modified_since, :s), updated_at = now() "
        "WHERE name = :n"), {"n": name, "s": stamp, "c": complete})


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
            "remote_modified_complete = false, delta_link = NULL WHERE name = ANY(:n)"),
            {"n": names})


def set_triggers_installed(conn: Connection, name: str, installed: bool) -> None:
    conn.execute(sa.text(
        "UPDATE crmsync.integration_table_mappings SET triggers_installed = :i "
        "WHERE name = :n AND triggers_installed IS DISTINCT FROM :i"),
        {"n": name, "i": installed})


# -- the mapping document (crmsync mappings export / apply) ---------------------------------
def read_documents(conn: Connection, names: Sequence[str] | None = None, *,
                   entries: bool = False) -> list[MappingDoc]:
    """The stored mappings (all, or ``names`` in that order) as normalized document values;
    field mappings and entries carry their row id as ``_id``."""
    rows = conn.execute(sa.text(
        "SELECT * FROM crmsync.integration_table_mappings ORDER BY created_at, name"
    )).mappings().all()
    by_name = {r["name"]: r for r in rows}
    if names is not None:
        unknown = [n for n in names if n not in by_name]
        if unknown:
            raise MappingNotFound(f"no mapping {', '.join(map(repr, unknown))}; "
                                  f"crmsync mappings list shows them")
        rows = [by_name[n] for n in dict.fromkeys(names)]
    return [_read_document(conn, row, entries) for row in rows]


def _read_document(conn: Connection, row: Mapping[Any, Any], entries: bool) -> MappingDoc:
    name = row["name"]
    fields = tuple(
        {**{c: f.get(c) for c in FIELD_COLUMNS}, "_id": f["id"]}
        for f in conn.execute(sa.text(
            "SELECT * FROM crmsync.integration_field_mappings WHERE mapping_name = :n "
            "ORDER BY id"), {"n": name}).mappings())
    depends = tuple(conn.scalars(sa.text(
        "SELECT depends_on FROM crmsync.integration_table_mapping_dependencies "
        "WHERE mapping_name = :n ORDER BY depends_on"), {"n": name}))
    found = None
    if entries:
        found = tuple(
            {**{c: e[c] for c in ENTRY_COLUMNS}, "_id": e["id"]}
            for e in conn.execute(sa.text(
                "SELECT * FROM crmsync.job_queue_entries WHERE job_kind = 'sync_mapping' "
                "AND mapping_name = :n ORDER BY id"), {"n": name}).mappings())
    columns = {c: row.get(c) for c in MAPPING_COLUMNS}
    # JSON objects come back with their keys reordered: show each condition as written.
    columns["local_filter"] = [
        {k: c[k] for k in sorted(c, key=lambda k: (_FILTER_ORDER.get(k, 9), k))}
        if isinstance(c, dict) else c for c in columns["local_filter"] or []]
    return MappingDoc(name, columns, depends, fields, found)


_FILTER_ORDER = {"column": 0, "op": 1, "value": 2}


def apply_plan(conn: Connection, plan: Plan) -> None:
    """Execute a plan in the caller's transaction, in its order: mappings first (so
    dependencies and lookups can name them), removed mappings last."""
    position = 0
    for change in plan.changes:
        try:
            if change.kind == "mapping" and change.op == "+":
                _insert_mapping(conn, change, position)
                position += 1
            elif change.kind == "mapping" and change.op == "~":
                _update_mapping(conn, change)
            elif change.kind == "dependency":
                _dependency(conn, change)
            elif change.kind == "field":
                _field(conn, change)
            elif change.kind == "entry":
                _entry(conn, change)
        except sa.exc.DBAPIError as exc:
            raise ChangeRefused(change, exc) from exc
    removed = [c.mapping for c in plan.changes if c.kind == "mapping" and c.op == "-"]
    if removed:
        # Their field mappings first: they may look up each other.
        conn.execute(sa.text(
            "DELETE FROM crmsync.integration_field_mappings WHERE mapping_name = ANY(:n)"),
            {"n": removed})
        conn.execute(sa.text(
            "DELETE FROM crmsync.integration_table_mappings WHERE name = ANY(:n)"),
            {"n": removed})


def _params(values: Mapping[str, Any], columns: Sequence[str]) -> dict[str, Any]:
    return {c: json.dumps(values[c]) if _is_json(c) else values[c] for c in columns}


def _is_json(column: str) -> bool:
    return column in ("local_filter", "transformation", "parameters")


def _placeholder(column: str) -> str:
    return f"CAST(:{column} AS jsonb)" if _is_json(column) else f":{column}"


def _insert_mapping(conn: Connection, change: Change, position: int) -> None:
    columns = list(MAPPING_COLUMNS)
    # Creation stamps a microsecond apart list the mappings in the document's order.
    conn.execute(sa.text(
        f"INSERT INTO crmsync.integration_table_mappings (name, {', '.join(columns)}, "
        f"created_at) VALUES (:name, {', '.join(_placeholder(c) for c in columns)}, "
        "clock_timestamp() + :position * interval '1 microsecond')"),
        {"name": change.mapping, "position": position, **_params(change.values, columns)})


def _update_mapping(conn: Connection, change: Change) -> None:
    columns = [name for name, _, _ in change.differences]
    sets = ", ".join(f"{c} = {_placeholder(c)}" for c in columns)
    if any(c in SCOPE_COLUMNS for c in columns):
        sets += (", local_watermark = NULL, local_snapshot = NULL, local_modified_since = NULL"
                 ", remote_modified_since = NULL, delta_link = NULL")
    conn.execute(sa.text(
        f"UPDATE crmsync.integration_table_mappings SET {sets}, updated_at = now() "
        "WHERE name = :name"), {"name": change.mapping, **_params(change.values, columns)})


def _dependency(conn: Connection, change: Change) -> None:
    statement = (
        "INSERT INTO crmsync.integration_table_mapping_dependencies (mapping_name, depends_on) "
        "VALUES (:n, :p)" if change.op == "+" else
        "DELETE FROM crmsync.integration_table_mapping_dependencies "
        "WHERE mapping_name = :n AND depends_on = :p")
    conn.execute(sa.text(statement), {"n": change.mapping, "p": change.values["depends_on"]})


def _field(conn: Connection, change: Change) -> None:
    columns = list(FIELD_COLUMNS)
    if change.op == "-":
        conn.execute(sa.text("DELETE FROM crmsync.integration_field_mappings WHERE id = :id"),
                     {"id": change.row_id})
    elif change.op == "~":
        changed = [name for name, _, _ in change.differences]
        conn.execute(sa.text(
            "UPDATE crmsync.integration_field_mappings SET "
            + ", ".join(f"{c} = {_placeholder(c)}" for c in changed) + " WHERE id = :id"),
            {"id": change.row_id, **_params(change.values, changed)})
    else:
        conn.execute(sa.text(
            f"INSERT INTO crmsync.integration_field_mappings (mapping_name, "
            f"{', '.join(columns)}) VALUES (:mapping, "
            f"{', '.join(_placeholder(c) for c in columns)})"),
            {"mapping": change.mapping, **_params(change.values, columns)})


def _entry(conn: Connection, change: Change) -> None:
    """Job queue entries of the document's mappings: the schedule columns only; status,
    attempts and the next run stay the worker's."""
    columns = list(ENTRY_COLUMNS)
    if change.op == "-":
        conn.execute(sa.text("DELETE FROM crmsync.job_queue_entries WHERE id = :id"),
                     {"id": change.row_id})
    elif change.op == "~":
        changed = [name for name, _, _ in change.differences]
        conn.execute(sa.text(
            "UPDATE crmsync.job_queue_entries SET "
            + ", ".join(f"{c} = {_placeholder(c)}" for c in changed)
            + ", updated_at = now() WHERE id = :id"),
            {"id": change.row_id, **_params(change.values, changed)})
    else:
        conn.execute(sa.text(
            f"INSERT INTO crmsync.job_queue_entries (job_kind, mapping_name, "
            f"{', '.join(columns)}) VALUES ('sync_mapping', :mapping, "
            f"{', '.join(_placeholder(c) for c in columns)})"),
            {"mapping": change.mapping, **_params(change.values, columns)})


def clear_local_marks(conn: Connection, local_table: str) -> None:
    """Forget how far the local→remote passes of every mapping of ``local_table`` came
    (changes made before the capture triggers existed are unknown: the next pass scans)."""
    conn.execute(sa.text(
        "UPDATE crmsync.integration_table_mappings SET local_watermark = NULL, "
        "local_snapshot = NULL WHERE local_table = :t"), {"t": local_table})


def other_trigger_mappings(conn: Connection, local_table: str, name: str) -> int:
    """How many other enabled trigger-mode mappings read ``local_table``."""
    return int(conn.scalar(sa.text(
        "SELECT count(*) FROM crmsync.integration_table_mappings WHERE local_table = :t "
        "AND name <> :n AND enabled AND change_capture = 'trigger'"),
        {"t": local_table, "n": name}) or 0)


def set_enabled(conn: Connection, name: str, enabled: bool) -> None:
    conn.execute(sa.text(
        "UPDATE crmsync.integration_table_mappings SET enabled = :e WHERE name = :n"),
        {"e": enabled, "n": name})


def local_pass_marks(conn: Connection, name: str, trigger_count: sa.TextClause,
                     params: dict[str, Any]) -> Any:
    """The local→remote pass's marks (last snapshot, an interrupted pass's snapshot and last
    key done) with ``trigger_count`` and the database's current snapshot, in one query."""
    return conn.execute(sa.text(
        f"SELECT ({trigger_count.text}) AS triggers, local_snapshot, local_pass_snapshot, "
        "local_pass_done_key, CAST(pg_current_snapshot() AS text) "
        "FROM crmsync.integration_table_mappings WHERE name = :n"),
        {"n": name, **params}).one()


def enabled_names(conn: Connection) -> list[str]:
    return list(conn.scalars(sa.text(
        "SELECT name FROM crmsync.integration_table_mappings WHERE enabled "
        "ORDER BY created_at, name")))


def same_entity_set(conn: Connection, mapping: TableMapping) -> list[Any]:
    """The other enabled mappings that create records, of the same entity set and
    connection as ``mapping``."""
    return list(conn.execute(sa.text(
        "SELECT name, local_table, remote_filter, local_filter, direction "
        "FROM crmsync.integration_table_mappings WHERE enabled AND name <> :n "
        "AND NOT sync_only_coupled AND connection_name = :c AND entity_set = :e "
        "ORDER BY name"),
        {"n": mapping.name, "c": mapping.connection_name,
         "e": mapping.entity_set}).mappings())


def summaries(engine: Engine) -> list[Any]:
    """Every mapping with its dependencies and number of couplings (``mappings list``)."""
    with translate_errors(), engine.connect() as conn:
        return list(conn.execute(sa.text(
            """
            SELECT m.name, m.enabled, m.local_table, m.entity_set, m.direction,
                   m.sync_only_coupled, m.triggers_installed,
                   (SELECT string_agg(depends_on, ',' ORDER BY depends_on)
                      FROM crmsync.integration_table_mapping_dependencies d
                     WHERE d.mapping_name = m.name) AS depends_on,
                   (SELECT count(*) FROM crmsync.couplings c WHERE c.mapping_name = m.name)
                       AS couplings
              FROM crmsync.integration_table_mappings m ORDER BY m.created_at, m.name
            """)).mappings())
