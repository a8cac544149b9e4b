"""``$filter``: the parser on its own (pure), then over HTTP with Dataverse's error shape."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
import requests

from worker.emulator import EmulatorServer
from worker.emulator.filters import FilterError, compile_filter, tokenize
from worker.emulator.schema import Schema

ACCOUNTS = Schema()["accounts"]
GUID = "6f1c1f9e-5d7a-4bb6-8a53-7d0e2c5a9f10"


def account(**values: Any) -> dict[str, Any]:
    record = ACCOUNTS.blank_record()
    record.update(values)
    return record


def matches(text: str, **values: Any) -> bool:
    return compile_filter(text, ACCOUNTS)(account(**values))


def test_string_literal_with_escaped_quotes() -> None:
    [token, end] = tokenize("'O''Brien''s'")
    assert (token.kind, token.value, end.kind) == ("string", "O'Brien's", "end")
    assert matches("name eq 'O''Brien'", name="O'Brien")
    assert not matches("name eq 'O''Brien'", name="OBrien")


def test_literal_kinds() -> None:
    kinds = [(t.kind, t.value) for t in tokenize(
        f"{GUID} 2026-11-25T10:00:00Z 2026-11-25 -12 3.5")[:-1]]
    assert kinds == [
        ("guid", GUID), ("datetime", datetime(2026, 11, 25, 10, tzinfo=UTC)),
        ("datetime", datetime(2026, 11, 25, tzinfo=UTC)), ("number", -12), ("number", 3.5)]


def test_and_binds_tighter_than_or() -> None:
    text = "name eq 'a' or name eq 'b' and statecode eq 1"
    assert matches(text, name="a", statecode=0)      # a or (b and 1)
    assert not matches(text, name="b", statecode=0)
    assert not matches("(name eq 'a' or name eq 'b') and statecode eq 1", name="a", statecode=0)


def test_not_and_functions() -> None:
    assert matches("not contains(name,'corp') and startswith(name,'Con')", name="Contoso")
    assert matches("endswith(name, 'SO')", name="Contoso")  # case-insensitive, like Dataverse
    assert not matches("not (statecode eq 0)", statecode=0)


def test_comparisons_and_null() -> None:
    assert matches("creditlimit ge 100 and creditlimit lt 100.5", creditlimit=100.0)
    assert matches("accountnumber eq null", accountnumber=None)
    assert matches("accountnumber ne null", accountnumber="C1")
    assert not matches("creditlimit gt 5", creditlimit=None)   # ordering against null: false
    stamp = datetime(2026, 11, 25, 10, 0, 1, tzinfo=UTC)
    assert matches("modifiedon gt 2026-11-25T10:00:00Z", modifiedon=stamp)
    assert matches("modifiedon le 2026-11-25T11:00:01+01:00", modifiedon=stamp)
    assert matches(f"_ownerid_value eq {GUID.upper()}", _ownerid_value=GUID)


@pytest.mark.parametrize("text", [
    "name eq 'unterminated",
    "name eq",
    "name eq 'a' and",
    "(name eq 'a'",
    "name eq 'a')",
    "nosuch eq 1",
    "accountid eq 'not-a-guid'",     # incompatible types, as Dataverse says
    "creditlimit eq 'ten'",
    "name",                          # not a boolean expression
    "contains(name)",
    "name eq 'a' # 1",
    "statecode eq 1 eq 1",
])
def test_bad_filters_are_refused(text: str) -> None:
    with pytest.raises(FilterError):
        compile_filter(text, ACCOUNTS)


def test_filter_over_http(emulator: EmulatorServer, emulator_session: requests.Session) -> None:
    url = f"{emulator.base_url}/accounts"
    for name, city in (("O'Neil Ltd", "Berlin"), ("Contoso", "Berlin"), ("Fabrikam", "Paris")):
        emulator_session.post(url, json={"name": name, "address1_city": city})
    response = emulator_session.get(url, params={
        "$filter": "address1_city eq 'Berlin' and (name eq 'O''Neil Ltd' or startswith(name,'x'))",
        "$select": "name"})
    assert [r["name"] for r in response.json()["value"]] == ["O'Neil Ltd"]


def test_bad_filter_over_http_is_a_dataverse_error(emulator: EmulatorServer,
                                                   emulator_session: requests.Session) -> None:
    response = emulator_session.get(f"{emulator.base_url}/accounts",
                                    params={"$filter": "name eq 'a' and"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "0x80060888" and "position" in error["message"]
