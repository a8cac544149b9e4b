"""The values a record maps to on the other side, as both a pass's read step and a side's
writer need them: a CRM record's local values (lookups translated back, converted to the
columns' types), a CRM property's value as read, records by their key."""

from __future__ import annotations

from typing import Any

from worker.sync.context import PassContext, RecordFailed
from worker.sync.model import Direction, FieldMapping
from worker.sync.transfer import FieldValue, constant, transform
from worker.sync.values import to_local as to_local_value
from worker.sync.values import value_failure

FROM = Direction.FROM_INTEGRATION

def remote_value(record: dict[str, Any], f: FieldMapping) -> Any:
    name = f.remote_read_name
    value = record.get(name) if name else None
    if f.lookup_mapping and isinstance(value, str):
        return value.lower()
    return value


def by_key(px: PassContext, records: Any) -> dict[str, dict[str, Any]]:
    return {str(r[px.mapping.remote_key]).lower(): r for r in records}


def local_values(px: PassContext, fields: list[FieldMapping], record: dict[str, Any],
                 reverse: dict[int, dict[str, object]]) -> list[FieldValue]:
    """The local values a remote record maps to (lookups translated back, text cut to the
    local column's length)."""
    out = []
    for f in fields:
        assert f.local_column is not None
        try:
            out.append(_local_value(px, f, record, reverse))
        except (ValueError, TypeError, ArithmeticError) as exc:
            raise RecordFailed(value_failure(
                px.mapping.entity_set, record.get(px.mapping.remote_key), f, exc)) from None
    return out


def _local_value(px: PassContext, f: FieldMapping, record: dict[str, Any],
                 reverse: dict[int, dict[str, object]]) -> FieldValue:
    """One field's local value: transformed, then converted to the column's type (a value
    the column cannot hold raises ValueRefused instead of failing the chunk's write)."""
    assert f.local_column is not None
    column = px.local.table.c[f.local_column]
    if f.remote_property is None:
        value = constant(f)
        return FieldValue(f, value, to_local_value(value, column))
    source = record.get(f.remote_read_name or f.remote_property)
    if f.lookup_mapping:
        source = source.lower() if isinstance(source, str) else source
        wanted = reverse[f.id].get(source) if source else None
        if source and wanted is None and not f.clear_value_on_failed_sync:
            target = px.lookups.target(f)
            raise RecordFailed(
                f"{f.remote_property} {source} must be coupled to a record in "
                f"{target.mapping.local_table} (mapping {target.mapping.name})",
                transient=True)
        return FieldValue(f, source, wanted)
    wanted = transform(f, source, FROM, px.local.max_length(f.local_column))
    return FieldValue(f, source, to_local_value(wanted, column))
