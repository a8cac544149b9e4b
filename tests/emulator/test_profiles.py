"""The generic OData v4 profile (``--profile odata``): the behaviours in which it differs
from Dataverse, each seen as a client sees it over HTTP."""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from typing import Any
from urllib.parse import urljoin

import pytest
import requests

from tests.emulator.helpers import batch, batch_statuses, http_part
from tests.fixtures.emulator import start_emulator_for
from worker.emulator import EmulatorServer
from worker.emulator.values import Changes

EDM = "{http://docs.oasis-open.org/odata/ns/edm}"


def post(session: requests.Session, server: EmulatorServer, set_name: str,
         body: dict[str, Any], **headers: str) -> requests.Response:
    return session.post(f"{server.base_url}/{set_name}", json=body, headers=headers)


def test_keys_and_stamps_are_named_as_a_generic_service_names_them(
        emulator_odata: EmulatorServer, odata_session: requests.Session) -> None:
    key = str(uuid.uuid4())
    created = post(odata_session, emulator_odata, "accounts", {"ID": key, "name": "Contoso"})
    assert created.status_code == 204
    assert created.headers["OData-EntityId"].endswith(f"/accounts({key})")
    record = odata_session.get(f"{emulator_odata.base_url}/accounts({key})").json()
    assert record["ID"] == key and record["name"] == "Contoso"
    assert "modifiedAt" in record and "accountid" not in record and "modifiedon" not in record
    found = odata_session.get(f"{emulator_odata.base_url}/accounts", params={
        "$filter": f"modifiedAt le {record['modifiedAt']}", "$select": "ID"}).json()
    assert [r["ID"] for r in found["value"]] == [key]


def test_a_duplicate_key_on_post_is_a_500_and_changes_nothing(
        emulator_odata: EmulatorServer, odata_session: requests.Session) -> None:
    key = str(uuid.uuid4())
    assert post(odata_session, emulator_odata, "accounts",
                {"ID": key, "name": "first"}).status_code == 204
    version = emulator_odata.store.require("accounts", key)["versionnumber"]
    again = post(odata_session, emulator_odata, "accounts", {"ID": key, "name": "second"})
    assert again.status_code == 500
    assert "UNIQUE constraint" in again.json()["error"]["message"]
    stored = emulator_odata.store.require("accounts", key)
    assert (stored["name"], stored["versionnumber"]) == ("first", version)
    assert emulator_odata.store.count("accounts") == 1


def test_dataverse_answers_the_same_duplicate_with_412(
        emulator: EmulatorServer, emulator_session: requests.Session) -> None:
    key = str(uuid.uuid4())
    assert post(emulator_session, emulator, "accounts", {"accountid": key}).status_code == 204
    assert post(emulator_session, emulator, "accounts", {"accountid": key}).status_code == 412


def read_pages(session: requests.Session, url: str, page_size: int,
               params: dict[str, str] | None = None) -> list[list[dict[str, Any]]]:
    """Every page, following (relative or absolute) next links as a client resolves them."""
    headers = {"Prefer": f"odata.maxpagesize={page_size}"}
    pages, response = [], session.get(url, params=params, headers=headers)
    while True:
        assert response.status_code == 200, response.text
        doc = response.json()
        pages.append(doc["value"])
        if "@odata.nextLink" not in doc:
            return pages
        assert "$skiptoken=" in doc["@odata.nextLink"]
        response = session.get(urljoin(response.url, doc["@odata.nextLink"]), headers=headers)


def test_pages_are_the_servers_own_size_whatever_the_client_prefers() -> None:
    server = start_emulator_for("odata", page_size=40)
    try:
        for n in range(100):
            server.store.create("accounts", Changes(values={"name": f"A{n:03d}"}))
        with requests.Session() as session:
            first = session.get(f"{server.base_url}/accounts",
                                headers={"Prefer": "odata.maxpagesize=7"})
            assert "Preference-Applied" not in first.headers
            next_link = first.json()["@odata.nextLink"]
            assert not next_link.startswith("http")  # relative to the service root
            pages = read_pages(session, f"{server.base_url}/accounts", 7,
                               {"$select": "name", "$orderby": "name"})
    finally:
        server.stop()
    assert [len(p) for p in pages] == [40, 40, 20]
    names = [r["name"] for page in pages for r in page]
    assert names == [f"A{n:03d}" for n in range(100)]


def test_dataverse_pages_by_the_clients_preference(emulator: EmulatorServer,
                                                   emulator_session: requests.Session) -> None:
    for n in range(10):
        emulator.store.create("accounts", Changes(values={"name": f"A{n}"}))
    pages = read_pages(emulator_session, f"{emulator.base_url}/accounts", 4)
    assert [len(p) for p in pages] == [4, 4, 2]


def test_batch_parts_must_be_relative_to_the_service_root(
        emulator_odata: EmulatorServer, odata_session: requests.Session) -> None:
    base = emulator_odata.base_url
    content_type, body = batch([
        http_part("POST", "accounts", {"ID": str(uuid.uuid4()), "name": "relative"}),
        http_part("POST", f"{base}/accounts", {"ID": str(uuid.uuid4()), "name": "absolute"}),
        http_part("POST", "/api/data/v9.2/accounts", {"ID": str(uuid.uuid4()), "name": "path"}),
    ])
    response = odata_session.post(f"{base}/$batch", data=body, headers={
        "Content-Type": content_type, "Prefer": "odata.continue-on-error"})
    assert response.status_code == 200
    assert batch_statuses(response) == [204, 404, 404]
    assert "Invalid resource path" in response.text
    assert [r["name"] for r in emulator_odata.store.scan("accounts", None)] == ["relative"]


def test_batch_change_set_with_content_id_references_works_relatively(
        emulator_odata: EmulatorServer, odata_session: requests.Session) -> None:
    account = str(uuid.uuid4())
    content_type, body = batch([[
        http_part("POST", "accounts", {"ID": account, "name": "Contoso"}, content_id="1"),
        http_part("POST", "contacts", {"ID": str(uuid.uuid4()), "lastname": "Meyer",
                                       "parentcustomerid_account@odata.bind": "$1"}),
        http_part("PATCH", "$1", {"telephone1": "123"}),
    ]])
    response = odata_session.post(f"{emulator_odata.base_url}/$batch", data=body,
                                  headers={"Content-Type": content_type})
    assert batch_statuses(response) == [204, 204, 204]
    contact = emulator_odata.store.scan("contacts", None)[0]
    assert contact["parentcustomerid_account_ID"] == account
    assert emulator_odata.store.require("accounts", account)["telephone1"] == "123"


def test_return_representation_is_not_honoured(emulator_odata: EmulatorServer,
                                               odata_session: requests.Session) -> None:
    created = post(odata_session, emulator_odata, "accounts", {"name": "A"},
                   Prefer="return=representation")
    assert created.status_code == 204 and created.content == b""
    assert "Preference-Applied" not in created.headers
    url = created.headers["OData-EntityId"]
    updated = odata_session.patch(url, json={"name": "B"},
                                  headers={"Prefer": "return=representation"})
    assert updated.status_code == 204 and updated.content == b""


def test_lookups_bind_by_navigation_property_and_read_back_as_nav_id(
        emulator_odata: EmulatorServer, odata_session: requests.Session) -> None:
    base = emulator_odata.base_url
    currency, account = str(uuid.uuid4()), str(uuid.uuid4())
    post(odata_session, emulator_odata, "transactioncurrencies",
         {"ID": currency, "isocurrencycode": "EUR"})
    created = post(odata_session, emulator_odata, "accounts", {
        "ID": account, "name": "Contoso",
        "transactioncurrencyid@odata.bind": f"transactioncurrencies({currency})"})
    assert created.status_code == 204, created.text
    record = odata_session.get(f"{base}/accounts({account})",
                               headers={"Prefer": 'odata.include-annotations="*"'}).json()
    assert record["transactioncurrencyid_ID"] == currency
    assert "_transactioncurrencyid_value" not in record
    assert not any("lookuplogicalname" in name for name in record)
    found = odata_session.get(f"{base}/accounts", params={
        "$filter": f"transactioncurrencyid_ID eq {currency}", "$select": "name"}).json()
    assert [r["name"] for r in found["value"]] == ["Contoso"]
    odata_session.patch(f"{base}/accounts({account})",
                        json={"transactioncurrencyid@odata.bind": None})
    assert odata_session.get(f"{base}/accounts({account})").json()[
        "transactioncurrencyid_ID"] is None


def test_a_polymorphic_dataverse_lookup_is_one_association_per_target(
        emulator_odata: EmulatorServer, odata_session: requests.Session) -> None:
    account = str(uuid.uuid4())
    post(odata_session, emulator_odata, "accounts", {"ID": account, "name": "Contoso"})
    contact = str(uuid.uuid4())
    post(odata_session, emulator_odata, "contacts", {
        "ID": contact, "lastname": "Meyer",
        "parentcustomerid_account@odata.bind": f"/accounts({account})"})
    record = odata_session.get(f"{emulator_odata.base_url}/contacts({contact})").json()
    assert record["parentcustomerid_account_ID"] == account
    assert record["parentcustomerid_contact_ID"] is None
    odata_session.delete(f"{emulator_odata.base_url}/accounts({account})")
    record = odata_session.get(f"{emulator_odata.base_url}/contacts({contact})").json()
    assert record["parentcustomerid_account_ID"] is None


def test_metadata_names_key_id_and_foreign_keys(emulator_odata: EmulatorServer,
                                                odata_session: requests.Session) -> None:
    root = ET.fromstring(odata_session.get(f"{emulator_odata.base_url}/$metadata").content)
    account = next(t for t in root.iter(f"{EDM}EntityType") if t.get("Name") == "account")
    key = account.find(f"{EDM}Key/{EDM}PropertyRef")
    assert key is not None and key.get("Name") == "ID"
    props = {p.get("Name"): p.attrib for p in account.iter(f"{EDM}Property")}
    assert props["modifiedAt"]["Type"] == "Edm.DateTimeOffset"
    assert props["transactioncurrencyid_ID"]["Type"] == "Edm.Guid"
    assert (props["creditlimit"]["Precision"], props["creditlimit"]["Scale"]) == ("19", "4")
    assert "accountid" not in props and "_transactioncurrencyid_value" not in props
    nav = next(n for n in account.iter(f"{EDM}NavigationProperty")
               if n.get("Name") == "transactioncurrencyid")
    constraint = nav.find(f"{EDM}ReferentialConstraint")
    assert constraint is not None
    assert (constraint.get("Property"), constraint.get("ReferencedProperty")) == (
        "transactioncurrencyid_ID", "ID")


@pytest.mark.parametrize("path", ["accounts(accountnumber='C1')", "WhoAmI"])
def test_dataverse_only_addresses_are_not_there(emulator_odata: EmulatorServer,
                                                odata_session: requests.Session,
                                                path: str) -> None:
    response = odata_session.get(f"{emulator_odata.base_url}/{path}")
    assert response.status_code in (400, 404)
    assert "error" in response.json()


def test_change_tracking_is_not_offered(emulator_odata: EmulatorServer,
                                        odata_session: requests.Session) -> None:
    response = odata_session.get(f"{emulator_odata.base_url}/accounts",
                                 headers={"Prefer": "odata.track-changes"})
    assert response.status_code == 200
    assert "@odata.deltaLink" not in response.json()


@pytest.mark.parametrize("emulator_profile", ["dataverse", "odata"], indirect=True)
def test_both_profiles_serve_the_same_sets_and_names(
        emulator: EmulatorServer, emulator_session: requests.Session,
        emulator_profile: str) -> None:
    key_name = {"dataverse": "accountid", "odata": "ID"}[emulator_profile]
    key = str(uuid.uuid4())
    assert post(emulator_session, emulator, "accounts",
                {key_name: key, "name": "A", "address1_city": "Berlin"}).status_code == 204
    record = emulator_session.get(f"{emulator.base_url}/accounts({key})").json()
    assert (record[key_name], record["name"], record["address1_city"]) == (key, "A", "Berlin")
    assert emulator.profile.name == emulator_profile


def test_a_duplicate_key_in_a_change_set_fails_it_whole_with_a_500_part(
        emulator_odata: EmulatorServer, odata_session: requests.Session) -> None:
    existing, new = str(uuid.uuid4()), str(uuid.uuid4())
    post(odata_session, emulator_odata, "accounts", {"ID": existing, "name": "there"})
    content_type, body = batch([[
        http_part("POST", "accounts", {"ID": new, "name": "new"}),
        http_part("POST", "accounts", {"ID": existing, "name": "again"}),
    ]])
    response = odata_session.post(f"{emulator_odata.base_url}/$batch", data=body,
                                  headers={"Content-Type": content_type})
    assert response.status_code == 200
    assert batch_statuses(response) == [500]
    assert [r["name"] for r in emulator_odata.store.scan("accounts", None)] == ["there"]
