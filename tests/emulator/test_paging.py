"""Collection reads: paging with ``@odata.nextLink``, ordering, ``$top``, ``$count``."""

from __future__ import annotations

from collections import Counter

import requests

from tests.emulator.helpers import read_all, seed_accounts
from worker.emulator import EmulatorServer
from worker.emulator.values import Changes


def test_two_thousand_records_in_pages_of_100_each_exactly_once(
        emulator: EmulatorServer, emulator_session: requests.Session) -> None:
    keys = seed_accounts(emulator, 2000)
    response = emulator_session.get(f"{emulator.base_url}/accounts",
                                    params={"$select": "name", "$count": "true"},
                                    headers={"Prefer": "odata.maxpagesize=100"})
    assert response.headers["Preference-Applied"] == "odata.maxpagesize=100"
    assert response.json()["@odata.count"] == 2000
    next_link = response.json()["@odata.nextLink"]
    assert next_link.startswith(f"{emulator.base_url}/accounts?")

    pages = read_all(emulator_session, f"{emulator.base_url}/accounts", 100,
                     {"$select": "name"})
    assert [len(p) for p in pages] == [100] * 20
    seen = [r["accountid"] for page in pages for r in page]
    assert sorted(seen) == sorted(keys)


def test_paging_is_stable_while_records_change(emulator: EmulatorServer,
                                               emulator_session: requests.Session) -> None:
    keys = seed_accounts(emulator, 2000)
    url = f"{emulator.base_url}/accounts"
    headers = {"Prefer": "odata.maxpagesize=100"}
    doc = emulator_session.get(url, params={"$select": "name"}, headers=headers).json()
    seen = Counter(r["accountid"] for r in doc["value"])
    page = 0
    while "@odata.nextLink" in doc:
        page += 1
        # Between pages, another client renames records already read and not yet read,
        # and deletes one not yet read.
        for key in (keys[page], keys[-page], keys[1000 + page]):
            emulator_session.patch(f"{url}({key})", json={"name": f"renamed {page}"})
        deleted = keys[1500 + page]
        emulator_session.delete(f"{url}({deleted})")
        doc = emulator_session.get(doc["@odata.nextLink"], headers=headers).json()
        seen.update(r["accountid"] for r in doc["value"])
    assert max(seen.values()) == 1
    survivors = set(keys) - {keys[1500 + p] for p in range(1, page + 1)}
    assert survivors <= set(seen)


def test_orderby_several_keys_while_paging(emulator: EmulatorServer,
                                           emulator_session: requests.Session) -> None:
    seed_accounts(emulator, 300)
    pages = read_all(emulator_session, f"{emulator.base_url}/accounts", 40, {
        "$select": "address1_city,creditlimit", "$orderby": "address1_city asc,creditlimit desc"})
    rows = [(r["address1_city"], r["creditlimit"]) for p in pages for r in p]
    assert len(rows) == 300
    assert rows == sorted(rows, key=lambda row: (row[0], -row[1]))


def test_incremental_read_by_modifiedon(emulator: EmulatorServer,
                                        emulator_session: requests.Session) -> None:
    """The read crmsync does: modifiedon at or after a stamp, in modifiedon, key order."""
    seed_accounts(emulator, 250)
    stamp = emulator_session.get(f"{emulator.base_url}/accounts",
                                 params={"$top": "1"}).json()["value"][0]["modifiedon"]
    pages = read_all(emulator_session, f"{emulator.base_url}/accounts", 100, {
        "$filter": f"modifiedon ge {stamp}", "$orderby": "modifiedon asc,accountid asc"})
    assert sum(len(p) for p in pages) == 250


def test_top_and_count(emulator: EmulatorServer, emulator_session: requests.Session) -> None:
    seed_accounts(emulator, 30)
    pages = read_all(emulator_session, f"{emulator.base_url}/accounts", 10,
                     {"$top": "25", "$orderby": "name desc"})
    names = [r["name"] for p in pages for r in p]
    assert [len(p) for p in pages] == [10, 10, 5]
    assert names[0] == "Account 00029" and len(set(names)) == 25
    counted = emulator_session.get(f"{emulator.base_url}/accounts", params={
        "$count": "true", "$filter": "address1_city eq 'Berlin'", "$top": "2"}).json()
    assert counted["@odata.count"] == 10 and len(counted["value"]) == 2


def test_select_returns_the_key_and_etag_only_besides_selected(
        emulator: EmulatorServer, emulator_session: requests.Session) -> None:
    emulator.store.create("accounts", Changes(values={"name": "A"}))
    doc = emulator_session.get(f"{emulator.base_url}/accounts",
                               params={"$select": "name"}).json()
    assert doc["@odata.context"].endswith("$metadata#accounts(name)")
    assert set(doc["value"][0]) == {"@odata.etag", "accountid", "name"}
    bad = emulator_session.get(f"{emulator.base_url}/accounts", params={"$select": "nope"})
    assert bad.status_code == 400


def test_unsupported_and_tampered_options_are_refused(
        emulator: EmulatorServer, emulator_session: requests.Session) -> None:
    seed_accounts(emulator, 5)
    url = f"{emulator.base_url}/accounts"
    assert emulator_session.get(url, params={"$skip": "2"}).status_code == 400
    assert emulator_session.get(url, params={"$orderby": "name sideways"}).status_code == 400
    link = emulator_session.get(url, headers={"Prefer": "odata.maxpagesize=2"}
                                ).json()["@odata.nextLink"]
    other_order = link.replace("accounts?", "accounts?$orderby=name&")
    assert emulator_session.get(other_order).status_code == 400
    garbage = emulator_session.get(url, params={"$skiptoken": "not-a-token"})
    assert garbage.status_code == 400
