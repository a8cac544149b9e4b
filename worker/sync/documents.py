"""The mapping document: integration table mappings, their field mappings, dependencies and
(optionally) job queue entries as one TOML file (``crmsync mappings export`` / ``apply``).

Keys are the column names of the configuration tables (docs/mappings.md lists them). This
module is pure: it reads a parsed TOML document into normalized ``MappingDoc`` values
(every column present, defaults filled in, values in the types the database returns), checks
its structure naming the path of each fault (``mappings.CUSTOMER.fields[3].remote_property``),
and renders normalized values back as TOML, leaving out what equals the default. Because both
directions go through the same normalization, export followed by apply finds no change."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from decimal import Decimal
from typing import Any

from worker.sync import tomlwrite

FORMAT = 1
DIRECTIONS = ("to_integration", "from_integration", "bidirectional")
UPDATE_CONFLICTS = ("none", "send_update_to_integration", "get_update_from_integration")
DELETION_CONFLICTS = ("none", "restore_records", "remove_coupling", "propagate_delete")
APPLY_ON = ("always", "create")
REQUIRED = object()


class DocumentInvalid(Exception):
    """The document breaks one or more rules; ``problems`` are ``(path, message)`` pairs."""

    def __init__(self, problems: Sequence[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{p}: {m}" for p, m in problems))
        self.problems = list(problems)


@dataclass(frozen=True)
class Column:
    """One key of a table in the document: its kind, default and allowed values."""

    kind: str  # text, bool, int, array, object, interval, time, datetime, weekdays, constant
    default: Any = None
    choices: tuple[str, ...] = ()
    always: bool = False  # written by export even when it equals the default


MAPPING_COLUMNS: dict[str, Column] = {
    "description": Column("text", ""),
    "enabled": Column("bool", True, always=True),
    "local_table": Column("text", REQUIRED),
    "local_key": Column("text", "id", always=True),
    "business_key_column": Column("text"),
    "change_capture": Column("text", "trigger", ("trigger", "modified_at")),
    "local_modified_column": Column("text"),
    "connection_name": Column("text", "crm", always=True),
    "entity_set": Column("text", REQUIRED),
    "remote_key": Column("text", REQUIRED),
    "remote_modified_on": Column("text", "modifiedon", always=True),
    "direction": Column("text", "bidirectional", DIRECTIONS, always=True),
    "local_filter": Column("array", ()),
    "remote_filter": Column("text"),
    "sync_only_coupled": Column("bool", False, always=True),
    "update_conflict_resolution": Column("text", "none", UPDATE_CONFLICTS, always=True),
    "deletion_conflict_resolution": Column("text", "none", DELETION_CONFLICTS, always=True),
    "remote_probe_interval": Column("interval"),
}
FIELD_COLUMNS: dict[str, Column] = {
    "local_column": Column("text"),
    "remote_property": Column("text"),
    "direction": Column("text", "bidirectional", DIRECTIONS),
    "constant_value": Column("constant"),
    "transformation": Column("object", {}),
    "lookup_mapping": Column("text"),
    "lookup_local_column": Column("text"),
    "remote_bind_property": Column("text"),
    "remote_read_property": Column("text"),
    "clear_value_on_failed_sync": Column("bool", False),
    "not_null": Column("bool", False),
    "enabled": Column("bool", True),
    "use_for_matching": Column("bool", False),
    "case_sensitive_matching": Column("bool", False),
    "match_priority": Column("int", 0),
    "apply_on": Column("text", "always", APPLY_ON),
}
ENTRY_COLUMNS: dict[str, Column] = {
    "description": Column("text", ""),
    "parameters": Column("object", {}),
    "recurring": Column("bool", True),
    "run_interval": Column("interval", timedelta(minutes=30), always=True),
    "run_on_weekdays": Column("weekdays", (1, 2, 3, 4, 5, 6, 7)),
    "starting_time": Column("time"),
    "ending_time": Column("time"),
    "time_zone": Column("text", "UTC"),
    "earliest_start_at": Column("datetime"),
    "expires_at": Column("datetime"),
    "max_attempts": Column("int", 10),
    "rerun_delay": Column("interval", timedelta(seconds=30)),
    "inactivity_timeout": Column("interval"),
    "category_code": Column("text"),
    "priority": Column("int", 1000),
    "job_timeout": Column("interval", timedelta(hours=12)),
}


@dataclass(frozen=True)
class MappingDoc:
    """One mapping as the document states it: every column with defaults filled in.
    ``entries`` is None when the document leaves the mapping's job queue entries alone."""

    name: str
    columns: dict[str, Any]
    depends_on: tuple[str, ...] = ()
    fields: tuple[dict[str, Any], ...] = ()
    entries: tuple[dict[str, Any], ...] | None = None


@dataclass
class _Reader:
    """Collects every problem of a document instead of stopping at the first."""

    problems: list[tuple[str, str]] = field(default_factory=list)

    def fail(self, path: str, message: str) -> None:
        self.problems.append((path, message))

    def table(self, path: str, raw: Any, columns: Mapping[str, Column],
              extra: Sequence[str] = ()) -> dict[str, Any]:
        if not isinstance(raw, Mapping):
            self.fail(path, f"expected a table, got {_kind_of(raw)}")
            return {}
        for name in raw:
            if name not in columns and name not in extra:
                self.fail(f"{path}.{name}", f"unknown key; known keys: {', '.join(columns)}")
        out: dict[str, Any] = {}
        for name, column in columns.items():
            if name in raw:
                out[name] = self.value(f"{path}.{name}", raw[name], column)
            elif column.default is REQUIRED:
                self.fail(f"{path}.{name}", "is required")
                out[name] = None
            else:
                out[name] = _copy(column.default)
        return out

    def value(self, path: str, raw: Any, column: Column) -> Any:
        try:
            result = _PARSERS[column.kind](raw)
        except (TypeError, ValueError) as exc:
            self.fail(path, str(exc))
            return _copy(column.default) if column.default is not REQUIRED else None
        if column.choices and result not in column.choices:
            self.fail(path, f"{result!r} is not one of {', '.join(column.choices)}")
        return result


def parse(text: str) -> list[MappingDoc]:
    """The mappings of a TOML mapping document, in document order; DocumentInvalid names
    every fault with its path."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise DocumentInvalid([("document", f"not valid TOML: {exc}")]) from exc
    return read(raw)


def read(raw: Mapping[str, Any]) -> list[MappingDoc]:
    reader = _Reader()
    for name in raw:
        if name not in ("format", "mappings"):
            reader.fail(name, "unknown key; the document has format and mappings")
    if raw.get("format", FORMAT) != FORMAT:
        reader.fail("format", f"{raw.get('format')!r} is not a format this crmsync reads "
                              f"({FORMAT})")
    tables = raw.get("mappings", {})
    if not isinstance(tables, Mapping):
        reader.fail("mappings", f"expected a table of mappings, got {_kind_of(tables)}")
        tables = {}
    docs = [_mapping(reader, str(name), body) for name, body in tables.items()]
    _check_consistency(reader, docs)
    if reader.problems:
        raise DocumentInvalid(reader.problems)
    return docs


def _mapping(reader: _Reader, name: str, body: Any) -> MappingDoc:
    path = f"mappings.{name}"
    if not name.strip():
        reader.fail(path, "a mapping name must not be blank")
    columns = reader.table(path, body, MAPPING_COLUMNS, ("depends_on", "fields", "entries"))
    body = body if isinstance(body, Mapping) else {}
    depends = reader.value(f"{path}.depends_on", body.get("depends_on", []),
                           Column("names", ()))
    fields = tuple(reader.table(f"{path}.fields[{n}]", f, FIELD_COLUMNS)
                   for n, f in enumerate(_array(reader, f"{path}.fields", body.get("fields", []))))
    entries = None
    if "entries" in body:
        entries = tuple(reader.table(f"{path}.entries[{n}]", e, ENTRY_COLUMNS)
                        for n, e in enumerate(_array(reader, f"{path}.entries", body["entries"])))
    return MappingDoc(name, columns, tuple(depends), fields, entries)


def _array(reader: _Reader, path: str, raw: Any) -> list[Any]:
    if not isinstance(raw, list):
        reader.fail(path, f"expected an array of tables ([[{path}]]), got {_kind_of(raw)}")
        return []
    return raw


def _check_consistency(reader: _Reader, docs: Sequence[MappingDoc]) -> None:
    """Rules within one mapping that the database would otherwise refuse less clearly."""
    for doc in docs:
        path = f"mappings.{doc.name}"
        c = doc.columns
        if c["change_capture"] == "modified_at" and not c["local_modified_column"]:
            reader.fail(f"{path}.local_modified_column", "change_capture = \"modified_at\" "
                                                         "needs the modified-at column")
        if doc.name in doc.depends_on:
            reader.fail(f"{path}.depends_on", "a mapping cannot depend on itself")
        seen: dict[tuple[str, str], int] = {}
        for n, f in enumerate(doc.fields):
            here = f"{path}.fields[{n}]"
            if not any(p == here or p.startswith(here + ".") for p, _ in reader.problems):
                _check_field(reader, here, f)  # a value already refused would only echo
            for side in ("local_column", "remote_property"):
                if f[side] is not None and (side, f[side]) in seen:
                    reader.fail(f"{path}.fields[{n}].{side}",
                                f"{f[side]!r} is mapped already by fields[{seen[side, f[side]]}]")
                elif f[side] is not None:
                    seen[side, f[side]] = n


def _check_field(reader: _Reader, path: str, f: Mapping[str, Any]) -> None:
    local, remote = f["local_column"], f["remote_property"]
    if local is None and remote is None:
        reader.fail(path, "needs local_column or remote_property (or both)")
    elif (local is None or remote is None) and f["constant_value"] is None:
        reader.fail(f"{path}.constant_value", "a field with one side writes a constant_value "
                                              "to that side; set it")
    elif local is None and f["direction"] != "to_integration":
        reader.fail(f"{path}.direction", "a constant for the CRM side needs "
                                         "direction = \"to_integration\"")
    elif remote is None and f["direction"] != "from_integration":
        reader.fail(f"{path}.direction", "a constant for the local side needs "
                                         "direction = \"from_integration\"")
    if f["lookup_mapping"] is not None and (local is None or remote is None):
        reader.fail(f"{path}.lookup_mapping", "a lookup needs local_column and remote_property")


# -- values ---------------------------------------------------------------------------------
def _text(raw: Any) -> str:
    if not isinstance(raw, str):
        raise TypeError(f"expected a string, got {_kind_of(raw)}")
    return raw


def _bool(raw: Any) -> bool:
    if not isinstance(raw, bool):
        raise TypeError(f"expected true or false, got {_kind_of(raw)}")
    return raw


def _int(raw: Any) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise TypeError(f"expected an integer, got {_kind_of(raw)}")
    return raw


def _array_value(raw: Any) -> list[Any]:
    if not isinstance(raw, list):
        raise TypeError(f"expected an array, got {_kind_of(raw)}")
    return [_plain(v) for v in raw]


def _object(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, Mapping):
        raise TypeError(f"expected a table, got {_kind_of(raw)}")
    return {str(k): _plain(v) for k, v in raw.items()}


def _names(raw: Any) -> list[str]:
    if not isinstance(raw, list) or not all(isinstance(v, str) for v in raw):
        raise TypeError("expected an array of mapping names")
    return list(raw)


def _constant(raw: Any) -> str:
    """The text the database keeps: a string as it is, a number or boolean as JSON."""
    if isinstance(raw, bool):
        return "true" if raw else "false"
    if isinstance(raw, int | float | Decimal | str):
        return str(raw)
    raise TypeError(f"expected a string, number or boolean, got {_kind_of(raw)}")


def _weekdays(raw: Any) -> list[int]:
    if (not isinstance(raw, list) or not raw
            or not all(isinstance(d, int) and not isinstance(d, bool) and 1 <= d <= 7
                       for d in raw)):
        raise ValueError("expected ISO weekdays 1 (Monday) to 7 (Sunday), e.g. [1, 2, 3, 4, 5]")
    return list(raw)


def _time(raw: Any) -> time:
    if isinstance(raw, time):
        return raw
    if isinstance(raw, str):
        try:
            return time.fromisoformat(raw)
        except ValueError:
            pass
    raise ValueError(f"expected a time of day like \"06:00\", got {raw!r}")


def _datetime(raw: Any) -> datetime:
    if isinstance(raw, datetime) and raw.tzinfo is not None:
        return raw
    raise ValueError("expected a date and time with offset, e.g. 2027-01-01T06:00:00Z")


_UNITS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400, "week": 604800}
_INTERVAL_PART = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(second|minute|hour|day|week)s?\s*")
_CLOCK = re.compile(r"^(\d+):(\d{2})(?::(\d{2}(?:\.\d+)?))?$")


def parse_interval(raw: Any) -> timedelta:
    """``"30 minutes"``, ``"1 day 2 hours"``, ``"90 seconds"``, ``"0.5 seconds"`` or
    ``"00:30:00"`` (exact to the microsecond)."""
    if isinstance(raw, str):
        clock = _CLOCK.match(raw.strip())
        if clock:
            return timedelta(hours=int(clock[1]), minutes=int(clock[2]),
                             microseconds=_micro(clock[3] or "0"))
        total, position = 0, 0
        for part in _INTERVAL_PART.finditer(raw):
            if part.start() != position:
                break
            total += _micro(part[1]) * _UNITS[part[2]]
            position = part.end()
        if position == len(raw) and position > 0:
            return timedelta(microseconds=total)
    raise ValueError(f"expected an interval like \"30 minutes\" or \"1 day 2 hours\", "
                     f"got {raw!r}")


def _micro(number: str) -> int:
    """Microseconds in ``number`` seconds, without float rounding."""
    return int(Decimal(number) * 1_000_000)


def format_interval(value: timedelta) -> str:
    micro = (value.days * 86400 + value.seconds) * 1_000_000 + value.microseconds
    parts = []
    for unit in ("day", "hour", "minute"):
        count, micro = divmod(micro, _UNITS[unit] * 1_000_000)
        if count:
            parts.append(f"{count} {unit}{'s' if count != 1 else ''}")
    if micro or not parts:
        whole, fraction = divmod(micro, 1_000_000)
        shown = f"{whole}.{fraction:06d}".rstrip("0").rstrip(".")
        parts.append(f"{shown} second{'s' if shown != '1' else ''}")
    return " ".join(parts)


_PARSERS: dict[str, Callable[[Any], Any]] = {
    "text": _text, "bool": _bool, "int": _int, "array": _array_value, "object": _object,
    "names": _names, "constant": _constant, "weekdays": _weekdays, "time": _time,
    "datetime": _datetime, "interval": parse_interval,
}


def _plain(v: Any) -> Any:
    """A value of a JSON column: TOML's types the way the database returns JSON."""
    if isinstance(v, Mapping):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_plain(x) for x in v]
    if isinstance(v, datetime | time):
        raise TypeError("dates and times are not allowed in a JSON value; write a string")
    return v


def _copy(v: Any) -> Any:
    if isinstance(v, tuple):
        return list(v)
    if isinstance(v, dict):
        return dict(v)
    return v


def _kind_of(raw: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "an array", dict: "a table"}.get(type(raw), type(raw).__name__)


# -- rendering ------------------------------------------------------------------------------
HEADER = (
    "# crmsync mapping document: integration table mappings, field mappings, dependencies\n"
    "# (and job queue entries). Check and apply with: crmsync mappings apply FILE --dry-run\n"
    "# The keys are the columns of the configuration tables; see docs/mappings.md.\n"
)


def render(docs: Sequence[MappingDoc]) -> str:
    """The document as TOML: one table per mapping, ``[[…fields]]`` and ``[[…entries]]``
    after it; keys equal to their default are left out (except a few always shown)."""
    lines = [HEADER.rstrip("\n"), f"format = {FORMAT}"]
    for doc in docs:
        items = _shown(doc.columns, MAPPING_COLUMNS)
        items["depends_on"] = list(doc.depends_on)
        lines += ["", *tomlwrite.table(("mappings", doc.name), items)]
        for f in doc.fields:
            lines += ["", *tomlwrite.table(("mappings", doc.name, "fields"),
                                           _shown(f, FIELD_COLUMNS), array=True)]
        for e in doc.entries or ():
            lines += ["", *tomlwrite.table(("mappings", doc.name, "entries"),
                                           _shown(e, ENTRY_COLUMNS), array=True)]
    return "\n".join(lines) + "\n"


def _shown(values: Mapping[str, Any], columns: Mapping[str, Column]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, column in columns.items():
        v = values.get(name)
        if v is None or (not column.always and _same(v, column.default)):
            continue
        out[name] = format_interval(v) if column.kind == "interval" else (
            v.isoformat(timespec="minutes" if not v.second else "seconds")
            if isinstance(v, time) else v)
    return out


def _same(a: Any, b: Any) -> bool:
    if isinstance(b, tuple):
        b = list(b)
    return bool(a == b)
