"""Lookups: ``@odata.bind`` on write, ``_x_value`` on read, filters on lookups."""

from __future__ import annotations

import uuid

import requests

from tests.emulator.helpers import create
from worker.emulator import EmulatorServer


def test_bind_and_read_back(emulator: EmulatorServer,
                            emulator_session: requests.Session) -> None:
    base = emulator.base_url
    currency = create(emulator_session, emulator, "transactioncurrencies",
                      {"isocurrencycode": "EUR", "currencyname": "Euro"})
    user = create(emulator_session, emulator, "systemusers",
                  {"firstname": "Max", "lastname": "Vogel"})
    account = create(emulator_session, emulator, "accounts", {
        "name": "Contoso",
        "transactioncurrencyid@odata.bind": f"/transactioncurrencies({currency})",
        "ownerid@odata.bind": f"{base}/systemusers({user})",  # absolute URLs work too
    })
    record = emulator_session.get(
        f"{base}/accounts({account})",
        headers={"Prefer": 'odata.include-annotations="*"'}).json()
    assert record["_transactioncurrencyid_value"] == currency
    assert record["_ownerid_value"] == user
    assert record["_ownerid_value@Microsoft.Dynamics.CRM.lookuplogicalname"] == "systemuser"

    found = emulator_session.get(f"{base}/accounts", params={
        "$filter": f"_transactioncurrencyid_value eq {currency}", "$select": "name"}).json()
    assert [r["name"] for r in found["value"]] == ["Contoso"]


def test_polymorphic_customer_of_a_contact(emulator: EmulatorServer,
                                           emulator_session: requests.Session) -> None:
    account = create(emulator_session, emulator, "accounts", {"name": "Contoso"})
    contact = create(emulator_session, emulator, "contacts", {
        "lastname": "Meyer", "parentcustomerid_account@odata.bind": f"/accounts({account})"})
    record = emulator_session.get(
        f"{emulator.base_url}/contacts({contact})",
        headers={"Prefer": 'odata.include-annotations="*"'}).json()
    assert record["_parentcustomerid_value"] == account
    assert record["_parentcustomerid_value@Microsoft.Dynamics.CRM.lookuplogicalname"] == "account"
    wrong_target = emulator_session.patch(
        f"{emulator.base_url}/contacts({contact})",
        json={"parentcustomerid_account@odata.bind": f"/contacts({contact})"})
    assert wrong_target.status_code == 400


def test_bind_to_a_missing_record_is_refused(emulator: EmulatorServer,
                                             emulator_session: requests.Session) -> None:
    missing = str(uuid.uuid4())
    response = emulator_session.post(f"{emulator.base_url}/accounts", json={
        "name": "A", "transactioncurrencyid@odata.bind": f"/transactioncurrencies({missing})"})
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "0x80040217" and "transactioncurrency" in error["message"]
    assert emulator.store.count("accounts") == 0
    unknown_nav = emulator_session.post(f"{emulator.base_url}/accounts", json={
        "currency@odata.bind": f"/transactioncurrencies({missing})"})
    assert unknown_nav.status_code == 400


def test_bind_by_alternate_key_and_unbind(emulator: EmulatorServer,
                                          emulator_session: requests.Session) -> None:
    currency = create(emulator_session, emulator, "transactioncurrencies",
                      {"isocurrencycode": "USD"})
    account = create(emulator_session, emulator, "accounts", {
        "name": "A", "transactioncurrencyid@odata.bind":
            "/transactioncurrencies(isocurrencycode='USD')"})
    url = f"{emulator.base_url}/accounts({account})"
    assert emulator_session.get(url).json()["_transactioncurrencyid_value"] == currency
    emulator_session.patch(url, json={"transactioncurrencyid@odata.bind": None})
    assert emulator_session.get(url).json()["_transactioncurrencyid_value"] is None


def test_deleting_a_target_clears_lookups_and_bumps_versions(
        emulator: EmulatorServer, emulator_session: requests.Session) -> None:
    account = create(emulator_session, emulator, "accounts", {"name": "Contoso"})
    contact = create(emulator_session, emulator, "contacts", {
        "lastname": "Meyer", "parentcustomerid_account@odata.bind": f"/accounts({account})"})
    url = f"{emulator.base_url}/contacts({contact})"
    before = emulator_session.get(url).json()["versionnumber"]
    emulator_session.delete(f"{emulator.base_url}/accounts({account})")
    after = emulator_session.get(url).json()
    assert after["_parentcustomerid_value"] is None
    assert after["versionnumber"] > before  # a change a delta reader can see
