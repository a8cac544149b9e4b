"""Values crossing between a local column and a remote property, one record at a time.

``to_remote`` turns a value read from a local column into the JSON value the remote
property's EDM type takes; ``to_local`` turns a value read from the remote side into a value
the local column can hold. Neither rounds, cuts a number or guesses: a value that does not
fit raises :class:`ValueRefused` with a one-line reason, which the pass turns into the
failure of that record alone (text is the exception: it is cut to the destination's length
before it gets here, as NAV does). Decimals stay Decimals all the way (no float).
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime, time
from decimal import Decimal, InvalidOperation
from typing import Any

import sqlalchemy as sa

from worker.remote.wire import parse_datetime
from worker.sync.local import Unreadable
from worker.sync.metadata import PropertyInfo
from worker.sync.model import Direction, FieldMapping
from worker.sync.transfer import transform

INT_RANGES = {
    "Edm.Byte": (0, 2**8 - 1), "Edm.SByte": (-(2**7), 2**7 - 1),
    "Edm.Int16": (-(2**15), 2**15 - 1), "Edm.Int32": (-(2**31), 2**31 - 1),
    "Edm.Int64": (-(2**63), 2**63 - 1),
}
_JSON_SCALARS = (str, int, Decimal, bool)


class ValueRefused(ValueError):
    """A value the destination cannot hold (the message says why, without the field)."""


def value_failure(where: str, key: object, f: FieldMapping, exc: BaseException) -> str:
    """The one-line message of a record failed by one of its values: the record (table or
    entity set, and key), the field, and the reason."""
    reason = str(exc) or type(exc).__name__
    return f"{where} {key}: field {f.label}: {reason}"


def unreadable_message(table: str, key: object, row: Any,
                       fields: Iterable[FieldMapping]) -> str | None:
    """The failure of a local row whose mapped column could not be read, or None."""
    for f in fields:
        value = row[f.local_column] if f.local_column else None
        if isinstance(value, Unreadable):
            return value_failure(table, key, f, ValueRefused(str(value)))
    return None


# -- local → remote ---------------------------------------------------------------------
def to_remote(value: Any, prop: PropertyInfo | None) -> Any:
    """The JSON value for ``prop`` (None: the service did not describe it, so the value is
    only made JSON-able)."""
    if isinstance(value, Unreadable):
        raise ValueRefused(str(value))
    if value is None:
        return None
    if isinstance(value, float):
        value = _decimal(value)
    if prop is None:
        return _json_able(value)
    kind = prop.type
    if kind == "Edm.String":
        return _as_text(value, prop)
    if kind in INT_RANGES:
        return _as_int(value, kind)
    if kind in ("Edm.Decimal", "Edm.Double", "Edm.Single"):
        return _as_decimal(value, prop)
    converter = _REMOTE_CONVERTERS.get(kind)
    return converter(value) if converter else _json_able(value)


def to_remote_converter(f: FieldMapping, prop: PropertyInfo | None,
                        max_length: int | None) -> Callable[[Any], Any]:
    """How one field's local values become the values sent to ``prop``: its rule
    (``transfer.transform``, text cut to ``max_length``), then the property's type
    (:func:`to_remote`). Chosen once for a chunk's records: a field with no rule whose
    property is text sends a text as it is, cut, which is what those two give it, without
    asking them each record. A value that cannot go raises ValueError (ValueRefused)."""
    direction = Direction.TO_INTEGRATION

    def converted(value: Any) -> Any:
        if isinstance(value, Unreadable):
            raise ValueRefused(str(value))
        return to_remote(transform(f, value, direction, max_length), prop)

    if not (type(f.transformation) is dict and not f.transformation
            and prop is not None and prop.type == "Edm.String"):
        return converted
    cut = max_length if isinstance(max_length, int) and max_length > 0 else None

    def text(value: Any) -> Any:
        if type(value) is str:
            return value if cut is None else value[:cut]
        return converted(value)

    return text


def _as_text(value: Any, prop: PropertyInfo) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or not isinstance(
            value, int | Decimal | date | time | uuid.UUID):
        raise ValueRefused(f"a {_kind(value)} cannot be sent as Edm.String")
    text = _text_of(value)
    if prop.max_length is not None and len(text) > prop.max_length:
        raise ValueRefused(f"{text} is longer than the {prop.max_length} characters "
                           f"{prop.name} holds")
    return text


def _text_of(value: Any) -> str:
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    return str(value)


def _as_int(value: Any, kind: str) -> int:
    number = _number(value, kind)
    if number != number.to_integral_value():
        raise ValueRefused(f"{format(number, 'f')} is not a whole number ({kind})")
    low, high = INT_RANGES[kind]
    whole = int(number)
    if not low <= whole <= high:
        raise ValueRefused(f"{whole} is out of the range of {kind} ({low} to {high})")
    return whole


def _as_decimal(value: Any, prop: PropertyInfo) -> Decimal | int:
    number = _number(value, prop.type)
    fits(number, prop.precision, prop.scale, f"{prop.name} ({prop.type})")
    return int(number) if isinstance(value, int) else number


def _number(value: Any, kind: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        raise ValueRefused(f"a {_kind(value)} cannot be sent as {kind}")
    if isinstance(value, Decimal) and not value.is_finite():
        raise ValueRefused(f"{value} is not a finite number ({kind})")
    return Decimal(value)


def fits(number: Decimal, precision: int | None, scale: int | None, what: str) -> None:
    """Refuse a number with more decimals than ``scale`` or more whole digits than
    ``precision - scale`` (trailing zeros of the fraction do not count)."""
    if not number:
        return
    _, digits, exponent = number.normalize().as_tuple()
    assert isinstance(exponent, int)
    decimals = max(0, -exponent)
    whole_digits = max(0, len(digits) + exponent)
    if scale is not None and decimals > scale:
        raise ValueRefused(f"{format(number, 'f')} has {decimals} decimals; {what} holds "
                           f"{scale} (it is never rounded)")
    if precision is not None and whole_digits > precision - (scale or 0):
        raise ValueRefused(f"{format(number, 'f')} is too large for {what} (precision "
                           f"{precision}, scale {scale or 0})")


def _as_datetime(value: Any) -> str:
    if isinstance(value, datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return _datetime_text(aware)
    if isinstance(value, date):
        return _datetime_text(datetime(value.year, value.month, value.day, tzinfo=UTC))
    raise ValueRefused(f"a {_kind(value)} cannot be sent as Edm.DateTimeOffset")


def _datetime_text(value: datetime) -> str:
    utc = value.astimezone(UTC)
    text = utc.strftime("%Y-%m-%dT%H:%M:%S")
    return text + (f".{utc.microsecond:06d}".rstrip("0") if utc.microsecond else "") + "Z"


def _as_date(value: Any) -> str:
    if isinstance(value, datetime):
        return value.date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    raise ValueRefused(f"a {_kind(value)} cannot be sent as Edm.Date")


def _as_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise ValueRefused(f"a {_kind(value)} cannot be sent as Edm.Boolean")


def _as_guid(value: Any) -> str:
    try:
        return str(value if isinstance(value, uuid.UUID) else uuid.UUID(str(value)))
    except ValueError:
        raise ValueRefused(f"{value!r} is not a GUID") from None


def _as_time(value: Any) -> str:
    if isinstance(value, time):
        return value.isoformat()
    raise ValueRefused(f"a {_kind(value)} cannot be sent as Edm.TimeOfDay")


def _as_binary(value: Any) -> str:
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    raise ValueRefused(f"a {_kind(value)} cannot be sent as Edm.Binary")


_REMOTE_CONVERTERS = {
    "Edm.DateTimeOffset": _as_datetime, "Edm.Date": _as_date, "Edm.Boolean": _as_bool,
    "Edm.Guid": _as_guid, "Edm.TimeOfDay": _as_time, "Edm.Binary": _as_binary,
}


def _json_able(value: Any) -> Any:
    if isinstance(value, _JSON_SCALARS) or value is None:
        return value
    if isinstance(value, datetime):
        return _as_datetime(value)
    if isinstance(value, date | time | uuid.UUID):
        return _text_of(value)
    raise ValueRefused(f"a {_kind(value)} cannot be sent to the CRM")


def _kind(value: Any) -> str:
    names = {bytes: "bytea value", memoryview: "bytea value", time: "time value",
             dict: "JSON object", list: "list", str: "text value", bool: "boolean"}
    return names.get(type(value), f"{type(value).__name__} value")


def _decimal(value: float) -> Decimal:
    """A float from a float column (real, double precision) by its shortest repr, the
    digits the column shows; non-finite values are refused."""
    number = Decimal(repr(value))
    if not number.is_finite():
        raise ValueRefused(f"{value} is not a finite number")
    return number


# -- remote → local ---------------------------------------------------------------------
def to_local(value: Any, column: sa.Column) -> Any:
    """A remote value as a value ``column`` can hold."""
    if value is None:
        return None
    kind = column.type
    if isinstance(kind, sa.Boolean):
        return _as_bool(value)
    if isinstance(kind, sa.Integer):
        return _local_int(value, kind)
    if isinstance(kind, sa.Numeric) and not isinstance(kind, sa.Float):
        number = _parse_number(value)
        fits(number, kind.precision, kind.scale, f"{column.name} "
             f"(numeric({kind.precision}, {kind.scale or 0}))" if kind.precision else column.name)
        return number
    if isinstance(kind, sa.Float):
        return _parse_number(value)
    if isinstance(kind, sa.DateTime):
        return _local_datetime(value, kind)
    if isinstance(kind, sa.Date):
        return _local_datetime(value, kind).date()
    if isinstance(kind, sa.Time):
        return _local_time(value)
    if isinstance(kind, sa.Uuid):
        return uuid.UUID(_as_guid(value))
    if isinstance(kind, sa.String):
        return _local_text(value, kind)
    if isinstance(kind, sa.LargeBinary):
        return _local_binary(value)
    return value


def _local_binary(value: Any) -> bytes:
    if not isinstance(value, str):
        raise ValueRefused(f"a {_kind(value)} cannot be stored as bytea")
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:
        raise ValueRefused("the value is not base64 (Edm.Binary)") from None


_LOCAL_INT_RANGES = {sa.SmallInteger: "Edm.Int16", sa.BigInteger: "Edm.Int64"}


def _local_int(value: Any, kind: sa.Integer) -> int:
    edm = next((e for t, e in _LOCAL_INT_RANGES.items() if isinstance(kind, t)), "Edm.Int32")
    number = _parse_number(value)
    if number != number.to_integral_value():
        raise ValueRefused(f"{format(number, 'f')} is not a whole number")
    low, high = INT_RANGES[edm]
    if not low <= int(number) <= high:
        raise ValueRefused(f"{int(number)} is out of the range of the column "
                           f"({low} to {high})")
    return int(number)


def _parse_number(value: Any) -> Decimal:
    if isinstance(value, bool):
        raise ValueRefused(f"{value} is not a number")
    if isinstance(value, float):
        return _decimal(value)
    try:
        number = Decimal(value) if isinstance(value, int | Decimal | str) else None
    except InvalidOperation:
        number = None
    if number is None or not number.is_finite():
        raise ValueRefused(f"{value!r} is not a number")
    return number


def _local_datetime(value: Any, kind: sa.DateTime | sa.Date) -> datetime:
    parsed = parse_datetime(value) if isinstance(value, str) else None
    if parsed is None and isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value).replace(tzinfo=UTC)
        except ValueError:
            parsed = None
    if parsed is None:
        raise ValueRefused(f"{value!r} is not a date and time")
    if isinstance(kind, sa.DateTime) and not kind.timezone:
        return parsed.astimezone(UTC).replace(tzinfo=None)
    return parsed


def _local_time(value: Any) -> time:
    try:
        return time.fromisoformat(str(value))
    except ValueError:
        raise ValueRefused(f"{value!r} is not a time of day") from None


def _local_text(value: Any, kind: sa.String) -> str:
    if not isinstance(value, str | int | Decimal):  # bool is an int
        raise ValueRefused(f"a {_kind(value)} cannot be stored as text")
    if isinstance(value, bool):
        text = "true" if value else "false"
    else:
        text = value if isinstance(value, str) else format(Decimal(value), "f")
    if kind.length is not None and len(text) > kind.length and not isinstance(value, str):
        raise ValueRefused(f"{text} is longer than the column's {kind.length} characters")
    return text[: kind.length] if kind.length is not None else text
