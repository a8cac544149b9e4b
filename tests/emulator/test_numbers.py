"""Exact numbers without I/O: the JSON codec keeps every digit, and a decimal property
accepts exactly the values its precision and scale can hold (property-tested)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.emulator import jsoncodec
from worker.emulator.numbers import DoesNotFit, check_decimal, check_integer
from worker.emulator.schema import EdmType, Property

MONEY = Property("creditlimit", EdmType.DECIMAL, precision=19, scale=4)
decimals = st.decimals(allow_nan=False, allow_infinity=False, places=None,
                       min_value=Decimal("-1e30"), max_value=Decimal("1e30"))


@given(st.lists(decimals, max_size=5), st.text(max_size=20))
def test_json_round_trip_keeps_every_digit(values: list[Decimal], text: str) -> None:
    doc = {"values": values, "text": text}
    back = jsoncodec.loads(jsoncodec.dumps(doc))
    assert back["text"] == text
    assert [Decimal(v) for v in back["values"]] == values  # integral ones come back as int
    for original, number in zip(values, back["values"], strict=True):
        if isinstance(number, Decimal):
            assert format(number, "f") == format(original, "f")


def test_a_string_cannot_forge_a_number() -> None:
    marker_like = '"\\u0000decimal-0123456789abcdef:1.5"'
    doc = {"a": "\x00decimal-0123456789abcdef:1.5", "b": Decimal("2.50")}
    text = jsoncodec.dumps(doc)
    assert marker_like in text and '"b":2.50' in text


@given(decimals)
def test_money_holds_exactly_what_fits_19_4(value: Decimal) -> None:
    sign, digits, exponent = value.normalize().as_tuple() if value else (0, (0,), 0)
    assert isinstance(exponent, int)
    fraction = max(-exponent, 0)
    whole = max(len(digits) + exponent, 0)
    try:
        stored = check_decimal(MONEY, value)
    except DoesNotFit as exc:
        assert fraction > 4 or whole > 15
        assert "'creditlimit'" in str(exc)
    else:
        assert fraction <= 4 and whole <= 15
        assert stored == value


@pytest.mark.parametrize(("kind", "value", "fits"), [
    (EdmType.INT32, 2**31 - 1, True), (EdmType.INT32, 2**31, False),
    (EdmType.INT32, -(2**31), True), (EdmType.INT32, -(2**31) - 1, False),
    (EdmType.INT64, 2**63 - 1, True), (EdmType.INT64, 2**63, False),
    (EdmType.INT64, Decimal("5.0"), True), (EdmType.INT64, Decimal("5.5"), False),
])
def test_whole_number_ranges(kind: EdmType, value: int | Decimal, fits: bool) -> None:
    prop = Property("n", kind)
    if fits:
        assert check_integer(prop, value) == value
    else:
        with pytest.raises(DoesNotFit, match="'n'"):
            check_integer(prop, value)


@pytest.mark.parametrize("text", ["NaN", "[Infinity]", "-Infinity", "[" * 100_000, "{",
                                  "1" * 5000])
def test_what_the_codec_refuses(text: str) -> None:
    with pytest.raises(jsoncodec.JSONInputError):
        jsoncodec.loads(text)
