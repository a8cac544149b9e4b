"""Building OData ``$filter`` expressions safely.

Values become literals only through :func:`literal` (strings quoted with ``''`` escaping,
so a value containing a quote cannot end the string and change the filter; GUIDs validated;
datetimes as UTC ``…Z``), and property names are checked against the identifier grammar,
so nothing a record contains can inject filter syntax. Clauses combine with :func:`and_`
and :func:`or_`, which parenthesise their operands and skip empty ones.

    >>> and_(ge("modifiedon", datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)), "statecode eq 0")
    '(modifiedon ge 2024-01-02T03:04:05Z) and (statecode eq 0)'
    >>> eq("name", "O'Brien")
    "name eq 'O''Brien'"
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Literal
from urllib.parse import quote

from worker.errors import CrmsyncError

KeyType = Literal["guid", "string", "int"]

_PROPERTY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(/[A-Za-z_][A-Za-z0-9_]*)*$")
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


class FilterError(CrmsyncError, ValueError):
    """A value cannot be written as an OData literal, or a name is not a property name."""


def literal(value: object) -> str:
    """The OData v4 literal for a Python value: ``None`` → ``null``, bools, ints, finite
    floats, Decimals, ``uuid.UUID`` (unquoted GUID), aware datetimes (UTC, ``Z``), dates
    and strings (single-quoted, quotes doubled)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise FilterError(f"cannot filter on the non-finite number {value!r}")
        return repr(value)
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise FilterError(f"cannot filter on the non-finite number {value!s}")
        return format(value, "f")
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        return datetime_literal(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    raise FilterError(f"cannot write a {type(value).__name__} as an OData literal")


def datetime_literal(value: datetime) -> str:
    """An aware datetime as an OData DateTimeOffset in UTC: ``2024-01-02T03:04:05Z``
    (fractional seconds only when there are any). Naive datetimes are refused: guessing
    their zone would silently shift a high-water mark."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise FilterError(f"datetime {value.isoformat()} has no time zone")
    utc = value.astimezone(UTC)
    text = utc.strftime("%Y-%m-%dT%H:%M:%S")
    if utc.microsecond:
        text += f".{utc.microsecond:06d}".rstrip("0")
    return text + "Z"


def guid(value: str | uuid.UUID) -> str:
    """A validated GUID literal (lower case, unquoted)."""
    text = str(value).strip()
    if not _GUID.fullmatch(text):  # "$" alone would accept a final newline
        raise FilterError(f"{text!r} is not a GUID")
    return text.lower()


def key_literal(key: object, key_type: KeyType = "guid") -> str:
    """A key as it appears in ``set(<key>)`` and in ``key eq <key>``."""
    if key_type == "guid":
        if not isinstance(key, str | uuid.UUID):
            raise FilterError(f"key {key!r} is not a GUID")
        return guid(key)
    if key_type == "int":
        if isinstance(key, bool):
            raise FilterError(f"key {key!r} is not an integer")
        try:
            return str(int(str(key).strip()))
        except ValueError:
            raise FilterError(f"key {key!r} is not an integer") from None
    if key_type == "string":
        text = str(key)
        if any(_control(c) for c in text):
            raise FilterError(f"key {text!r} contains a control character (refused: it "
                              "could end a header or request line)")
        return literal(text)
    raise FilterError(f"unknown key type {key_type!r}")


def key_segment(key: object, key_type: KeyType = "guid") -> str:
    """A key as it appears in a URL path, ``set(<key>)``: :func:`key_literal`
    percent-encoded (RFC 3986; OData allows a quote as it is), so that ``/``, ``?``, ``#``,
    ``%``, spaces or parentheses in a string key stay inside the key instead of
    addressing another resource."""
    text = key_literal(key, key_type)
    # A GUID or integer literal is hex digits, '-' and digits: nothing to encode.
    return text if key_type != "string" else quote(text, safe="'")


def alternate_key(alternate: Mapping[str, object]) -> str:
    """An alternate key as it appears in ``set(<key>)``: ``accountnumber='C1'``, pairs
    joined by commas. A string value with a control character is refused, as a string
    key is."""
    pairs = []
    for name, value in alternate.items():
        if isinstance(value, str) and any(_control(c) for c in value):
            raise FilterError(f"alternate key {name} {value!r} contains a control character "
                              "(refused: it could end a header or request line)")
        pairs.append(f"{prop(name)}={literal(value)}")
    return ",".join(pairs)


def alternate_segment(alternate: Mapping[str, object]) -> str:
    """:func:`alternate_key` percent-encoded for a URL path, as :func:`key_segment`."""
    return quote(alternate_key(alternate), safe="'=,")


def _control(char: str) -> bool:
    return ord(char) < 0x20 or 0x7F <= ord(char) < 0xA0 or char in "\u2028\u2029"


def prop(name: str) -> str:
    """``name`` if it is a property name (or a ``nav/prop`` path), else FilterError."""
    if not isinstance(name, str) or not _PROPERTY.fullmatch(name):
        raise FilterError(f"{name!r} is not an OData property name")
    return name


def _compare(op: str, name: str, value: object) -> str:
    return f"{prop(name)} {op} {literal(value)}"


def eq(name: str, value: object) -> str:
    return _compare("eq", name, value)


def ne(name: str, value: object) -> str:
    return _compare("ne", name, value)


def gt(name: str, value: object) -> str:
    return _compare("gt", name, value)


def ge(name: str, value: object) -> str:
    return _compare("ge", name, value)


def lt(name: str, value: object) -> str:
    return _compare("lt", name, value)


def le(name: str, value: object) -> str:
    return _compare("le", name, value)


def _combine(op: str, clauses: Iterable[str | None]) -> str | None:
    parts = [c.strip() for c in clauses if c is not None and c.strip()]
    if not parts:
        return None
    if len(parts) == 1:
        return parts[0]
    return f" {op} ".join(f"({p})" for p in parts)


def and_(*clauses: str | None) -> str | None:
    """All clauses (None and empty ones skipped); None when nothing is left."""
    return _combine("and", clauses)


def or_(*clauses: str | None) -> str | None:
    """Any of the clauses (None and empty ones skipped); None when nothing is left."""
    return _combine("or", clauses)


def not_(clause: str) -> str:
    return f"not ({clause})"


def key_in(name: str, keys: Iterable[object], key_type: KeyType = "guid") -> str | None:
    """``name eq k1 or name eq k2 …`` for keys rendered with :func:`key_literal` (the
    ``in`` operator is OData 4.01, which not every v4 service speaks)."""
    column = prop(name)
    parts = [f"{column} eq {key_literal(k, key_type)}" for k in keys]
    return " or ".join(parts) or None


def orderby(*names: str, descending: bool = False) -> str:
    """``$orderby`` for properties, all ascending (or all descending)."""
    direction = "desc" if descending else "asc"
    return ",".join(f"{prop(n)} {direction}" for n in names)
