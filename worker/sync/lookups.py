"""Lookups through another mapping's couplings (NAV: a Customer's "Currency Code" becomes
the account's transactioncurrencyid). Resolved in bulk, one query per field and chunk."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from worker.errors import ConfigurationError
from worker.sync import mappings as mapping_store
from worker.sync.local import LocalTable
from worker.sync.model import FieldMapping, TableMapping


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

    def __init__(self, engine: Engine, mapping: TableMapping) -> None:
        self.mapping = mapping
        self.targets: dict[int, Target] = {}
        for f in mapping.fields:
            if not f.lookup_mapping:
                continue
            target = mapping_store.load(engine, f.lookup_mapping)
            table = LocalTable(engine, target.local_table, target.local_key, target.name)
            column_name = f.lookup_local_column or target.local_key
            if column_name not in table.table.c:
                raise ConfigurationError(
                    f"mapping {mapping.name}: field {f.label}: lookup_local_column "
                    f"{column_name!r} is not a column of {target.local_table}")
            self.targets[f.id] = Target(target, table, table.table.c[column_name])

    def target(self, f: FieldMapping) -> Target:
        return self.targets[f.id]

    def to_remote(self, conn: Connection, f: FieldMapping, values: Iterable[object]
                  ) -> dict[str, str]:
        """Local lookup values (e.g. currency codes) → remote ids of their coupled records."""
        wanted = sorted({str(v) for v in values if v not in (None, "")})
        if not wanted:
            return {}
        t = self.targets[f.id]
        rows = conn.execute(
            sa.select(sa.cast(t.column, sa.Text), sa.column("remote_id"))
            .select_from(t.table.table.join(
                sa.table("couplings", sa.column("local_id"), sa.column("remote_id"),
                         sa.column("mapping_name"), sa.column("state"), schema="crmsync"),
                sa.and_(sa.column("local_id") == sa.cast(t.table.key, sa.Text),
                        sa.column("mapping_name") == t.mapping.name,
                        sa.column("state") == "coupled")))
            .where(sa.cast(t.column, sa.Text).in_(wanted)))
        return {value: remote_id for value, remote_id in rows}

    def to_local(self, conn: Connection, f: FieldMapping, remote_ids: Iterable[object]
                 ) -> dict[str, object]:
        """Remote ids (``_x_value``) → the local lookup value of their coupled records."""
        wanted = sorted({str(v).lower() for v in remote_ids if v})
        if not wanted:
            return {}
        t = self.targets[f.id]
        couplings = sa.table("couplings", sa.column("local_id"), sa.column("remote_id"),
                             sa.column("mapping_name"), sa.column("state"), schema="crmsync")
        rows = conn.execute(
            sa.select(couplings.c.remote_id, t.column)
            .select_from(couplings.join(
                t.table.table, couplings.c.local_id == sa.cast(t.table.key, sa.Text)))
            .where(couplings.c.mapping_name == t.mapping.name,
                   couplings.c.state == "coupled",
                   sa.func.lower(couplings.c.remote_id).in_(wanted)))
        return {str(remote_id).lower(): value for remote_id, value in rows}


def uncoupled_message(f: FieldMapping, value: object, target: Target) -> str:
    return (f"{f.local_column} {value!r} must be coupled to a record in "
            f"{target.entity_set} (mapping {target.mapping.name})")
