"""The seed's seven default integration table mappings — a mapping document shipped with
crmsync (``worker/sample/defaults.toml``, the format of docs/mappings.md) — and
``setup_defaults``, which writes them into the configuration tables with one recurring job
queue entry each.

The mappings follow NAV's "CRM Setup Defaults" (codeunit 5334) on the sample schema ``erp``:
CURRENCY, SALESPEOPLE, UNITOFMEASURE, CUSTOMER, CONTACTS, RESOURCE-PRODUCT, ITEM-PRODUCT.
Unlike NAV (whose "Synch. Only Coupled Records" defaults to true), every mapping creates
records for uncoupled ones (``sync_only_coupled = false``), as the seed suggests, so that
``crmsync sync --all`` on a fresh install brings both sides together; fields marked
``use_for_matching`` let the engine couple records that already exist on both sides (the
CRM's users and base currency) instead of duplicating them.

``setup_defaults`` only creates what is missing, so it can run again after an upgrade without
touching a user's changes; ``overwrite=True`` restores the defaults (NAV's "Use Default
Synchronization Setup") but keeps couplings, and field mappings keep their ids.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from dataclasses import fields as dataclass_fields
from datetime import timedelta
from importlib import resources
from types import MappingProxyType
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from worker.db.engine import translate_errors
from worker.sync import documents
from worker.sync.documents import MappingDoc

Direction = Literal["to_integration", "from_integration", "bidirectional"]
TO: Direction = "to_integration"
FROM: Direction = "from_integration"
BOTH: Direction = "bidirectional"

# The SALESPEOPLE code rule; worker.sample.data.salesperson_code applies the same one.
SALESPERSON_CODE_RULE: Mapping[str, Any] = MappingProxyType(
    {"before": "@", "case": "upper", "max_length": 20})


@dataclass(frozen=True)
class FieldMappingSpec:
    """One default row of ``crmsync.integration_field_mappings`` (NAV table 5336).

    A field with only ``remote_property`` writes ``constant_value`` there (direction
    ``to_integration``); a lookup (``lookup_mapping``) translates a local code through the
    couplings of the named mapping, whose table it finds by ``lookup_local_column``."""

    local_column: str | None
    remote_property: str | None
    direction: Direction = BOTH
    constant_value: str | None = None
    transformation: Mapping[str, Any] = field(default_factory=dict)
    lookup_mapping: str | None = None
    lookup_local_column: str | None = None
    remote_bind_property: str | None = None
    not_null: bool = False
    use_for_matching: bool = False
    match_priority: int = 0
    clear_value_on_failed_sync: bool = False
    case_sensitive_matching: bool = False

    @property
    def label(self) -> str:
        return f"{self.local_column or '(constant)'} <-> {self.remote_property or '(constant)'}"


@dataclass(frozen=True)
class ScheduleSpec:
    """The recurring job queue entry NAV creates for a mapping (RecreateJobQueueEntry...)."""

    inactivity_timeout: timedelta
    category_code: str | None = None
    max_attempts: int = 10
    rerun_delay: timedelta = timedelta(seconds=30)


@dataclass(frozen=True)
class TableMappingSpec:
    """One default row of ``crmsync.integration_table_mappings`` (NAV table 5335) with its
    dependencies, field mappings and job queue entry."""

    name: str
    local_table: str
    entity_set: str
    remote_key: str
    direction: Direction
    fields: tuple[FieldMappingSpec, ...]
    schedule: ScheduleSpec
    depends_on: tuple[str, ...] = ()
    remote_filter: str | None = None
    sync_only_coupled: bool = False
    # NAV's default for every mapping is None: a record changed on both sides since the last
    # sync fails with an update conflict and waits for a user, instead of one side's change
    # being silently lost. Choosing a winner is a deliberate per-mapping decision.
    update_conflict_resolution: str = "none"
    deletion_conflict_resolution: str = "none"
    local_key: str = "id"
    change_capture: str = "trigger"
    remote_modified_on: str = "modifiedon"
    business_key_column: str | None = None

    @property
    def description(self) -> str:
        return f"{self.name} - Dynamics CRM synchronization job"


# The default mappings are a mapping document shipped with crmsync (docs/mappings.md).
DOCUMENT = "defaults.toml"


def default_document() -> str:
    """The text of the shipped mapping document of the seven defaults."""
    return resources.files("worker.sample").joinpath(DOCUMENT).read_text(encoding="utf-8")


def _field_spec(values: Mapping[str, Any]) -> FieldMappingSpec:
    names = {f.name for f in dataclass_fields(FieldMappingSpec)}
    return FieldMappingSpec(**{k: v for k, v in values.items() if k in names})


def _mapping_spec(doc: MappingDoc) -> TableMappingSpec:
    c = doc.columns
    entry = (doc.entries or ({},))[0]
    schedule = ScheduleSpec(
        inactivity_timeout=entry.get("inactivity_timeout") or timedelta(minutes=720),
        category_code=entry.get("category_code"),
        max_attempts=entry.get("max_attempts", 10),
        rerun_delay=entry.get("rerun_delay", timedelta(seconds=30)))
    return TableMappingSpec(
        doc.name, c["local_table"], c["entity_set"], c["remote_key"], c["direction"],
        fields=tuple(_field_spec(f) for f in doc.fields), schedule=schedule,
        depends_on=doc.depends_on, remote_filter=c["remote_filter"],
        sync_only_coupled=c["sync_only_coupled"],
        update_conflict_resolution=c["update_conflict_resolution"],
        deletion_conflict_resolution=c["deletion_conflict_resolution"],
        local_key=c["local_key"], change_capture=c["change_capture"],
        remote_modified_on=c["remote_modified_on"],
        business_key_column=c["business_key_column"])


DEFAULT_MAPPINGS: tuple[TableMappingSpec, ...] = tuple(
    _mapping_spec(doc) for doc in documents.parse(default_document()))


@dataclass(frozen=True)
class DefaultsSummary:
    """What ``setup_defaults`` created (and, with ``overwrite``, restored)."""

    mappings_created: tuple[str, ...] = ()
    mappings_restored: tuple[str, ...] = ()
    # Mappings named like a default but on other tables: the user's own, left alone.
    mappings_skipped: tuple[str, ...] = ()
    dependencies_created: int = 0
    field_mappings_created: int = 0
    field_mappings_restored: int = 0
    entries_created: tuple[str, ...] = ()
    entries_restored: int = 0

    @property
    def changed(self) -> bool:
        return any((self.mappings_created, self.mappings_restored, self.dependencies_created,
                    self.field_mappings_created, self.field_mappings_restored,
                    self.entries_created, self.entries_restored))


def setup_defaults(
    engine: Engine,
    *,
    interval: timedelta = timedelta(minutes=30),
    connection: str = "crm",
    overwrite: bool = False,
    mappings: Sequence[TableMappingSpec] = DEFAULT_MAPPINGS,
) -> DefaultsSummary:
    """Write the default mappings, their dependencies and field mappings, and one recurring
    ``sync_mapping`` job queue entry per mapping (every ``interval``), in one transaction.

    Without ``overwrite`` only missing rows are created: a mapping, dependency, field
    mapping (one per local column / remote property) or entry that exists is left exactly
    as the user has it. A field mapping or entry the user deleted comes back; to switch one
    off, set ``enabled = false`` or put the entry on hold. With ``overwrite`` the default
    rows are restored to their default values: configuration only, never the high-water
    marks (unless the mapping's scope changed, which then needs a full read), couplings,
    enabled flags or entry statuses; rows the user added are kept unless they occupy a
    default field's column or property."""
    if interval <= timedelta(0):
        raise ValueError("interval must be positive")
    writer = _Writer(interval=interval, connection=connection, overwrite=overwrite)
    with translate_errors(), engine.begin() as conn:
        # Two concurrent runs would each find a row missing and both create it.
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext('crmsync.setup_defaults'))"))
        for position, spec in enumerate(mappings):
            writer.mapping(conn, spec, position)
        for spec in mappings:
            writer.dependencies(conn, spec)
        for spec in mappings:
            for f in spec.fields:
                writer.field_mapping(conn, spec.name, f)
        for position, spec in enumerate(mappings):
            writer.entry(conn, spec, position)
    return writer.summary()


_MAPPING_COLUMNS = (
    "description", "local_table", "local_key", "change_capture", "connection_name",
    "entity_set", "remote_key", "remote_modified_on", "direction", "remote_filter",
    "sync_only_coupled", "update_conflict_resolution", "deletion_conflict_resolution",
    "business_key_column",
)
# Restoring any of these changes which records a pass reads, so the restored mapping's
# high-water marks are cleared: its next run reads every record (NAV's full sync).
_SCOPE_COLUMNS = ("local_table", "entity_set", "connection_name", "direction", "local_filter",
                  "remote_filter", "sync_only_coupled", "change_capture")
_FIELD_COLUMNS = (
    "local_column", "remote_property", "direction", "constant_value", "transformation",
    "lookup_mapping", "lookup_local_column", "remote_bind_property", "not_null",
    "use_for_matching", "match_priority", "clear_value_on_failed_sync",
    "case_sensitive_matching",
)


def _mapping_values(spec: TableMappingSpec, connection: str) -> dict[str, Any]:
    values = {c: getattr(spec, c) for c in _MAPPING_COLUMNS if c != "connection_name"}
    values["connection_name"] = connection
    return values


def _field_values(f: FieldMappingSpec) -> dict[str, Any]:
    values = {c: getattr(f, c, None) for c in _FIELD_COLUMNS}
    values["transformation"] = dict(f.transformation)
    return values


class _Writer:
    """The statements of one ``setup_defaults`` run, with what they created or restored."""

    def __init__(self, *, interval: timedelta, connection: str, overwrite: bool) -> None:
        self.interval = interval
        self.connection = connection
        self.overwrite = overwrite
        self.created: list[str] = []
        self.restored: list[str] = []
        self.foreign: set[str] = set()
        self.dependencies_created = 0
        self.fields_created = 0
        self.fields_restored = 0
        self.entries_created: list[str] = []
        self.entries_restored = 0

    def summary(self) -> DefaultsSummary:
        return DefaultsSummary(
            mappings_created=tuple(self.created), mappings_restored=tuple(self.restored),
            mappings_skipped=tuple(sorted(self.foreign)),
            dependencies_created=self.dependencies_created,
            field_mappings_created=self.fields_created,
            field_mappings_restored=self.fields_restored,
            entries_created=tuple(self.entries_created), entries_restored=self.entries_restored)

    def mapping(self, conn: Connection, spec: TableMappingSpec, position: int) -> None:
        values = _mapping_values(spec, self.connection)
        columns = ", ".join(("name", *values))
        params = ", ".join(f":{c}" for c in ("name", *values))
        restored = (*values, "local_filter", "local_modified_column")
        scope = (f"({', '.join(f'm.{c}' for c in _SCOPE_COLUMNS)}) IS DISTINCT FROM "
                 f"({', '.join(f'EXCLUDED.{c}' for c in _SCOPE_COLUMNS)})")
        marks = ", ".join(f"{c} = CASE WHEN {scope} THEN NULL ELSE m.{c} END"
                          for c in ("local_watermark", "local_modified_since",
                                    "remote_modified_since", "delta_link"))
        if self.overwrite:
            # Restore what differs, unless the mapping of that name is on other tables: that
            # one is the user's own.
            condition = (
                f"({', '.join(f'm.{c}' for c in restored)}) IS DISTINCT FROM "
                f"({', '.join(f'EXCLUDED.{c}' for c in restored)}) "
                "AND coalesce(m.local_table, EXCLUDED.local_table) = EXCLUDED.local_table "
                "AND coalesce(m.entity_set, EXCLUDED.entity_set) = EXCLUDED.entity_set")
        else:
            # Only a mapping that has a name and nothing else (made for the job queue alone)
            # is completed; a configured one is the user's to change.
            condition = "m.local_table IS NULL AND m.entity_set IS NULL"
        # Creation stamps a microsecond apart list the mappings in the seed's order.
        statement = (
            f"INSERT INTO crmsync.integration_table_mappings AS m ({columns}, created_at) "
            f"VALUES ({params}, now() + :position * interval '1 microsecond') "
            "ON CONFLICT (name) DO UPDATE SET "
            + ", ".join(f"{c} = EXCLUDED.{c}" for c in restored)
            + f", {marks}, updated_at = now() WHERE {condition} RETURNING name, xmax = 0")
        row = conn.execute(sa.text(statement),
                           {"name": spec.name, "position": position, **values}).first()
        if row is not None:
            (self.created if row[1] else self.restored).append(spec.name)
        if not self._is_default(conn, spec):
            self.foreign.add(spec.name)

    def _is_default(self, conn: Connection, spec: TableMappingSpec) -> bool:
        """Whether the mapping of that name is this default (same tables on both sides),
        rather than a mapping of the user's own that happens to have the name."""
        found = conn.execute(sa.text(
            "SELECT local_table, entity_set FROM crmsync.integration_table_mappings "
            "WHERE name = :name"), {"name": spec.name}).first()
        return found is not None and tuple(found) == (spec.local_table, spec.entity_set)

    def dependencies(self, conn: Connection, spec: TableMappingSpec) -> None:
        if spec.name in self.foreign:
            return
        for parent in spec.depends_on:
            self.dependencies_created += conn.execute(sa.text(
                "INSERT INTO crmsync.integration_table_mapping_dependencies "
                "(mapping_name, depends_on) VALUES (:name, :parent) ON CONFLICT DO NOTHING"),
                {"name": spec.name, "parent": parent}).rowcount

    def field_mapping(self, conn: Connection, mapping: str, f: FieldMappingSpec) -> None:
        if mapping in self.foreign:
            return
        values = _field_values(f)
        if self.overwrite:
            existing = self._claim_field(conn, mapping, f)
            if existing is not None:
                self._restore_field(conn, existing, values)
                return
        columns = ", ".join(("mapping_name", *values))
        params = ", ".join(
            "CAST(:transformation AS jsonb)" if c == "transformation" else f":{c}"
            for c in ("mapping_name", *values))
        # No conflict target: a row holding this local column or this remote property (either
        # unique index) means the field is there already, perhaps changed by the user.
        self.fields_created += conn.execute(sa.text(
            f"INSERT INTO crmsync.integration_field_mappings ({columns}) VALUES ({params}) "
            "ON CONFLICT DO NOTHING"),
            {"mapping_name": mapping, **values,
             "transformation": json.dumps(values["transformation"])}).rowcount

    def _claim_field(self, conn: Connection, mapping: str,
                     f: FieldMappingSpec) -> Mapping[str, Any] | None:
        """The row to restore the default field into (found by its local column, or by its
        remote property for a constant), after removing rows that hold the default's
        column or property otherwise. Restoring in place keeps the id that couplings'
        snapshots of synced values refer to."""
        if f.local_column is not None:
            own = "local_column = :local_column"
        else:
            own = "local_column IS NULL AND remote_property = :remote_property"
        params = {"mapping": mapping, "local_column": f.local_column,
                  "remote_property": f.remote_property}
        row = conn.execute(sa.text(
            "SELECT * FROM crmsync.integration_field_mappings "
            f"WHERE mapping_name = :mapping AND {own}"), params).mappings().first()
        found = dict(row) if row is not None else None
        clashes = [c for c, v in (("local_column", f.local_column),
                                  ("remote_property", f.remote_property)) if v is not None]
        conn.execute(sa.text(
            "DELETE FROM crmsync.integration_field_mappings WHERE mapping_name = :mapping "
            "AND id <> :keep AND (" + " OR ".join(f"{c} = :{c}" for c in clashes) + ")"),
            {**params, "keep": found["id"] if found else -1})
        return found

    def _restore_field(self, conn: Connection, row: Mapping[str, Any],
                       values: Mapping[str, Any]) -> None:
        if all(row[c] == v for c, v in values.items()):
            return
        assignments = ", ".join(
            f"{c} = CAST(:{c} AS jsonb)" if c == "transformation" else f"{c} = :{c}"
            for c in values)
        conn.execute(sa.text(
            f"UPDATE crmsync.integration_field_mappings SET {assignments} WHERE id = :id"),
            {**values, "transformation": json.dumps(values["transformation"]), "id": row["id"]})
        self.fields_restored += 1

    def entry(self, conn: Connection, spec: TableMappingSpec, position: int) -> None:
        if spec.name in self.foreign:
            return
        s = spec.schedule
        values = {
            "description": spec.description, "mapping": spec.name, "interval": self.interval,
            "max_attempts": s.max_attempts, "rerun_delay": s.rerun_delay,
            "inactivity_timeout": s.inactivity_timeout, "category": s.category_code,
        }
        new_id = conn.scalar(sa.text(
            """
            INSERT INTO crmsync.job_queue_entries
                   (description, job_kind, mapping_name, recurring, run_interval, max_attempts,
                    rerun_delay, inactivity_timeout, category_code)
            SELECT :description, 'sync_mapping', :mapping, true, CAST(:interval AS interval),
                   :max_attempts, CAST(:rerun_delay AS interval),
                   CAST(:inactivity_timeout AS interval), CAST(:category AS text)
             WHERE NOT EXISTS (SELECT 1 FROM crmsync.job_queue_entries
                                WHERE job_kind = 'sync_mapping' AND mapping_name = :mapping)
            RETURNING id
            """), values)
        if new_id is not None:
            self.entries_created.append(spec.name)
        elif self.overwrite:
            # The schedule only: status, attempts and the next run stay as they are.
            self.entries_restored += conn.execute(sa.text(
                """
                UPDATE crmsync.job_queue_entries
                   SET description = :description, recurring = true,
                       run_interval = CAST(:interval AS interval), max_attempts = :max_attempts,
                       rerun_delay = CAST(:rerun_delay AS interval),
                       inactivity_timeout = CAST(:inactivity_timeout AS interval),
                       category_code = CAST(:category AS text),
                       run_on_weekdays = '{1,2,3,4,5,6,7}', starting_time = NULL,
                       ending_time = NULL
                 WHERE job_kind = 'sync_mapping' AND mapping_name = :mapping
                   AND (description, recurring, run_interval, max_attempts, rerun_delay,
                        inactivity_timeout, category_code, run_on_weekdays, starting_time,
                        ending_time)
                       IS DISTINCT FROM
                       (CAST(:description AS text), true, CAST(:interval AS interval),
                        CAST(:max_attempts AS integer), CAST(:rerun_delay AS interval),
                        CAST(:inactivity_timeout AS interval), CAST(:category AS text),
                        '{1,2,3,4,5,6,7}'::smallint[], NULL::time, NULL::time)
                """), values).rowcount
