"""The service document, ``$metadata`` and the other things a client reads first."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import requests

from worker.emulator import EmulatorServer, start_emulator

EDM = "{http://docs.oasis-open.org/odata/ns/edm}"
SETS = {"transactioncurrencies", "systemusers", "uomschedules", "uoms", "accounts",
        "contacts", "products"}


def test_metadata_is_csdl_listing_the_sets(emulator: EmulatorServer,
                                           emulator_session: requests.Session) -> None:
    response = emulator_session.get(f"{emulator.base_url}/$metadata")
    assert response.headers["Content-Type"] == "application/xml"
    root = ET.fromstring(response.content)
    sets = {s.get("Name"): s.get("EntityType") for s in root.iter(f"{EDM}EntitySet")}
    assert set(sets) == SETS
    assert sets["accounts"] == "Microsoft.Dynamics.CRM.account"

    account = next(t for t in root.iter(f"{EDM}EntityType") if t.get("Name") == "account")
    key = account.find(f"{EDM}Key/{EDM}PropertyRef")
    assert key is not None and key.get("Name") == "accountid"
    props = {p.get("Name"): p for p in account.iter(f"{EDM}Property")}
    assert props["name"].get("MaxLength") == "160"
    assert props["modifiedon"].get("Type") == "Edm.DateTimeOffset"
    assert props["_transactioncurrencyid_value"].get("Type") == "Edm.Guid"
    navigation = {n.get("Name"): n.get("Type") for n in account.iter(f"{EDM}NavigationProperty")}
    assert navigation["transactioncurrencyid"] == "mscrm.transactioncurrency"


def test_service_document_and_root_say_test_double(emulator: EmulatorServer,
                                                   emulator_session: requests.Session) -> None:
    doc = emulator_session.get(f"{emulator.base_url}/").json()
    assert {s["name"] for s in doc["value"]} == SETS
    assert "test double" in doc["@crmsync.notice"]
    root = emulator_session.get(f"{emulator.root_url}/").json()
    assert "not a CRM" in root["notice"] and root["auth_required"] is False


def test_sample_users_and_who_am_i() -> None:
    server = start_emulator(sample_users=25)
    try:
        users = requests.get(f"{server.base_url}/systemusers", params={
            "$select": "fullname,internalemailaddress", "$orderby": "fullname"}).json()["value"]
        assert len(users) == 25
        assert len({u["internalemailaddress"] for u in users}) == 25
        assert all(" " in u["fullname"] and "@" in u["internalemailaddress"] for u in users)
        who = requests.get(f"{server.base_url}/WhoAmI").json()
        assert who["UserId"] in {u["systemuserid"] for u in users}
        # the same users, with the same ids, every time
        again = start_emulator(sample_users=25)
        try:
            assert {r["systemuserid"] for r in again.store.scan("systemusers", None)} == {
                u["systemuserid"] for u in users}
        finally:
            again.stop()
    finally:
        server.stop()
