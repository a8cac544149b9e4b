"""JSON in and out of the emulator, with exact numbers and no way to crash the parser.

Numbers with a fraction or an exponent are read as ``decimal.Decimal`` and written back as
JSON number literals with the same digits (``9999999999999999.99``, never ``1e16``): no
float is on the emulator's path. ``NaN`` and ``Infinity`` (which Python's parser accepts)
are refused, and so is nesting deeper than the parser's recursion allows: both are a
``JSONInputError`` (a ``ValueError``), which callers answer with a 400."""

from __future__ import annotations

import json
import re
import secrets
from decimal import Decimal
from typing import Any


class JSONInputError(ValueError):
    """A body that is not JSON the emulator accepts; the message says why."""


def _refuse_constant(name: str) -> Any:
    raise JSONInputError(f"{name} is not a JSON number")


def loads(data: bytes | str) -> Any:
    """Parse ``data``; fractions and exponents become ``Decimal``."""
    try:
        return json.loads(data, parse_float=Decimal, parse_constant=_refuse_constant)
    except RecursionError:
        raise JSONInputError("the JSON is nested too deeply") from None
    except JSONInputError:
        raise
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, a 5000-digit integer
        raise JSONInputError(str(exc)) from None


# ``default`` turns a Decimal into this marker and its digits; the marker (a NUL, which
# JSON always escapes, and a per-process random tag) is then replaced by the bare digits.
# A string in the data cannot forge it without knowing the tag.
_MARK = f"\x00decimal-{secrets.token_hex(8)}:"
_ESCAPED_MARK = json.dumps(_MARK)[1:-1]
_MARKED = re.compile('"' + re.escape(_ESCAPED_MARK) + r'(-?[0-9]+(?:\.[0-9]+)?)"')


def _exact(value: Any) -> str:
    if isinstance(value, Decimal) and value.is_finite():
        return _MARK + format(value, "f")
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def dumps(doc: Any) -> str:
    """``doc`` as compact JSON, each ``Decimal`` as a number literal with its digits."""
    text = json.dumps(doc, separators=(",", ":"), default=_exact)
    return _MARKED.sub(r"\1", text) if _ESCAPED_MARK in text else text
