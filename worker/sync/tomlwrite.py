"""A small, deterministic TOML writer for crmsync's own documents (the standard library
reads TOML but does not write it). Keys keep the order they are given in; strings use basic
quoting with escapes; a value's type decides its literal."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f",
            "\r": "\\r"}


def key(name: str) -> str:
    """A key, bare when TOML allows it, else quoted."""
    return name if _BARE_KEY.fullmatch(name) else string(name)  # "$" would let "x\n" by


def string(text: str) -> str:
    out = []
    for ch in text:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def value(v: Any) -> str:
    """One value as an inline TOML literal (tables and arrays inline)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            return ("nan" if math.isnan(v) else "inf" if v > 0 else "-inf")
        return repr(v)
    if isinstance(v, Decimal):
        return str(v)
    if isinstance(v, str):
        return string(v)
    if isinstance(v, datetime | date | time):
        return v.isoformat()
    if isinstance(v, Mapping):
        if not v:
            return "{}"
        return "{ " + ", ".join(f"{key(str(k))} = {value(x)}" for k, x in v.items()) + " }"
    if isinstance(v, Sequence):
        return "[" + ", ".join(value(x) for x in v) + "]"
    raise TypeError(f"no TOML literal for {type(v).__name__}")


def table(header: Sequence[str], items: Mapping[str, Any], *, array: bool = False) -> list[str]:
    """A ``[a.b]`` (or ``[[a.b]]``) table with one ``key = value`` line per item."""
    name = ".".join(key(part) for part in header)
    lines = [f"[[{name}]]" if array else f"[{name}]"]
    lines.extend(assignments(items))
    return lines


def assignments(items: Mapping[str, Any]) -> Iterable[str]:
    return (f"{key(k)} = {value(v)}" for k, v in items.items())
