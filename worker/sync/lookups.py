"""Lookups through another mapping's couplings (NAV: a Customer's "Currency Code" becomes
the account's transactioncurrencyid). Resolved in bulk, one query per field and chunk."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from worker.errors import ConfigurationError
from worker.sync import couplings as coupling_store
from worker.sync import mappings as mapping_store
from worker.sync.local import LocalTable, Reflections, any_of
from worker.sync.model import FieldMapping, TableMapping

KEPT = 1000  # lookup values kept per field and pass (memory stays flat)


@dataclass(frozen=True)
class Target:
    """The mapping a lookup points at, with its local table."""

    mapping: TableMapping
    table: LocalTable
    column: sa.Column

    @property
    def entity_set(self) -> str:
        return self.mapping.entity_set


class Lookups:
    """Translates lookup values between the sides for the fields of one mapping."""

    def __init__(self, engine: Engine, mapping: TableMapping,
                 tables: Reflections | None = None) -> None:
        self.engine = engine
        self.mapping = mapping
        self.tables = tables
        self._targets: dict[int, Target] | None = None
        self._kept: dict[int, dict[str, str]] = {}  # field id → value → remote id

    @property
    def targets(self) -> dict[int, Target]:
        """The target of each lookup field, loaded at first use (a pass with nothing to
        translate loads none)."""
        if self._targets is None:
            self._targets = {f.id: self._load(f) for f in self.mapping.fields
                             if f.lookup_mapping}
        return self._targets

    def _load(self, f: FieldMapping) -> Target:
        assert f.lookup_mapping is not None
        target = mapping_store.load(self.engine, f.lookup_mapping)
        table = LocalTable(self.engine, target.local_table, target.local_key, target.name,
                           self.tables)
        column_name = f.lookup_local_column or target.local_key
        if column_name not in table.table.c:
            raise ConfigurationError(
                f"mapping {self.mapping.name}: field {f.label}: lookup_local_column "
                f"{column_name!r} is not a column of {target.local_table}")
        return Target(target, table, table.table.c[column_name])

    def target(self, f: FieldMapping) -> Target:
        return self.targets[f.id]

    def to_remote(self, conn: Connection, f: FieldMapping, values: Iterable[object]
                  ) -> dict[str, str]:
        """Local lookup values (e.g. currency codes) → remote ids of their coupled records.

        Two indexed lookups instead of one join: a join through a cast key is at the
        planner's mercy when the couplings table has just grown (stale statistics made it a
        nested loop of seconds per chunk). Values found are kept for the pass (up to
        KEPT per field: a handful of currencies are looked up once, not once per chunk);
        values not found are asked again, as their record may be coupled meanwhile."""
        wanted = sorted({str(v) for v in values if v not in (None, "")})
        if not wanted:
            return {}
        kept = self._kept.setdefault(f.id, {})
        found = {v: kept[v] for v in wanted if v in kept}
        missing = [v for v in wanted if v not in kept]
        if missing:
            fresh = self._query_remote_ids(conn, f, missing)
            found.update(fresh)
            if len(kept) + len(fresh) <= KEPT:
                kept.update(fresh)
        return found

    def _query_remote_ids(self, conn: Connection, f: FieldMapping, wanted: list[str]
                          ) -> dict[str, str]:
        t = self.targets[f.id]
        column = t.column if isinstance(t.column.type, sa.String) else sa.cast(t.column, sa.Text)
        keys = {str(key): str(value) for key, value in conn.execute(
            sa.select(t.table.key, column).where(column == any_of(column, wanted)))}
        remote_ids = coupling_store.coupled_remote_ids(conn, t.mapping.name, list(keys))
        return {keys[local_id]: remote_id for local_id, remote_id in remote_ids.items()}

    def to_local(self, conn: Connection, f: FieldMapping, remote_ids: Iterable[object]
                 ) -> dict[str, object]:
        """Remote ids (``_x_value``) → the local lookup value of their coupled records."""
        wanted = sorted({str(v) for v in remote_ids if v})
        if not wanted:
            return {}
        t = self.targets[f.id]
        by_remote = coupling_store.coupled_local_ids(conn, t.mapping.name, wanted)
        if not by_remote:
            return {}
        values = {str(key): value for key, value in conn.execute(
            sa.select(t.table.key, t.column).where(
                t.table.key.in_([t.table.key_value(k) for k in by_remote.values()])))}
        return {remote_id.lower(): values[local_id] for remote_id, local_id in by_remote.items()
                if local_id in values}


def uncoupled_message(f: FieldMapping, value: object, target: Target) -> str:
    return (f"{f.local_column} {value!r} must be coupled to a record in "
            f"{target.entity_set} (mapping {target.mapping.name})")
