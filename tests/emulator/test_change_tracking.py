"""Change tracking over real HTTP: ``Prefer: odata.track-changes``, ``@odata.deltaLink``,
``$deletedEntity`` entries, expired tokens (410) and the options Dataverse refuses."""

from __future__ import annotations

import random
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from tests.emulator.helpers import batch, batch_statuses, create, http_part, seed_accounts
from worker.emulator import EmulatorServer, start_emulator
from worker.emulator.errors import ODataError
from worker.emulator.schema import Schema
from worker.emulator.store import ChangeToken, Store, whole_seconds_utc
from worker.emulator.values import Changes

TRACK = {"Prefer": "odata.track-changes"}


def tracked_read(session: requests.Session, url: str, page_size: int | None = None,
                 params: dict[str, str] | None = None,
                 ) -> tuple[list[dict[str, Any]], str, list[dict[str, Any]]]:
    """Every page of a tracked read (or of a delta link): the rows, the delta link, and the
    page documents."""
    prefer = "odata.track-changes" + (f",odata.maxpagesize={page_size}" if page_size else "")
    response = session.get(url, params=params, headers={"Prefer": prefer})
    rows: list[dict[str, Any]] = []
    docs = []
    while True:
        assert response.status_code == 200, response.text
        doc = response.json()
        docs.append(doc)
        rows += doc["value"]
        if "@odata.nextLink" not in doc:
            return rows, doc["@odata.deltaLink"], docs
        assert "@odata.deltaLink" not in doc  # only the last page has it
        response = session.get(doc["@odata.nextLink"], headers={"Prefer": prefer})


def deleted_ids(rows: list[dict[str, Any]]) -> list[str]:
    return [r["id"] for r in rows if r.get("@odata.context", "").endswith("/$deletedEntity")]


def changed(rows: list[dict[str, Any]], key: str = "accountid") -> dict[str, dict[str, Any]]:
    return {r[key]: r for r in rows if key in r}


def test_first_read_returns_everything_and_a_delta_link(
        emulator: EmulatorServer, emulator_session: requests.Session) -> None:
    keys = seed_accounts(emulator, 3)
    url = f"{emulator.base_url}/accounts"
    response = emulator_session.get(url, params={"$select": "name,accountnumber"},
                                    headers=TRACK)
    assert response.status_code == 200
    assert response.headers["Preference-Applied"] == "odata.track-changes"
    doc = response.json()
    assert doc["@odata.context"] == (
        f"{emulator.base_url}/$metadata#accounts(name,accountnumber)")
    assert sorted(r["accountid"] for r in doc["value"]) == sorted(keys)
    assert set(doc["value"][0]) == {"@odata.etag", "accountid", "name", "accountnumber"}
    link = doc["@odata.deltaLink"]
    assert link.startswith(f"{url}?$select=name,accountnumber&$deltatoken=")
    token = parse_qs(urlsplit(link).query)["$deltatoken"][0]
    # no write since: the same version (the token's issue time is the clock's, to the second)
    assert ChangeToken.parse(token).version == emulator.store.change_token().version
    assert "%21" in link  # the token's "!" is percent-encoded, as Dataverse sends it


def test_delta_link_returns_exactly_what_changed(
        emulator: EmulatorServer, emulator_session: requests.Session) -> None:
    keep, change, remove = seed_accounts(emulator, 3)
    url = f"{emulator.base_url}/accounts"
    _, link, _ = tracked_read(emulator_session, url, params={"$select": "name,address1_city"})

    assert emulator_session.patch(f"{url}({change})", json={"name": "Renamed"}).status_code == 204
    assert emulator_session.delete(f"{url}({remove})").status_code == 204
    added = create(emulator_session, emulator, "accounts", {"name": "New", "address1_city": "Kiel"})

    response = emulator_session.get(link, headers=TRACK)
    assert response.status_code == 200, response.text
    assert response.headers["Preference-Applied"] == "odata.track-changes"
    doc = response.json()
    assert doc["@odata.context"] == (
        f"{emulator.base_url}/$metadata#accounts(name,address1_city)/$delta")
    rows = doc["value"]
    assert [r.get("accountid") for r in rows[:2]] == [change, added]  # in version order
    assert rows[0]["name"] == "Renamed" and rows[1] == {
        "@odata.etag": rows[1]["@odata.etag"], "accountid": added, "name": "New",
        "address1_city": "Kiel"}
    assert rows[2] == {"@odata.context": f"{emulator.base_url}/$metadata#accounts/$deletedEntity",
                       "id": remove, "reason": "deleted"}
    assert len(rows) == 3 and keep not in changed(rows)
    new_link = doc["@odata.deltaLink"]
    assert new_link != link and new_link.startswith(f"{url}?$select=name,address1_city&")

    # Nothing happened since: an empty delta, and yet another link that still works.
    again = emulator_session.get(new_link).json()  # the Prefer header is not needed
    assert again["value"] == [] and again["@odata.deltaLink"]
    assert emulator_session.get(again["@odata.deltaLink"]).json()["value"] == []
    # The old link can be read again (until it expires) and still answers the same.
    assert [r.get("accountid", r.get("id")) for r in emulator_session.get(link).json()["value"]
            ] == [change, added, remove]


def test_changes_by_any_client_count_batches_and_lookup_removal(
        emulator: EmulatorServer, emulator_session: requests.Session) -> None:
    account = create(emulator_session, emulator, "accounts", {"name": "Parent"})
    contact = create(emulator_session, emulator, "contacts", {
        "lastname": "Child", "parentcustomerid_account@odata.bind": f"/accounts({account})"})
    _, accounts_link, _ = tracked_read(emulator_session, f"{emulator.base_url}/accounts")
    _, contacts_link, _ = tracked_read(emulator_session, f"{emulator.base_url}/contacts",
                                       params={"$select": "_parentcustomerid_value"})
    content_type, body = batch([[
        http_part("POST", "/api/data/v9.2/accounts", {"name": "From a batch"}),
        http_part("DELETE", f"/api/data/v9.2/accounts({account})"),
    ]])
    response = emulator_session.post(f"{emulator.base_url}/$batch", data=body,
                                     headers={"Content-Type": content_type})
    assert batch_statuses(response) == [204, 204]
    rows = emulator_session.get(accounts_link).json()["value"]
    assert [r["name"] for r in changed(rows).values()] == ["From a batch"]
    assert deleted_ids(rows) == [account]
    # Deleting the account removed the contact's link to it: the contact changed too.
    contact_rows = emulator_session.get(contacts_link).json()["value"]
    assert [(r["contactid"], r["_parentcustomerid_value"]) for r in contact_rows] == [
        (contact, None)]


def test_a_failed_change_set_leaves_no_trace(emulator: EmulatorServer,
                                             emulator_session: requests.Session) -> None:
    key, = seed_accounts(emulator, 1)
    _, link, _ = tracked_read(emulator_session, f"{emulator.base_url}/accounts")
    content_type, body = batch([[
        http_part("DELETE", f"/api/data/v9.2/accounts({key})"),
        http_part("PATCH", "/api/data/v9.2/accounts(00000000-0000-0000-0000-000000000001)",
                  {"nosuchcolumn": 1}),
    ]])
    emulator_session.post(f"{emulator.base_url}/$batch", data=body,
                          headers={"Content-Type": content_type})
    assert emulator.store.get("accounts", key) is not None
    assert emulator_session.get(link).json()["value"] == []


def test_created_then_deleted_comes_only_as_deleted_and_recreated_only_as_changed(
        emulator: EmulatorServer, emulator_session: requests.Session) -> None:
    url = f"{emulator.base_url}/accounts"
    old, = seed_accounts(emulator, 1)
    _, link, _ = tracked_read(emulator_session, url)
    brief = create(emulator_session, emulator, "accounts", {"name": "Brief"})
    assert emulator_session.delete(f"{url}({brief})").status_code == 204
    assert emulator_session.delete(f"{url}({old})").status_code == 204
    assert emulator_session.patch(f"{url}({old})", json={"name": "Back"}).status_code == 204
    rows = emulator_session.get(link).json()["value"]
    assert list(changed(rows)) == [old] and changed(rows)[old]["name"] == "Back"
    assert deleted_ids(rows) == [brief]


def test_paging_ends_with_the_delta_link_on_the_last_page(
        emulator: EmulatorServer, emulator_session: requests.Session) -> None:
    keys = seed_accounts(emulator, 25)
    url = f"{emulator.base_url}/accounts"
    response = emulator_session.get(url, params={"$select": "name"}, headers={
        "Prefer": "odata.track-changes,odata.maxpagesize=10"})
    assert response.headers["Preference-Applied"] == "odata.track-changes,odata.maxpagesize=10"
    first = response.json()
    assert len(first["value"]) == 10 and "@odata.deltaLink" not in first
    # Between pages, a record already read and one not yet read change, one is deleted.
    read_first = first["value"][0]["accountid"]
    not_yet = next(k for k in keys if k not in changed(first["value"]))
    emulator_session.patch(f"{url}({read_first})", json={"name": "changed after page 1"})
    emulator_session.patch(f"{url}({not_yet})", json={"name": "changed before its page"})
    emulator_session.delete(f"{url}({read_first})")
    # The later pages are tracked without the header being repeated.
    second = emulator_session.get(first["@odata.nextLink"]).json()
    assert len(second["value"]) == 10 and "@odata.deltaLink" not in second
    third = emulator_session.get(second["@odata.nextLink"]).json()
    assert len(third["value"]) == 5 and "@odata.nextLink" not in third
    link = third["@odata.deltaLink"]
    assert link.startswith(f"{url}?$select=name&$deltatoken=")
    # The delta starts where the first page was read: nothing that happened since is lost.
    rows = emulator_session.get(link).json()["value"]
    assert list(changed(rows)) == [not_yet] and deleted_ids(rows) == [read_first]


def test_delta_responses_are_paged_too(emulator: EmulatorServer,
                                       emulator_session: requests.Session) -> None:
    keys = seed_accounts(emulator, 30)
    url = f"{emulator.base_url}/accounts"
    _, link, _ = tracked_read(emulator_session, url, 7)
    for key in keys[:12]:
        emulator_session.patch(f"{url}({key})", json={"name": f"new {key}"})
    for key in keys[20:]:
        emulator_session.delete(f"{url}({key})")
    rows, next_delta, docs = tracked_read(emulator_session, link, 5)
    assert [len(d["value"]) for d in docs] == [5, 5, 5, 5, 2]
    assert "@odata.deltaLink" in docs[-1] and all("@odata.deltaLink" not in d for d in docs[:-1])
    assert list(changed(rows)) == keys[:12]  # changes first, in version order
    assert deleted_ids(rows) == keys[20:]    # then deletions
    assert next_delta.startswith(f"{url}?$deltatoken=")
    assert emulator_session.get(next_delta).json()["value"] == []


def test_an_expired_token_is_410(emulator: EmulatorServer,
                                 emulator_session: requests.Session) -> None:
    seed_accounts(emulator, 2)
    _, accounts_link, _ = tracked_read(emulator_session, f"{emulator.base_url}/accounts")
    _, contacts_link, _ = tracked_read(emulator_session, f"{emulator.base_url}/contacts")
    emulator.store.expire_change_tokens("accounts")
    response = emulator_session.get(accounts_link, headers=TRACK)
    assert response.status_code == 410
    error = response.json()["error"]
    assert error["code"] == "0x80044352" and "change tracking token has expired" in error["message"]
    assert emulator_session.get(contacts_link).status_code == 200  # another set: still valid
    # A fresh read gives a working link again.
    _, fresh, _ = tracked_read(emulator_session, f"{emulator.base_url}/accounts")
    assert emulator_session.get(fresh).json()["value"] == []


def test_the_admin_endpoint_expires_every_token(emulator: EmulatorServer,
                                                emulator_session: requests.Session) -> None:
    _, accounts_link, _ = tracked_read(emulator_session, f"{emulator.base_url}/accounts")
    _, contacts_link, _ = tracked_read(emulator_session, f"{emulator.base_url}/contacts")
    response = emulator_session.post(f"{emulator.admin_url}/expire-change-tokens")
    assert response.status_code == 200
    assert "accounts" in response.json()["expired"]
    assert emulator_session.get(accounts_link).status_code == 410
    assert emulator_session.get(contacts_link).status_code == 410
    _, link, _ = tracked_read(emulator_session, f"{emulator.base_url}/accounts")
    assert emulator_session.post(f"{emulator.admin_url}/expire-change-tokens",
                                 json={"sets": ["contacts"]}).json() == {"expired": ["contacts"]}
    assert emulator_session.get(link).status_code == 200
    assert emulator_session.post(f"{emulator.admin_url}/expire-change-tokens",
                                 json={"sets": ["nosuchset"]}).status_code == 404
    # A reset empties the store without tombstones: its tokens expire as well.
    emulator_session.post(f"{emulator.admin_url}/reset")
    assert emulator_session.get(link).status_code == 410


def test_tokens_expire_after_the_retention(emulator: EmulatorServer,
                                           emulator_session: requests.Session,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    now = [whole_seconds_utc()]
    monkeypatch.setattr(emulator.store, "_clock", lambda: now[0])
    emulator.store.change_retention = 3600
    _, link, _ = tracked_read(emulator_session, f"{emulator.base_url}/accounts")
    assert now[0].strftime("%m%%2F%d%%2F%Y%%20%H%%3A%M%%3A%S") in link
    now[0] += timedelta(seconds=3600)
    assert emulator_session.get(link).status_code == 200  # just within the retention
    now[0] += timedelta(seconds=1)
    assert emulator_session.get(link).status_code == 410


def test_tokens_this_store_never_issued(emulator: EmulatorServer,
                                        emulator_session: requests.Session) -> None:
    url = f"{emulator.base_url}/accounts"
    now = datetime.now(UTC).strftime("%m/%d/%Y %H:%M:%S")
    future = emulator_session.get(url, params={"$deltatoken": f"999999!{now}"})
    assert future.status_code == 410
    before = emulator_session.get(url, params={"$deltatoken": "0!01/01/2020 00:00:00"})
    assert before.status_code == 410
    for bad in ("x", "12", "12!yesterday"):
        response = emulator_session.get(url, params={"$deltatoken": bad})
        assert response.status_code == 400 and "$deltatoken" in response.json()["error"]["message"]
    bad_page = emulator_session.get(url, params={"$deltatoken": f"0!{now}", "$skiptoken": "e30"})
    assert bad_page.status_code == 400


@pytest.mark.parametrize("option, value", [
    ("$filter", "name eq 'x'"), ("$orderby", "name"), ("$top", "5")])
def test_options_dataverse_refuses_with_change_tracking(
        emulator: EmulatorServer, emulator_session: requests.Session, option: str,
        value: str) -> None:
    url = f"{emulator.base_url}/accounts"
    response = emulator_session.get(url, params={option: value}, headers=TRACK)
    assert response.status_code == 400
    assert response.json()["error"] == {
        "code": "0x80060888",
        "message": f'The "{option}" query parameter isn\'t supported when Change Tracking '
                   "is enabled."}
    _, link, _ = tracked_read(emulator_session, url)
    assert emulator_session.get(link, params={option: value}).status_code == 400
    # Without the preference the option is an ordinary one.
    assert emulator_session.get(url, params={option: value}).status_code == 200


def test_a_set_without_change_tracking() -> None:
    with start_emulator(port=0, change_tracking=["contacts"]) as server, \
            requests.Session() as session:
        url = f"{server.base_url}/accounts"
        response = session.get(url, headers={"Prefer": "odata.track-changes,odata.maxpagesize=5"})
        assert response.status_code == 200 and "@odata.deltaLink" not in response.json()
        assert response.headers["Preference-Applied"] == "odata.maxpagesize=5"
        _, link, _ = tracked_read(session, f"{server.base_url}/contacts")
        token = parse_qs(urlsplit(link).query)["$deltatoken"][0]
        refused = session.get(url, params={"$deltatoken": token})
        assert refused.status_code == 400 and "not enabled" in refused.text
        server.store.set_change_tracking("accounts")
        assert "@odata.deltaLink" in session.get(url, headers=TRACK).json()
        server.store.set_change_tracking("contacts", False)
        assert session.get(link).status_code == 400


def test_a_replica_kept_by_deltas_matches_while_another_client_writes(
        emulator: EmulatorServer, emulator_session: requests.Session) -> None:
    """Random creates, updates and deletes, every other round while the delta is being
    paged: applying every delta to a copy gives exactly the store's content."""
    url = f"{emulator.base_url}/accounts"
    seed_accounts(emulator, 40)
    rows, link, _ = tracked_read(emulator_session, url, 9, {"$select": "name"})
    replica = {r["accountid"]: r["name"] for r in rows}
    rng = random.Random(7)
    stop = threading.Event()
    written: list[int] = []

    def random_write(n: int) -> None:
        keys = [r["accountid"] for r in emulator.store.scan("accounts", None)]
        action = rng.random()
        if action < 0.3 or not keys:
            emulator.store.create("accounts", Changes(values={"name": f"created {n}"}))
        elif action < 0.7:
            emulator.store.upsert("accounts", rng.choice(keys),
                                  Changes(values={"name": f"updated {n}"}))
        else:
            emulator.store.delete("accounts", rng.choice(keys))

    def writer() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            random_write(n)
            written.append(n)
            time.sleep(0.0005)

    def apply(rows: list[dict[str, Any]]) -> None:
        for row in rows:
            if "id" in row:
                replica.pop(row["id"], None)
            else:
                replica[row["accountid"]] = row["name"]

    for round_ in range(6):
        if round_ % 2:
            thread = threading.Thread(target=writer)
            written.clear()
            thread.start()
            deadline = time.monotonic() + 5
            while len(written) < 20 and time.monotonic() < deadline:
                time.sleep(0.001)
            rows, link, pages = tracked_read(emulator_session, link, 9)
            during = len(written)
            stop.set()
            thread.join()
            stop.clear()
            assert len(pages) > 1 and during >= 20
        else:
            for n in range(20):
                random_write(n)
            rows, link, _ = tracked_read(emulator_session, link, 9)
        apply(rows)
    rows, link, _ = tracked_read(emulator_session, link, 9)  # the writes of the last round
    apply(rows)
    assert replica == {r["accountid"]: r["name"] for r in emulator.store.scan("accounts", None)}


# -- the store on its own ------------------------------------------------------------------


def test_store_tombstones_are_dropped_after_the_retention() -> None:
    now = [datetime(2026, 11, 25, 12, 0, tzinfo=UTC)]
    store = Store(Schema(), clock=lambda: now[0], change_retention=60)
    keys = [store.create("accounts", Changes(values={"name": str(n)}))["accountid"]
            for n in range(3)]
    token = store.change_token()
    store.delete("accounts", keys[0])
    assert store.changes_since("accounts", token.version, store.change_token().version) == (
        [], [(token.version + 1, keys[0])])
    now[0] += timedelta(seconds=61)
    store.delete("accounts", keys[1])
    _, deleted = store.changes_since("accounts", 0, store.change_token().version)
    assert [key for _, key in deleted] == [keys[1]]  # the older tombstone is gone
    with pytest.raises(ODataError, match="expired") as expired:
        store.check_change_token("accounts", token)
    assert expired.value.status == 410
    store.check_change_token("accounts", store.change_token())


def test_change_token_text() -> None:
    token = ChangeToken(919042, datetime(2017, 8, 22, 8, 10, 44, tzinfo=UTC))
    assert str(token) == "919042!08/22/2017 08:10:44"
    assert ChangeToken.parse(str(token)) == token
    with pytest.raises(ValueError):
        ChangeToken.parse("919042")
