"""OData literals and filter building: a value can never change the filter's structure."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.remote import filters
from worker.remote.filters import FilterError, and_, eq, ge, key_in, literal, or_


@pytest.mark.parametrize(("value", "text"), [
    (None, "null"),
    (True, "true"),
    (False, "false"),
    (0, "0"),
    (-42, "-42"),
    (1.5, "1.5"),
    (Decimal("12.3400"), "12.3400"),
    (Decimal("1E+3"), "1000"),
    (uuid.UUID("6F9619FF-8B86-D011-B42D-00C04FC964FF"), "6f9619ff-8b86-d011-b42d-00c04fc964ff"),
    (date(2024, 2, 29), "2024-02-29"),
    ("plain", "'plain'"),
    ("", "''"),
])
def test_literals(value: object, text: str) -> None:
    assert literal(value) == text


def test_quotes_are_doubled() -> None:
    assert literal("O'Brien") == "'O''Brien'"
    assert eq("name", "x' or 1 eq 1 or name eq '") == \
        "name eq 'x'' or 1 eq 1 or name eq '''"


@given(st.text())
def test_a_string_literal_is_one_token(value: str) -> None:
    text = literal(value)
    assert text.startswith("'") and text.endswith("'")
    inner = text[1:-1]
    # Every quote inside comes in a pair, so the literal cannot end early.
    assert inner.replace("''", "").count("'") == 0
    assert inner.replace("''", "'") == value


def test_datetimes_are_utc_with_z() -> None:
    cet = timezone(timedelta(hours=1))
    assert literal(datetime(2024, 1, 2, 4, 4, 5, tzinfo=cet)) == "2024-01-02T03:04:05Z"
    assert literal(datetime(2024, 1, 2, 3, 4, 5, 120000, tzinfo=UTC)) == \
        "2024-01-02T03:04:05.12Z"


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(FilterError, match="no time zone"):
        literal(datetime(2024, 1, 2))


@pytest.mark.parametrize("value", [float("nan"), float("inf"), Decimal("NaN"), object(), b"x"])
def test_unwritable_values(value: object) -> None:
    with pytest.raises(FilterError):
        literal(value)


def test_property_names_are_checked() -> None:
    assert eq("parentcustomerid/name", 1) == "parentcustomerid/name eq 1"
    for bad in ("name eq 1 or x", "na'me", "", "1abc", "a//b", "a)"):
        with pytest.raises(FilterError):
            eq(bad, 1)


def test_and_or_parenthesise_and_skip_empty() -> None:
    assert and_() is None
    assert and_(None, "") is None
    assert and_("a eq 1") == "a eq 1"
    assert and_("a eq 1", None, "b eq 2 or c eq 3") == "(a eq 1) and (b eq 2 or c eq 3)"
    assert or_(eq("a", 1), eq("b", "x")) == "(a eq 1) or (b eq 'x')"
    assert filters.not_("a eq 1") == "not (a eq 1)"


def test_comparisons() -> None:
    since = datetime(2024, 1, 1, tzinfo=UTC)
    assert ge("modifiedon", since) == "modifiedon ge 2024-01-01T00:00:00Z"
    assert filters.gt("n", 1) == "n gt 1"
    assert filters.lt("n", 1) == "n lt 1"
    assert filters.le("n", 1) == "n le 1"
    assert filters.ne("n", None) == "n ne null"


def test_keys() -> None:
    g = "6F9619FF-8B86-D011-B42D-00C04FC964FF"
    assert filters.key_literal(g) == g.lower()
    assert filters.key_literal("A'1", "string") == "'A''1'"
    assert filters.key_literal("42", "int") == "42"
    for bad, kind in ((g + "') or (1", "guid"), ("abc", "guid"), ("4x", "int"), (True, "int")):
        with pytest.raises(FilterError):
            filters.key_literal(bad, kind)  # type: ignore[arg-type]


def test_key_in() -> None:
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    assert key_in("accountid", [a, b]) == f"accountid eq {a} or accountid eq {b}"
    assert key_in("ID", ["x'y"], "string") == "ID eq 'x''y'"
    assert key_in("ID", []) is None


def test_orderby() -> None:
    assert filters.orderby("modifiedon", "accountid") == "modifiedon asc,accountid asc"
    assert filters.orderby("n", descending=True) == "n desc"
