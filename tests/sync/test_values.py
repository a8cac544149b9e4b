"""Values between local columns and remote properties, without I/O: exact numbers on the
wire, conversions to EDM types and to local column types, refusals that never round, and the
well-formedness of transformation rules."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st

from worker.remote import wire
from worker.sync.compat import to_local_problem, to_remote_problem
from worker.sync.local import Unreadable
from worker.sync.metadata import PropertyInfo, parse
from worker.sync.model import Direction, FieldMapping
from worker.sync.transfer import TransformError, constant, rule_problems, transform
from worker.sync.values import ValueRefused, fits, to_local, to_remote, to_remote_converter

MONEY = PropertyInfo("creditlimit", "Edm.Decimal", precision=19, scale=4)
TEXT = PropertyInfo("name", "Edm.String", max_length=10)


def _prop(kind: str) -> PropertyInfo:
    return PropertyInfo("p", kind)


def _column(kind: sa.types.TypeEngine[Any]) -> sa.Column[Any]:
    return sa.Column("c", kind)


def _field(**transformation: Any) -> FieldMapping:
    return FieldMapping(1, "c", "p", Direction.BIDIRECTIONAL, None, transformation, None, None,
                        None, False, False, False, False, 0)


# -- the wire --------------------------------------------------------------------------
@pytest.mark.parametrize("text", ["9999999999999999.99", "99999999999999.99",
                                  "-922337203685477.5808", "0.0001", "1E+2", "-0"])
def test_decimals_go_out_with_their_exact_digits(text: str) -> None:
    body = wire.dumps({"amount": Decimal(text)})
    assert body == b'{"amount":' + format(Decimal(text), "f").encode() + b"}"
    assert wire.loads(body)["amount"] == Decimal(text)


@given(st.decimals(min_value=Decimal("-9999999999999999.99"),
                   max_value=Decimal("9999999999999999.99"), places=2))
def test_numeric_18_2_survives_the_wire_exactly(value: Decimal) -> None:
    parsed = wire.loads(wire.dumps({"v": value, "nested": [value]}))
    assert parsed["v"] == value and parsed["nested"] == [value]
    assert format(parsed["v"], "f") == format(value, "f")  # the same digits, zeros kept


def test_a_reply_is_read_with_exact_numbers_and_plain_ints() -> None:
    doc = wire.loads(b'{"a": 99999999999999.99, "b": 2147483647, "c": 1e16}')
    assert doc == {"a": Decimal("99999999999999.99"), "b": 2147483647, "c": Decimal("1E+16")}
    assert type(doc["b"]) is int
    assert wire.loads(b'[NaN, -Infinity]')[1] == Decimal("-Infinity")


def test_bodies_keep_other_values_as_json_does() -> None:
    body = {"s": "O'Brien \u20ac", "n": None, "t": True, "d": date(2024, 2, 29),
            "u": uuid.UUID(int=1), "ts": datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)}
    assert json.loads(wire.dumps(body)) == {
        "s": "O'Brien \u20ac", "n": None, "t": True, "d": "2024-02-29",
        "u": "00000000-0000-0000-0000-000000000001", "ts": "2024-01-02T03:04:05Z"}


def test_non_finite_numbers_are_refused_before_sending() -> None:
    with pytest.raises(ValueError, match="non-finite"):
        wire.dumps({"x": Decimal("NaN")})
    with pytest.raises(ValueError):
        wire.dumps({"x": float("inf")})


# -- local → remote --------------------------------------------------------------------
@pytest.mark.parametrize(("value", "prop", "expected"), [
    (Decimal("999999999999999.9999"), MONEY, Decimal("999999999999999.9999")),
    (Decimal("12.50000"), MONEY, Decimal("12.50000")),
    (2**31 - 1, _prop("Edm.Int32"), 2**31 - 1),
    (-(2**63), _prop("Edm.Int64"), -(2**63)),
    (Decimal("42.00"), _prop("Edm.Int32"), 42),
    (time(8, 30), TEXT, "08:30:00"),
    (Decimal("12.5"), TEXT, "12.5"),
    (uuid.UUID(int=5), _prop("Edm.Guid"), "00000000-0000-0000-0000-000000000005"),
    (datetime(2024, 1, 2, 3, 4, 5), _prop("Edm.DateTimeOffset"), "2024-01-02T03:04:05Z"),
    (date(9999, 12, 31), _prop("Edm.DateTimeOffset"), "9999-12-31T00:00:00Z"),
    (date(2024, 2, 29), _prop("Edm.Date"), "2024-02-29"),
    (0.1, MONEY, Decimal("0.1")),
    (b"\x00\x01", _prop("Edm.Binary"), "AAE="),
    (None, MONEY, None),
])
def test_values_convert_to_the_property_type(value: Any, prop: PropertyInfo,
                                             expected: Any) -> None:
    assert to_remote(value, prop) == expected


@pytest.mark.parametrize(("value", "prop", "message"), [
    (Decimal("1.23456"), MONEY, "1.23456 has 5 decimals; creditlimit (Edm.Decimal) holds 4"),
    (Decimal("9999999999999999.99"), MONEY,
     "9999999999999999.99 is too large for creditlimit (Edm.Decimal) (precision 19, scale 4)"),
    (2**31, _prop("Edm.Int32"), "2147483648 is out of the range of Edm.Int32"),
    (2**63, _prop("Edm.Int64"), "out of the range of Edm.Int64"),
    (Decimal("1.5"), _prop("Edm.Int32"), "1.5 is not a whole number (Edm.Int32)"),
    ("12", MONEY, "a text value cannot be sent as Edm.Decimal"),
    (True, MONEY, "a boolean cannot be sent as Edm.Decimal"),
    (b"\x00", TEXT, "a bytea value cannot be sent as Edm.String"),
    (memoryview(b"\x00"), TEXT, "a bytea value cannot be sent as Edm.String"),
    ({"a": 1}, TEXT, "a JSON object cannot be sent as Edm.String"),
    (12345678901, TEXT, "12345678901 is longer than the 10 characters name holds"),
    ("not-a-guid", _prop("Edm.Guid"), "'not-a-guid' is not a GUID"),
    (float("nan"), MONEY, "nan is not a finite number"),
    (Unreadable("d", "infinity"), _prop("Edm.Date"),
     "column d holds 'infinity', which cannot be read"),
])
def test_values_the_property_cannot_hold_are_refused(value: Any, prop: PropertyInfo,
                                                     message: str) -> None:
    with pytest.raises(ValueRefused, match=message.replace("(", r"\(").replace(")", r"\)")):
        to_remote(value, prop)


def test_without_metadata_a_value_is_only_made_json_able() -> None:
    assert to_remote(Decimal("1.005"), None) == Decimal("1.005")
    assert to_remote(time(1, 2), None) == "01:02:00"
    with pytest.raises(ValueRefused, match="bytea"):
        to_remote(b"x", None)


def test_fits_does_not_count_trailing_zeros() -> None:
    fits(Decimal("1.50000"), 19, 4, "x")
    fits(Decimal("0.0000"), 2, 2, "x")
    with pytest.raises(ValueRefused):
        fits(Decimal("1.00001"), 19, 4, "x")


# -- remote → local --------------------------------------------------------------------
@pytest.mark.parametrize(("value", "kind", "expected"), [
    (Decimal("9999999999999999.99"), sa.Numeric(18, 2), Decimal("9999999999999999.99")),
    (2147483647, sa.Integer(), 2147483647),
    (-(2**63), sa.BigInteger(), -(2**63)),
    ("2024-01-02T03:04:05Z", sa.DateTime(timezone=True),
     datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)),
    ("2024-01-02T03:04:05+02:00", sa.DateTime(), datetime(2024, 1, 2, 1, 4, 5)),
    ("2024-02-29", sa.Date(), date(2024, 2, 29)),
    ("08:30:00", sa.Time(), time(8, 30)),
    (Decimal("12.5"), sa.String(10), "12.5"),
    ("abcdefghijkl", sa.String(10), "abcdefghij"),
    ("00000000-0000-0000-0000-000000000005", sa.Uuid(), uuid.UUID(int=5)),
    (True, sa.Boolean(), True),
    (False, sa.String(5), "false"),
])
def test_remote_values_convert_to_the_column_type(value: Any, kind: Any, expected: Any) -> None:
    assert to_local(value, _column(kind)) == expected


@pytest.mark.parametrize(("value", "kind", "message"), [
    ("abc", sa.Integer(), "'abc' is not a number"),
    (2**31, sa.Integer(), "2147483648 is out of the range of the column"),
    (40000, sa.SmallInteger(), "40000 is out of the range of the column"),
    (Decimal("1.5"), sa.Integer(), "1.5 is not a whole number"),
    (Decimal("1.234"), sa.Numeric(18, 2), "1.234 has 3 decimals"),
    (Decimal("10000000000000000"), sa.Numeric(18, 2), "is too large for c"),
    ("yesterday", sa.Date(), "'yesterday' is not a date and time"),
    (12345678901, sa.String(10), "12345678901 is longer than the column's 10 characters"),
    ("nope", sa.Uuid(), "'nope' is not a GUID"),
    ("true", sa.Boolean(), "a text value cannot be sent as Edm.Boolean"),
])
def test_remote_values_the_column_cannot_hold_are_refused(value: Any, kind: Any,
                                                          message: str) -> None:
    with pytest.raises(ValueRefused, match=message.replace("(", r"\(").replace(")", r"\)")):
        to_local(value, _column(kind))


# -- transformations -------------------------------------------------------------------
@pytest.mark.parametrize(("rule", "message"), [
    (5, "transformation must be a JSON object"),
    ({"value_map": 5}, "transformation.value_map must be an object of value → value, got 5"),
    ({"value_map": {"a": [1]}}, "transformation.value_map must be an object"),
    ({"case": "title"}, "transformation.case must be 'upper' or 'lower', got 'title'"),
    ({"max_length": 0}, "transformation.max_length must be a positive whole number"),
    ({"before": ""}, "transformation.before must be a non-empty text"),
    ({"trim": "yes"}, "transformation.trim must be true or false"),
    ({"uppercase": True}, "transformation: unknown rule 'uppercase'"),
])
def test_malformed_rules_are_named(rule: Any, message: str) -> None:
    problems = rule_problems(rule)
    assert any(message in p for p in problems), problems
    with pytest.raises(TransformError):
        transform(_field(**rule) if isinstance(rule, dict) else
                  FieldMapping(1, "c", "p", Direction.BIDIRECTIONAL, None, rule, None, None,
                               None, False, False, False, False, 0),
                  "x", Direction.TO_INTEGRATION)


def test_well_formed_rules_have_no_problems() -> None:
    rule = {"value_map": {"A": 1, "B": 2}, "before": "@", "trim": True, "case": "upper",
            "max_length": 20}
    assert rule_problems(rule) == []
    assert transform(_field(before="@", case="upper"), "ann@x", Direction.FROM_INTEGRATION) \
        == "ANN"


def test_constants_are_exact() -> None:
    f = FieldMapping(1, None, "p", Direction.TO_INTEGRATION, "12.50", {}, None, None, None,
                     False, False, False, False, 0)
    assert constant(f) == Decimal("12.50")


def test_metadata_facets_are_read() -> None:
    xml = """<?xml version="1.0"?>
    <edmx:Edmx xmlns:edmx="http://docs.oasis-open.org/odata/ns/edmx" Version="4.0">
     <edmx:DataServices><Schema xmlns="http://docs.oasis-open.org/odata/ns/edm" Namespace="n">
      <EntityType Name="a"><Key><PropertyRef Name="id"/></Key>
       <Property Name="id" Type="Edm.Guid"/>
       <Property Name="amount" Type="Edm.Decimal" Precision="19" Scale="4"/>
       <Property Name="open" Type="Edm.Decimal" Scale="Variable"/>
       <Property Name="name" Type="Edm.String" MaxLength="20"/>
      </EntityType>
      <EntityContainer Name="c"><EntitySet Name="as" EntityType="n.a"/></EntityContainer>
     </Schema></edmx:DataServices></edmx:Edmx>"""
    props = parse(xml)["as"].properties
    assert (props["amount"].precision, props["amount"].scale) == (19, 4)
    assert (props["open"].precision, props["open"].scale) == (None, None)
    assert props["name"].max_length == 20


# -- check and the conversions agree ---------------------------------------------------
LOCAL_SAMPLES: dict[str, tuple[Any, Any]] = {  # kind: (column type, a value read from it)
    "text": (sa.String(40), "00000000-0000-0000-0000-000000000001"),
    "integer": (sa.Integer(), 7), "number": (sa.Numeric(10, 2), Decimal("7.00")),
    "boolean": (sa.Boolean(), True), "date": (sa.Date(), date(2024, 1, 2)),
    "datetime": (sa.DateTime(timezone=True), datetime(2024, 1, 2, tzinfo=UTC)),
    "time": (sa.Time(), time(8, 30)), "uuid": (sa.Uuid(), uuid.UUID(int=1)),
    "binary": (sa.LargeBinary(), b"\x01"),
}
REMOTE_SAMPLES: dict[str, Any] = {  # EDM type: a value read from it
    "Edm.String": "7", "Edm.Int32": 7, "Edm.Decimal": Decimal("7.00"), "Edm.Boolean": True,
    "Edm.Date": "2024-01-02", "Edm.DateTimeOffset": "2024-01-02T00:00:00Z",
    "Edm.TimeOfDay": "08:30:00", "Edm.Guid": "00000000-0000-0000-0000-000000000001",
    "Edm.Binary": "AQ==",
}


# check refuses these although some values would fit: a text property holds values that
# are not numbers, a decimal property values that are not whole; binary is not text
STRICTER = {("Edm.String", "integer"), ("Edm.String", "number"), ("Edm.Decimal", "integer"),
            ("Edm.Binary", "text")}


@pytest.mark.parametrize("edm", list(REMOTE_SAMPLES))
@pytest.mark.parametrize("kind", list(LOCAL_SAMPLES))
def test_what_check_allows_converts_and_what_it_refuses_does_not(kind: str, edm: str) -> None:
    column_type, value = LOCAL_SAMPLES[kind]
    column, prop = _column(column_type), PropertyInfo("p", edm)
    try:
        to_remote(value, prop)
        sent = True
    except ValueRefused:
        sent = False
    assert sent == (to_remote_problem(column, prop) is None), (kind, edm)
    if edm in REMOTE_SAMPLES:
        try:
            to_local(REMOTE_SAMPLES[edm], column)
            stored = True
        except ValueRefused:
            stored = False
        if to_local_problem(prop, column) is not None and (edm, kind) not in STRICTER:
            assert not stored, (edm, kind)
        if to_local_problem(prop, column) is None:
            assert stored, (edm, kind)


_VALUES = st.one_of(
    st.none(), st.text(max_size=30), st.integers(-2**40, 2**40), st.booleans(),
    st.decimals(allow_nan=False, allow_infinity=False, places=4, max_value=10**12,
                min_value=-10**12),
    st.floats(allow_nan=False, allow_infinity=False), st.dates(), st.uuids(),
    st.just(Unreadable("c", "10000-01-01")))
_RULES = [{}, {"trim": True}, {"case": "upper", "max_length": 4},
          {"value_map": {"1": "one", "x": 7}}, {"before": ","}]
_PROPS = [None, TEXT, PropertyInfo("p", "Edm.String"), MONEY, _prop("Edm.Int32"),
          _prop("Edm.Boolean"), _prop("Edm.Date"), _prop("Edm.Guid")]


def _outcome(convert: Any, value: Any) -> Any:
    try:
        return ("sent", convert(value))
    except (ValueError, TypeError, ArithmeticError) as exc:
        return ("refused", type(exc), str(exc))


@pytest.mark.parametrize("rule", _RULES)
@pytest.mark.parametrize("prop", _PROPS)
@given(value=st.one_of(st.text(max_size=30), _VALUES),
       max_length=st.sampled_from([None, 0, 3, 10]))
def test_a_fields_converter_sends_what_its_rule_and_type_give(
        value: Any, rule: dict[str, Any], prop: PropertyInfo | None,
        max_length: int | None) -> None:
    """The converter a chunk chooses once per field (text to a text property with no rule
    goes as it is, cut) sends exactly what the field's rule and its property's type give
    a value, and refuses what they refuse, with the same message."""
    f = _field(**rule)

    def each_step(v: Any) -> Any:
        if isinstance(v, Unreadable):
            raise ValueRefused(str(v))
        return to_remote(transform(f, v, Direction.TO_INTEGRATION, max_length), prop)

    assert _outcome(to_remote_converter(f, prop, max_length), value) == \
        _outcome(each_step, value)
