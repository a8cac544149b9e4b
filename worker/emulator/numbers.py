"""What a numeric property can hold: Edm.Int32/Int64 ranges and Edm.Decimal precision and
scale, checked exactly on ``int`` and ``Decimal`` (no float is involved).

A value that does not fit is refused with a message naming the property; it is never
rounded. Zeros after the last significant decimal do not count against the scale (``1.50000``
fits a scale of 4 and is kept as ``1.5000``)."""

from __future__ import annotations

from decimal import Decimal

from worker.emulator.schema import EdmType, Property

INT_RANGES = {
    EdmType.INT32: (-(2**31), 2**31 - 1),
    EdmType.INT64: (-(2**63), 2**63 - 1),
}


class DoesNotFit(ValueError):
    """A number a property cannot hold; the message names the property and its limit."""


def check_integer(prop: Property, value: int | Decimal) -> int:
    """``value`` as an ``int`` within the property's range."""
    if isinstance(value, Decimal):
        if not value.is_finite() or value != value.to_integral_value():
            raise DoesNotFit(f"The value {_shown(value)} of '{prop.name}' has decimals; "
                             f"{prop.type.value} holds whole numbers.")
        value = int(value)
    low, high = INT_RANGES[prop.type]
    if not low <= value <= high:
        raise DoesNotFit(f"The value {_shown(value)} of '{prop.name}' is out of range for "
                         f"{prop.type.value} ({low} to {high}).")
    return value


def check_decimal(prop: Property, value: int | Decimal) -> Decimal:
    """``value`` as a ``Decimal`` within the property's precision and scale."""
    number = Decimal(value)
    if prop.precision is None or prop.scale is None:
        return number
    decimals = _significant_decimals(number)
    if decimals > prop.scale:
        raise DoesNotFit(f"The value {_shown(value)} of '{prop.name}' has {decimals} "
                         f"decimals; the property holds at most {prop.scale} (Edm.Decimal, "
                         f"Precision {prop.precision}, Scale {prop.scale}).")
    integer_digits = max(number.adjusted() + 1, 0) if number else 0
    if integer_digits > prop.precision - prop.scale:
        raise DoesNotFit(f"The value {_shown(value)} of '{prop.name}' has {integer_digits} "
                         f"digits before the point; the property holds at most "
                         f"{prop.precision - prop.scale} (Edm.Decimal, Precision "
                         f"{prop.precision}, Scale {prop.scale}).")
    exponent = number.as_tuple().exponent
    if isinstance(exponent, int) and -exponent > prop.scale:
        number = number.quantize(Decimal(1).scaleb(-prop.scale))  # only zeros are dropped
    return number


def _shown(value: int | Decimal) -> str:
    """A number in a message: in full up to 60 digits (every digit matters in an amount)."""
    text = format(value, "f") if isinstance(value, Decimal) else str(value)
    return text if len(text) <= 60 else f"{text[:20]}...{text[-20:]} ({len(text)} characters)"


def _significant_decimals(number: Decimal) -> int:
    """Digits after the point, trailing zeros not counted."""
    sign, digits, exponent = number.as_tuple()
    if not isinstance(exponent, int) or exponent >= 0:
        return 0
    fraction = "".join(map(str, digits))[exponent:] if len(digits) >= -exponent else (
        "0" * (-exponent - len(digits)) + "".join(map(str, digits)))
    return len(fraction.rstrip("0"))
