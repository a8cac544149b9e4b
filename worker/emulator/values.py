"""Conversion between the JSON of the Web API and the values the store keeps.

The store keeps Python values (``str``, ``int``, ``Decimal``, ``bool``, aware ``datetime``,
``date``, lower-case GUID strings, ``None``); this module turns them into JSON and back.
Request bodies are validated here against the schema, the way Dataverse validates them:
unknown properties, wrong types, over-long strings and numbers a property cannot hold are
refused before anything is written (never truncated or rounded)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from worker.emulator import errors
from worker.emulator.literals import (
    format_date,
    format_datetime,
    normalize_guid,
    parse_date,
    parse_datetime,
)
from worker.emulator.numbers import DoesNotFit, check_decimal, check_integer
from worker.emulator.paths import EntityRef, parse_entity_ref
from worker.emulator.schema import LOOKUP_TARGET, EdmType, EntitySet, Property

BIND_SUFFIX = "@odata.bind"


@dataclass
class Changes:
    """A validated request body: column values, and lookups to (re)point or clear
    (``binds``: lookup attribute -> (target set, reference or None))."""

    values: dict[str, Any] = field(default_factory=dict)
    binds: dict[str, tuple[str, EntityRef | None]] = field(default_factory=dict)
    key: str | None = None


def parse_body(entity_set: EntitySet, body: Any) -> Changes:
    """Validate a create/update body; raise ``ODataError`` as Dataverse would."""
    if not isinstance(body, dict):
        raise errors.bad_payload("The request body must be a JSON object.")
    changes = Changes()
    for name, raw in body.items():
        if name.endswith(BIND_SUFFIX):
            _parse_bind(entity_set, name[: -len(BIND_SUFFIX)], raw, changes)
        elif "@" in name:
            continue  # instance annotations a client echoes back (@odata.etag) are ignored
        elif name == entity_set.key:
            key = normalize_guid(raw) if isinstance(raw, str) else None
            if key is None:
                raise errors.bad_payload(f"Cannot convert the literal '{_shown(raw)}' to the "
                                         f"expected type 'Edm.Guid' of property '{name}'.")
            changes.key = key
        else:
            prop = entity_set.properties.get(name)
            if prop is None:
                raise errors.unknown_property(name, entity_set.entity_type)
            if not prop.writable:
                raise errors.bad_payload(
                    f"The property '{name}' of '{entity_set.entity_type}' is read-only.")
            changes.values[name] = coerce(entity_set, prop, raw)
    return changes


def _parse_bind(entity_set: EntitySet, nav_name: str, raw: Any, changes: Changes) -> None:
    target = entity_set.navigation.get(nav_name)
    if target is None:
        raise errors.bad_payload(
            f"An undeclared property '{nav_name}' which only has property annotations in the "
            "payload but no property value was found in the payload.")
    lookup, target_set = target
    if raw is None:
        changes.binds[lookup.attribute] = (target_set, None)
        return
    ref = parse_entity_ref(raw) if isinstance(raw, str) else None
    if ref is None or ref.set_name != target_set:
        raise errors.bad_payload(
            f"The value '{_shown(raw)}' of {nav_name}@odata.bind is not a reference to "
            f"{target_set}: expected /{target_set}(<id>).")
    changes.binds[lookup.attribute] = (target_set, ref)


def coerce(entity_set: EntitySet, prop: Property, raw: Any) -> Any:
    """The stored value for ``raw`` given as ``prop`` in a JSON body."""
    if raw is None:
        return None
    try:
        value = _convert(entity_set, prop, raw)
    except DoesNotFit as exc:
        raise errors.bad_payload(str(exc)) from None
    if value is None:
        raise errors.bad_payload(f"Cannot convert the literal '{_shown(raw)}' to the expected "
                                 f"type '{prop.type.value}' of property '{prop.name}'.")
    return value


def _convert(entity_set: EntitySet, prop: Property, raw: Any) -> Any:
    """The stored value, or None when ``raw`` is not of the property's type."""
    kind = prop.type
    number = isinstance(raw, int | Decimal) and not isinstance(raw, bool)
    if kind is EdmType.STRING and isinstance(raw, str):
        return _string(entity_set, prop, raw)
    if kind is EdmType.BOOLEAN and isinstance(raw, bool):
        return raw
    if kind in (EdmType.INT32, EdmType.INT64) and number:
        return check_integer(prop, raw)
    if kind in (EdmType.DECIMAL, EdmType.DOUBLE) and number:
        return check_decimal(prop, raw)
    if kind is EdmType.GUID and isinstance(raw, str) and normalize_guid(raw):
        return raw.lower()
    if kind is EdmType.DATETIME and isinstance(raw, str):
        try:
            value = parse_datetime(raw)
        except ValueError:
            return None
        return value if entity_set.keeps_microseconds else value.replace(microsecond=0)
    if kind is EdmType.DATE and isinstance(raw, str):
        try:
            return parse_date(raw)
        except ValueError:
            return None
    return None


def _string(entity_set: EntitySet, prop: Property, raw: str) -> str:
    if prop.max_length is not None and len(raw) > prop.max_length:
        raise errors.ODataError(
            400, errors.STRING_TOO_LONG,
            f"A validation error occurred. The length of the '{prop.name}' attribute of the "
            f"'{entity_set.entity_type}' entity exceeded the maximum allowed length of "
            f"'{prop.max_length}'.")
    return raw


def _shown(raw: Any) -> str:
    """A client's value in a message, cut short: a message must stay one readable line."""
    text = str(raw) if not isinstance(raw, dict | list) else type(raw).__name__
    return text if len(text) <= 80 else text[:77] + "..."


def to_json(value: Any) -> Any:
    """A stored value as JSON (``Decimal`` stays one: the encoder writes its digits)."""
    if isinstance(value, datetime):
        return format_datetime(value)
    if isinstance(value, date):
        return format_date(value)
    return value


def render(entity_set: EntitySet, record: Mapping[str, Any], select: Iterable[str] | None,
           annotations: bool) -> dict[str, Any]:
    """A record as the Web API returns it: etag first, then the (selected) properties.

    Dataverse always returns the primary key, even when ``$select`` leaves it out."""
    out: dict[str, Any] = {"@odata.etag": f'W/"{record["versionnumber"]}"'}
    names = entity_set.properties if select is None else (entity_set.key, *select)
    for name in names:
        value = record.get(name)
        out[name] = to_json(value)
        if annotations and name.startswith("_") and value is not None:
            annotation = name + LOOKUP_TARGET
            out[annotation] = record.get(annotation)
    return out


def record_to_json(record: Mapping[str, Any]) -> dict[str, Any]:
    """A stored record in full (annotations included), for the data file and admin reads."""
    return {name: to_json(value) for name, value in record.items()}


def record_from_json(entity_set: EntitySet, doc: Mapping[str, Any]) -> dict[str, Any]:
    """The inverse of ``record_to_json`` (trusting the file: no validation of lengths)."""
    record = entity_set.blank_record()
    for name, value in doc.items():
        prop = entity_set.properties.get(name)
        if prop is not None and isinstance(value, str):
            if prop.type is EdmType.DATETIME:
                value = parse_datetime(value)
            elif prop.type is EdmType.DATE:
                value = parse_date(value)
        elif prop is not None and prop.type is EdmType.DECIMAL and isinstance(value, int):
            value = Decimal(value)
        record[name] = value
    return record
