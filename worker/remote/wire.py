"""How queries and values look on the wire: query strings (``$select``, ``$filter``,
``Prefer``), JSON request bodies (datetimes as UTC ``Z``, GUIDs, decimals) and the parsing of
JSON replies and OData timestamps."""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import quote, urlsplit

import orjson

from worker.remote import filters
from worker.remote.errors import RemoteProtocolError
from worker.remote.filters import KeyType
from worker.remote.transport import Reply

Select = Sequence[str] | str | None
_QUERY_SAFE = "$,()'/:@-._~"


def parse_datetime(value: object) -> datetime | None:
    """An OData DateTimeOffset (``2024-01-02T03:04:05Z``, fractions up to 7 digits) as an
    aware datetime; None for anything else."""
    if not isinstance(value, str) or not value:
        return None
    text = value.strip().replace("Z", "+00:00").replace("z", "+00:00")
    if "." in text:  # .NET writes 7 fractional digits, Python reads at most 6
        head, _, rest = text.partition(".")
        digits = len(rest) - len(rest.lstrip("0123456789"))
        text = f"{head}.{rest[:min(digits, 6)]}{rest[digits:]}"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def query_params(*, select: Select = None, filter: str | None = None,
                 orderby: str | None = None, top: int | None = None) -> dict[str, str]:
    """The system query options of a read (property names checked)."""
    params: dict[str, str] = {}
    if select:
        params["$select"] = ",".join(filters.prop(n) for n in property_names(select))
    if filter:
        params["$filter"] = filter
    if orderby:
        params["$orderby"] = orderby
    if top is not None:
        if top < 0:
            raise ValueError("top must be >= 0")
        params["$top"] = str(top)
    return params


def encode_query(params: Mapping[str, str]) -> str:
    """``$filter=a%20eq%201&…``: spaces as %20 and '+' as %2B, since some services read
    a '+' in a query as a space; OData's own punctuation stays readable."""
    return "&".join(f"{quote(k, safe='$')}={quote(v, safe=_QUERY_SAFE)}"
                    for k, v in params.items())


def with_required(select: Select, *required: str) -> Select:
    """``select`` plus the required properties (None stays None: all properties)."""
    if not select:
        return select
    names = property_names(select)
    return names + [r for r in required if r not in names]


def property_names(select: Sequence[str] | str) -> list[str]:
    """Property names from ``"a,b"`` or ``["a", "b"]``."""
    parts = [select] if isinstance(select, str) else list(select)
    return [n.strip() for part in parts for n in part.split(",") if n.strip()]


def prefer(*parts: str | None) -> str:
    """A ``Prefer`` header value from the preferences given (None ones skipped)."""
    return ",".join(p for p in parts if p)


def annotations_preference(value: str | None) -> str | None:
    """``odata.include-annotations="<value>"``, or None when no annotations are wanted."""
    return f'odata.include-annotations="{value}"' if value else None


def parse_json(reply: Reply, method: str, url: str) -> Any:
    """The JSON body of a reply; RemoteProtocolError when it is not JSON. Numbers with a
    fraction or exponent are read as ``Decimal`` (exact digits, never through float)."""
    try:
        return loads(reply.body)
    except (ValueError, UnicodeDecodeError):
        raise RemoteProtocolError("the response is not JSON", status=reply.status,
                                  method=method, path=urlsplit(url).path) from None
    except RecursionError:  # "[[[[…" nested deeper than the parser's stack
        raise RemoteProtocolError("the response is JSON nested too deeply to read",
                                  status=reply.status, method=method,
                                  path=urlsplit(url).path) from None


def key_value(key: str, key_type: KeyType) -> Any:
    """A key as a JSON value in a request body (an int for ``int`` keys)."""
    if key_type == "int":
        return int(filters.key_literal(key, "int"))
    if key_type == "guid":
        return filters.guid(key)
    return key


def loads(text: str | bytes) -> Any:
    """JSON with exact numbers: a number with a fraction or exponent is a ``Decimal`` (so
    are the non-standard NaN and Infinity some services write; no float is ever made).

    The json module, not orjson: orjson has no Decimal, and reading a body with orjson
    first, then again when it holds a fraction (an amount in nearly every record), costs
    more than it saves (``bench/json_bench.py``). One decoder serves every call (it holds
    no state between calls); ``json.loads`` would build a new one each time, which costs a
    fifth of reading a record."""
    if isinstance(text, str):
        if text.startswith("\ufeff"):
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)",
                                       text, 0)
    elif isinstance(text, bytes | bytearray):
        # An object's opening '{"' is UTF-8 to json.detect_encoding too (no BOM, no NUL).
        encoding = "utf-8" if text.startswith(b'{"') else json.detect_encoding(text)
        text = text.decode(encoding, "surrogatepass")
    else:
        raise TypeError(f"the JSON object must be str, bytes or bytearray, "
                        f"not {text.__class__.__name__}")
    return _DECODER.decode(text)


# What json.loads(text, parse_float=Decimal, parse_constant=Decimal) builds for each call.
_DECODER = json.JSONDecoder(parse_float=Decimal, parse_constant=Decimal)


def _json_default(value: object) -> object:
    if isinstance(value, datetime):
        return filters.datetime_literal(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"cannot send a {type(value).__name__} as JSON")


def number_literal(value: Decimal) -> str:
    """A Decimal as a JSON number literal with its exact digits (``1E+2`` → ``100``)."""
    if not value.is_finite():
        raise ValueError(f"cannot send the non-finite number {value} as JSON")
    return format(value, "f")


# Decimals are swapped for marker strings before the C encoder runs, then the markers for
# their exact literals; the marker holds a random part no data can guess.
_MARKER = f"\u0000crmsync-decimal-{uuid.uuid4().hex}-"


def _swap_decimals(value: Any, found: dict[str, str]) -> Any:
    if isinstance(value, Decimal):
        token = f"{_MARKER}{len(found)}"
        found[token] = number_literal(value)
        return token
    if isinstance(value, Mapping):
        return {k: _swap_decimals(v, found) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_swap_decimals(v, found) for v in value]
    return value


def dumps(values: Mapping[str, Any]) -> bytes:
    """A request body: compact UTF-8 JSON, datetimes as UTC ``Z``, UUIDs, and Decimals as
    number literals with their exact digits (the json module would need a float, which
    changes amounts beyond 15 significant digits). Non-finite numbers are refused.

    Written by orjson (about twenty times faster than the json module with the Decimal
    swap, ``bench/json_bench.py``), Decimals as raw literals; what orjson does not take
    as the json module would (a key that is not text, an integer beyond 64 bits, a lone
    surrogate) is written, or refused, by the json module as before."""
    try:
        body = orjson.dumps(values, default=_orjson_default, option=_ORJSON_OPTIONS)
    except TypeError as exc:
        if isinstance(exc.__cause__, ValueError):  # a non-finite Decimal
            raise exc.__cause__ from None
        return _json_dumps(values)
    if b"null" in body and not _finite(values):  # orjson writes NaN and inf as null
        raise ValueError("cannot send a non-finite number as JSON")
    return body


_ORJSON_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def _orjson_default(value: object) -> object:
    if isinstance(value, Decimal):
        return orjson.Fragment(number_literal(value))
    return _json_default(value)


def _finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, Mapping):
        return all(_finite(v) for v in value.values())
    if isinstance(value, list | tuple):
        return all(_finite(v) for v in value)
    return True


def _json_dumps(values: Mapping[str, Any]) -> bytes:
    found: dict[str, str] = {}
    text = json.dumps(_swap_decimals(values, found), default=_json_default,
                      ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    for token, literal in found.items():
        text = text.replace(json.dumps(token), literal, 1)
    return text.encode("utf-8")
