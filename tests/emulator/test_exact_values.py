"""Exact values: numbers, dates and date-times go in and come back with every digit, on the
wire and in the store; a value a property cannot hold is refused naming the property, never
rounded."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.emulator.helpers import create
from worker.emulator import EmulatorServer, start_emulator

EDM = "{http://docs.oasis-open.org/odata/ns/edm}"
INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)


def post_raw(session: requests.Session, server: EmulatorServer, set_name: str,
             body: str) -> requests.Response:
    """A create whose body is sent as written: the number literals are exactly these."""
    return session.post(f"{server.base_url}/{set_name}", data=body.encode(),
                        headers={"Content-Type": "application/json"})


def read_raw(session: requests.Session, server: EmulatorServer, set_name: str, key: str,
             select: str) -> dict[str, Any]:
    """A record parsed with every fraction as Decimal, as an exact client reads it."""
    response = session.get(f"{server.base_url}/{set_name}({key})", params={"$select": select})
    assert response.status_code == 200, response.text
    doc: dict[str, Any] = json.loads(response.text, parse_float=Decimal)
    return doc


@pytest.mark.parametrize("literal", [
    "999999999999999.9999", "-999999999999999.9999",  # money's limits: 19 digits, 4 decimals
    "99999999999999.99",  # numeric(18,2) that float turned into ...98
    "0.0001", "-0.0001", "0", "123.4500",
])
def test_money_round_trips_with_every_digit(emulator: EmulatorServer,
                                            emulator_session: requests.Session,
                                            literal: str) -> None:
    created = post_raw(emulator_session, emulator, "accounts",
                       f'{{"name": "M", "creditlimit": {literal}}}')
    assert created.status_code == 204, created.text
    key = created.headers["OData-EntityId"].rsplit("(", 1)[1].rstrip(")")
    response = emulator_session.get(f"{emulator.base_url}/accounts({key})",
                                    params={"$select": "creditlimit"})
    assert f'"creditlimit":{literal}' in response.text  # the literal itself on the wire
    assert emulator.store.require("accounts", key)["creditlimit"] == Decimal(literal)


@pytest.mark.parametrize("literal", ["9999999999999999.99", "-9999999999999999.99", "0.01"])
@pytest.mark.parametrize("emulator_profile", ["dataverse", "odata"], indirect=True)
def test_numeric_18_2_round_trips_at_its_limits(emulator: EmulatorServer,
                                                emulator_session: requests.Session,
                                                literal: str) -> None:
    created = post_raw(emulator_session, emulator, "accounts", f'{{"new_balance": {literal}}}')
    assert created.status_code == 204, created.text
    key = created.headers["OData-EntityId"].rsplit("(", 1)[1].rstrip(")")
    response = emulator_session.get(f"{emulator.base_url}/accounts({key})",
                                    params={"$select": "new_balance"})
    assert f'"new_balance":{literal}' in response.text
    found = emulator_session.get(f"{emulator.base_url}/accounts", params={
        "$filter": f"new_balance eq {literal}", "$select": "new_balance"}).json()["value"]
    assert len(found) == 1
    too_big = post_raw(emulator_session, emulator, "accounts",
                       '{"new_balance": 99999999999999999.99}')
    assert too_big.status_code == 400 and "'new_balance'" in too_big.text


@pytest.mark.parametrize(("prop", "literal", "said"), [
    ("creditlimit", "9999999999999999.99", "16 digits before the point"),  # numeric(18,2) max
    ("creditlimit", "1000000000000000", "at most 15"),
    ("creditlimit", "0.00001", "5 decimals"),
    ("revenue", "-12.34567", "at most 4"),
    ("exchangerate", "1.00000000001", "11 decimals"),
])
def test_a_decimal_the_property_cannot_hold_is_refused_not_rounded(
        emulator: EmulatorServer, emulator_session: requests.Session,
        prop: str, literal: str, said: str) -> None:
    set_name = "transactioncurrencies" if prop == "exchangerate" else "accounts"
    response = post_raw(emulator_session, emulator, set_name, f'{{"{prop}": {literal}}}')
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert f"'{prop}'" in message and said in message and literal in message
    assert emulator.store.count(set_name) == 0


def test_trailing_zeros_beyond_the_scale_are_not_a_loss(
        emulator: EmulatorServer, emulator_session: requests.Session) -> None:
    created = post_raw(emulator_session, emulator, "accounts", '{"creditlimit": 1.500000}')
    assert created.status_code == 204
    key = created.headers["OData-EntityId"].rsplit("(", 1)[1].rstrip(")")
    assert read_raw(emulator_session, emulator, "accounts", key,
                    "creditlimit")["creditlimit"] == Decimal("1.5")


@pytest.mark.parametrize(("prop", "value"), [
    ("numberofemployees", INT32[0]), ("numberofemployees", INT32[1]),
    ("new_externalsequence", INT64[0]), ("new_externalsequence", INT64[1]),
])
def test_whole_numbers_round_trip_at_their_limits(
        emulator: EmulatorServer, emulator_session: requests.Session,
        prop: str, value: int) -> None:
    key = create(emulator_session, emulator, "accounts", {prop: value})
    assert read_raw(emulator_session, emulator, "accounts", key, prop)[prop] == value
    found = emulator_session.get(f"{emulator.base_url}/accounts", params={
        "$filter": f"{prop} eq {value}", "$select": prop}).json()["value"]
    assert [r[prop] for r in found] == [value]


@pytest.mark.parametrize(("prop", "literal"), [
    ("numberofemployees", str(INT32[1] + 1)), ("numberofemployees", str(INT32[0] - 1)),
    ("new_externalsequence", str(INT64[1] + 1)), ("new_externalsequence", str(INT64[0] - 1)),
    ("numberofemployees", "1.5"),
])
def test_a_whole_number_out_of_range_is_refused(
        emulator: EmulatorServer, emulator_session: requests.Session,
        prop: str, literal: str) -> None:
    response = post_raw(emulator_session, emulator, "accounts", f'{{"{prop}": {literal}}}')
    assert response.status_code == 400
    assert f"'{prop}'" in response.json()["error"]["message"]


@pytest.mark.parametrize(("sent", "dataverse", "odata"), [
    ("0001-01-01T00:00:00Z", "0001-01-01T00:00:00Z", "0001-01-01T00:00:00Z"),
    ("9999-12-31T23:59:59Z", "9999-12-31T23:59:59Z", "9999-12-31T23:59:59Z"),
    ("2026-11-26T10:00:00.123456+02:00", "2026-11-26T08:00:00Z", "2026-11-26T08:00:00.123456Z"),
    ("2026-03-29T01:30:00-05:30", "2026-03-29T07:00:00Z", "2026-03-29T07:00:00Z"),
])
@pytest.mark.parametrize("emulator_profile", ["dataverse", "odata"], indirect=True)
def test_date_times_are_stored_in_utc_as_each_server_keeps_them(
        emulator: EmulatorServer, emulator_session: requests.Session, emulator_profile: str,
        sent: str, dataverse: str, odata: str) -> None:
    key = create(emulator_session, emulator, "accounts", {"lastonholdtime": sent})
    back = read_raw(emulator_session, emulator, "accounts", key, "lastonholdtime")
    assert back["lastonholdtime"] == {"dataverse": dataverse, "odata": odata}[emulator_profile]


@pytest.mark.parametrize("sent", ["9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00",
                                  "2026-11-26T10:00:00", "2026-02-30T00:00:00Z"])
def test_a_date_time_that_cannot_be_stored_is_refused(
        emulator: EmulatorServer, emulator_session: requests.Session, sent: str) -> None:
    response = emulator_session.post(f"{emulator.base_url}/accounts",
                                     json={"lastonholdtime": sent})
    assert response.status_code == 400
    assert "'lastonholdtime'" in response.json()["error"]["message"]


@pytest.mark.parametrize("day", ["0001-01-01", "9999-12-31", "2024-02-29"])
def test_dates_round_trip_and_filter(emulator: EmulatorServer,
                                     emulator_session: requests.Session, day: str) -> None:
    key = create(emulator_session, emulator, "contacts", {"lastname": "D", "birthdate": day})
    assert read_raw(emulator_session, emulator, "contacts", key, "birthdate")["birthdate"] == day
    found = emulator_session.get(f"{emulator.base_url}/contacts", params={
        "$filter": f"birthdate eq {day}", "$select": "lastname"}).json()["value"]
    assert len(found) == 1
    assert emulator_session.post(f"{emulator.base_url}/contacts", json={
        "birthdate": "2023-02-29"}).status_code == 400


def test_decimal_filters_compare_exactly(emulator: EmulatorServer,
                                        emulator_session: requests.Session) -> None:
    for literal in ("99999999999999.98", "99999999999999.99", "999999999999999.9999"):
        assert post_raw(emulator_session, emulator, "accounts",
                        f'{{"name": "{literal}", "creditlimit": {literal}}}').status_code == 204

    def names(condition: str) -> list[str]:
        rows = emulator_session.get(f"{emulator.base_url}/accounts", params={
            "$filter": condition, "$select": "name", "$orderby": "creditlimit"}).json()
        return [r["name"] for r in rows["value"]]

    assert names("creditlimit eq 99999999999999.99") == ["99999999999999.99"]
    assert names("creditlimit gt 99999999999999.98") == ["99999999999999.99",
                                                           "999999999999999.9999"]
    assert names("creditlimit lt 999999999999999.9999") == ["99999999999999.98",
                                                             "99999999999999.99"]
    assert names("creditlimit eq 99999999999999.990") == ["99999999999999.99"]


def test_metadata_declares_precision_and_scale_like_dataverse(
        emulator: EmulatorServer, emulator_session: requests.Session) -> None:
    root = ET.fromstring(emulator_session.get(f"{emulator.base_url}/$metadata").content)
    props = {(t.get("Name"), p.get("Name")): p.attrib for t in root.iter(f"{EDM}EntityType")
             for p in t.iter(f"{EDM}Property")}
    money = props[("account", "creditlimit")]
    assert (money["Type"], money["Precision"], money["Scale"]) == ("Edm.Decimal", "19", "4")
    rate = props[("transactioncurrency", "exchangerate")]
    assert (rate["Precision"], rate["Scale"]) == ("23", "10")
    assert props[("account", "new_externalsequence")]["Type"] == "Edm.Int64"
    assert props[("contact", "birthdate")]["Type"] == "Edm.Date"


def test_the_data_file_keeps_every_digit(tmp_path: Path) -> None:
    data_file = tmp_path / "crm.json"
    server = start_emulator(data_file=data_file)
    try:
        created = requests.post(f"{server.base_url}/accounts",
                                data=b'{"creditlimit": 999999999999999.9999}',
                                headers={"Content-Type": "application/json"})
        assert created.status_code == 204
    finally:
        server.stop()
    assert "999999999999999.9999" in data_file.read_text()
    again = start_emulator(data_file=data_file)
    try:
        (record,) = again.store.scan("accounts", None)
        assert record["creditlimit"] == Decimal("999999999999999.9999")
    finally:
        again.stop()
