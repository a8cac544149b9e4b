"""Which local column types go with which remote EDM types, for ``crmsync check``.

Columns and properties are sorted into kinds (text, integer, number, boolean, date, datetime,
time, uuid, binary, other); a field is a configuration error when a value of its source kind
can never be held by its destination kind (a text column sent to a number property, a bytea
column sent to a text property, a text property read into a date column). Ranges and
precisions are not judged here: a value out of range fails its record, never the mapping.
"""

from __future__ import annotations

import sqlalchemy as sa

from worker.sync.metadata import PropertyInfo

_EDM_KINDS = {
    "Edm.String": "text", "Edm.Boolean": "boolean", "Edm.Guid": "uuid",
    "Edm.Byte": "integer", "Edm.SByte": "integer", "Edm.Int16": "integer",
    "Edm.Int32": "integer", "Edm.Int64": "integer", "Edm.Decimal": "number",
    "Edm.Double": "number", "Edm.Single": "number", "Edm.Date": "date",
    "Edm.DateTimeOffset": "datetime", "Edm.TimeOfDay": "time", "Edm.Binary": "binary",
}

# source kind -> destination kinds that can hold every value of it
_TO_REMOTE = {
    "text": {"text", "uuid"},
    "integer": {"integer", "number", "text"},
    "number": {"number", "integer", "text"},
    "boolean": {"boolean"},
    "date": {"date", "datetime", "text"},
    "datetime": {"datetime", "date", "text"},
    "time": {"time", "text"},
    "uuid": {"uuid", "text"},
    "binary": {"binary"},
}
_TO_LOCAL = {
    "text": {"text"},
    "integer": {"integer", "number", "text"},
    "number": {"number", "text"},
    "boolean": {"boolean", "text"},
    "date": {"date", "datetime", "text"},
    "datetime": {"datetime", "date", "text"},
    "time": {"time", "text"},
    "uuid": {"uuid", "text"},
    "binary": {"binary"},
}


def column_kind(column: sa.Column) -> str:
    """The kind of a reflected local column."""
    kind = column.type
    checks: tuple[tuple[type | tuple[type, ...], str], ...] = (
        (sa.Boolean, "boolean"), (sa.Integer, "integer"), (sa.Numeric, "number"),
        (sa.DateTime, "datetime"), (sa.Date, "date"), (sa.Time, "time"),
        (sa.Uuid, "uuid"), (sa.LargeBinary, "binary"), ((sa.String, sa.Enum), "text"),
    )
    for types, name in checks:
        if isinstance(kind, types):
            return name
    return "other"


def edm_kind(prop: PropertyInfo) -> str:
    return _EDM_KINDS.get(prop.type, "other")


def to_remote_problem(column: sa.Column, prop: PropertyInfo) -> str | None:
    """Why values of ``column`` cannot be sent to ``prop``, or None."""
    source, destination = column_kind(column), edm_kind(prop)
    if destination == "other" or destination in _TO_REMOTE.get(source, set()):
        return None
    return (f"local column {column.name} ({_describe(column)}) cannot be sent to "
            f"{prop.name} ({prop.type})")


def to_local_problem(prop: PropertyInfo, column: sa.Column) -> str | None:
    """Why values of ``prop`` cannot be stored in ``column``, or None."""
    source, destination = edm_kind(prop), column_kind(column)
    if source == "other" or destination == "other" or destination in _TO_LOCAL[source]:
        return None
    return (f"{prop.name} ({prop.type}) cannot be stored in local column {column.name} "
            f"({_describe(column)})")


def lookup_problem(column: sa.Column, target: sa.Column, target_table: str,
                   reads_back: bool) -> str | None:
    """Why a lookup's local column cannot hold the referenced column's values (``reads_back``:
    the field runs remote→local, so the referenced values are written into ``column``)."""
    source, referenced = column_kind(column), column_kind(target)
    if source != referenced and source != "text":
        return (f"local column {column.name} ({_describe(column)}) does not match "
                f"{target_table}.{target.name} ({_describe(target)}) that it looks up")
    length, target_length = _length(column), _length(target)
    if reads_back and source == "text" and length is not None and (
            target_length is None or target_length > length):
        return (f"local column {column.name} ({_describe(column)}) is shorter than "
                f"{target_table}.{target.name} ({_describe(target)}) that it looks up")
    return None


def _length(column: sa.Column) -> int | None:
    length = getattr(column.type, "length", None)
    return length if isinstance(length, int) else None


def _describe(column: sa.Column) -> str:
    try:
        return str(column.type).lower()
    except Exception:  # a type without a generic name
        return type(column.type).__name__.lower()
