"""Single-record reads and writes over HTTP, with Dataverse's conditional-request rules."""

from __future__ import annotations

import re
import uuid

import requests

from tests.emulator.helpers import create, entity_key
from worker.emulator import EmulatorServer


def test_create_read_update_delete(emulator: EmulatorServer,
                                   emulator_session: requests.Session) -> None:
    url = f"{emulator.base_url}/accounts"
    key = create(emulator_session, emulator, "accounts",
                 {"name": "Contoso", "accountnumber": "C0001", "address1_city": "Berlin"})

    record = emulator_session.get(f"{url}({key})").json()
    assert record["name"] == "Contoso" and record["accountid"] == key
    assert record["@odata.context"].endswith("$metadata#accounts/$entity")

    updated = emulator_session.patch(f"{url}({key})", json={"address1_city": "Hamburg"})
    assert updated.status_code == 204
    record = emulator_session.get(f"{url}({key})").json()
    assert (record["name"], record["address1_city"]) == ("Contoso", "Hamburg")

    assert emulator_session.delete(f"{url}({key})").status_code == 204
    missing = emulator_session.get(f"{url}({key})")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "0x80040217"
    assert emulator_session.delete(f"{url}({key})").status_code == 404


def test_client_chosen_id_and_duplicate(emulator: EmulatorServer,
                                        emulator_session: requests.Session) -> None:
    key = str(uuid.uuid4())
    url = f"{emulator.base_url}/contacts"
    first = emulator_session.post(url, json={"contactid": key, "lastname": "Meyer"})
    assert first.status_code == 204 and entity_key(first) == key
    again = emulator_session.post(url, json={"contactid": key, "lastname": "Meyer"})
    assert again.status_code == 412
    assert again.json()["error"]["code"] == "0x80040237"


def test_return_representation(emulator: EmulatorServer,
                               emulator_session: requests.Session) -> None:
    response = emulator_session.post(
        f"{emulator.base_url}/contacts", params={"$select": "fullname"},
        json={"firstname": "Ida", "lastname": "Berg"},
        headers={"Prefer": "return=representation"})
    assert response.status_code == 201
    assert response.headers["Preference-Applied"] == "return=representation"
    body = response.json()
    assert body["fullname"] == "Ida Berg"  # computed by the server, as on Dataverse
    assert set(body) == {"@odata.context", "@odata.etag", "contactid", "fullname"}


def test_patch_is_an_upsert(emulator: EmulatorServer,
                            emulator_session: requests.Session) -> None:
    key = str(uuid.uuid4())
    url = f"{emulator.base_url}/products({key})"
    assert emulator_session.patch(url, json={"name": "Bolt", "price": 1.5}).status_code == 204
    assert emulator_session.get(url).json()["price"] == 1.5


def test_if_none_match_creates_only(emulator: EmulatorServer,
                                    emulator_session: requests.Session) -> None:
    url = f"{emulator.base_url}/accounts({uuid.uuid4()})"
    create_only = {"If-None-Match": "*"}
    assert emulator_session.patch(url, json={"name": "A"}, headers=create_only).status_code == 204
    second = emulator_session.patch(url, json={"name": "B"}, headers=create_only)
    assert second.status_code == 412
    assert emulator_session.get(url).json()["name"] == "A"


def test_if_match_star_updates_only(emulator: EmulatorServer,
                                    emulator_session: requests.Session) -> None:
    url = f"{emulator.base_url}/accounts({uuid.uuid4()})"
    update_only = {"If-Match": "*"}
    missing = emulator_session.patch(url, json={"name": "A"}, headers=update_only)
    assert missing.status_code == 404
    assert emulator.store.count("accounts") == 0
    emulator_session.patch(url, json={"name": "A"})
    assert emulator_session.patch(url, json={"name": "B"}, headers=update_only).status_code == 204


def test_if_match_etag_is_optimistic_concurrency(emulator: EmulatorServer,
                                                 emulator_session: requests.Session) -> None:
    key = create(emulator_session, emulator, "accounts", {"name": "A"})
    url = f"{emulator.base_url}/accounts({key})"
    etag = emulator_session.get(url).json()["@odata.etag"]
    assert emulator_session.patch(url, json={"name": "B"},
                                  headers={"If-Match": etag}).status_code == 204
    stale = emulator_session.patch(url, json={"name": "C"}, headers={"If-Match": etag})
    assert stale.status_code == 412
    assert stale.json()["error"]["code"] == "0x80060882"
    assert emulator_session.delete(url, headers={"If-Match": etag}).status_code == 412
    current = emulator_session.get(url)
    assert emulator_session.get(url, headers={"If-None-Match": current.headers["ETag"]}
                                ).status_code == 304


def test_stamps_whole_seconds_and_increasing_versions(emulator: EmulatorServer,
                                                      emulator_session: requests.Session) -> None:
    key = create(emulator_session, emulator, "accounts", {"name": "A"})
    other = create(emulator_session, emulator, "contacts", {"lastname": "B"})
    url = f"{emulator.base_url}/accounts({key})"
    first = emulator_session.get(url).json()
    emulator_session.patch(url, json={"name": "A2"})
    second = emulator_session.get(url).json()
    contact = emulator_session.get(f"{emulator.base_url}/contacts({other})").json()

    stamp = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
    assert stamp.match(first["modifiedon"]) and stamp.match(first["createdon"])
    assert second["createdon"] == first["createdon"]
    assert second["modifiedon"] >= first["modifiedon"]
    # one global counter across sets, as Dataverse's rowversion
    assert first["versionnumber"] < contact["versionnumber"] < second["versionnumber"]
    assert second["@odata.etag"] == f'W/"{second["versionnumber"]}"'


def test_unknown_property_and_too_long_string_are_refused(
        emulator: EmulatorServer, emulator_session: requests.Session) -> None:
    url = f"{emulator.base_url}/accounts"
    unknown = emulator_session.post(url, json={"name": "A", "nmae": "typo"})
    assert unknown.status_code == 400
    assert "nmae" in unknown.json()["error"]["message"]
    too_long = emulator_session.post(url, json={"accountnumber": "X" * 21})
    assert too_long.status_code == 400
    assert too_long.json()["error"]["code"] == "0x80044331"
    wrong_type = emulator_session.post(url, json={"creditlimit": "lots"})
    assert wrong_type.status_code == 400
    read_only = emulator_session.post(url, json={"versionnumber": 5})
    assert read_only.status_code == 400
    assert emulator.store.count("accounts") == 0


def test_alternate_key(emulator: EmulatorServer, emulator_session: requests.Session) -> None:
    url = f"{emulator.base_url}/accounts(accountnumber='C''7')"
    assert emulator_session.patch(url, json={"name": "Quote"}).status_code == 204
    record = emulator_session.get(url).json()
    assert (record["accountnumber"], record["name"]) == ("C'7", "Quote")
    emulator_session.patch(url, json={"name": "Quote 2"})
    assert emulator.store.count("accounts") == 1
    duplicate = emulator_session.post(f"{emulator.base_url}/accounts",
                                      json={"accountnumber": "c'7"})
    assert duplicate.status_code == 412  # alternate keys are unique, ignoring case


def test_unknown_set_and_bad_key(emulator: EmulatorServer,
                                 emulator_session: requests.Session) -> None:
    assert emulator_session.get(f"{emulator.base_url}/widgets").status_code == 404
    assert emulator_session.get(f"{emulator.base_url}/accounts(42)").status_code == 400
    assert emulator_session.put(f"{emulator.base_url}/accounts", json={}).status_code == 405


def test_concurrent_writers_lose_nothing(emulator: EmulatorServer) -> None:
    from concurrent.futures import ThreadPoolExecutor

    def write(n: int) -> int:
        with requests.Session() as session:
            return session.post(f"{emulator.base_url}/accounts",
                                json={"name": f"A{n}", "accountnumber": f"N{n}"}).status_code

    # How fast the emulator takes writes is measured by bench/emulator_bench.py.
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(write, range(100)))
    assert statuses == [204] * 100
    assert emulator.store.count("accounts") == 100
    names = {record["name"] for record in emulator.store.scan("accounts", None)}
    assert names == {f"A{n}" for n in range(100)}
