"""Reads answered from indexes: key, alternate-key and modified-on range reads return
exactly what a scan would, in order, page by page, on both profiles; and a page of such a
read looks only at the records it returns, however large the set."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urljoin

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fixtures.emulator import ODATA_HEADERS, PROFILES, start_emulator_for
from worker.emulator import EmulatorServer, query
from worker.emulator.access import IndexedRows
from worker.emulator.profiles import profile_named
from worker.emulator.store import Store

BASE = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


def stamped_accounts(profile: str, count: int, per_second: int = 3) -> list[dict[str, Any]]:
    """Accounts in a data-file shape, ``per_second`` of them sharing each stamp."""
    names = profile_named(profile).schema()["accounts"]
    rows = []
    for n in range(count):
        stamp = (BASE + timedelta(seconds=n // per_second)).isoformat()
        rows.append({names.key: str(uuid.uuid4()), "name": f"Account {n:05d}",
                     "accountnumber": f"C{n:05d}", "statecode": n % 2, "createdon": stamp,
                     names.modified_on: stamp, "versionnumber": n + 1})
    return rows


@pytest.fixture(params=PROFILES)
def loaded(request: pytest.FixtureRequest) -> Iterator[tuple[EmulatorServer, list[dict]]]:
    server = start_emulator_for(request.param, page_size=7)
    rows = stamped_accounts(request.param, 120)
    server.store.load({"versionnumber": len(rows), "sets": {"accounts": rows}})
    try:
        yield server, rows
    finally:
        server.stop()


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as s:
        s.headers.update(ODATA_HEADERS)
        yield s


def _read(server: EmulatorServer, session: requests.Session, **params: str) -> list[str]:
    entity_set = server.emulator.schema["accounts"]
    url = f"{server.base_url}/accounts"
    keys: list[str] = []
    response = session.get(url, params={"$select": "name", **params},
                           headers={"Prefer": "odata.maxpagesize=7"})
    while True:
        assert response.status_code == 200, response.text
        doc = response.json()
        assert len(doc["value"]) <= 7
        keys += [r[entity_set.key] for r in doc["value"]]
        if "@odata.nextLink" not in doc:
            return keys
        url = urljoin(server.base_url + "/", doc["@odata.nextLink"])
        response = session.get(url, headers={"Prefer": "odata.maxpagesize=7"})


def test_modified_on_ranges_page_exactly_like_a_scan(
        loaded: tuple[EmulatorServer, list[dict]], session: requests.Session) -> None:
    server, rows = loaded
    entity_set = server.emulator.schema["accounts"]
    key, stamp = entity_set.key, entity_set.modified_on
    order = f"{stamp} asc,{key} asc"

    def expected(test: Any) -> list[str]:
        chosen = [r for r in rows if test(datetime.fromisoformat(r[stamp]), r)]
        return [r[key] for r in sorted(chosen, key=lambda r: (r[stamp], r[key]))]

    mark, later = BASE + timedelta(seconds=10), BASE + timedelta(seconds=30)
    text, later_text = mark.strftime("%Y-%m-%dT%H:%M:%SZ"), later.strftime("%Y-%m-%dT%H:%M:%SZ")
    cases = {
        f"{stamp} ge {text}": lambda t, r: t >= mark,
        f"{stamp} gt {text}": lambda t, r: t > mark,
        f"{stamp} lt {text}": lambda t, r: t < mark,
        f"{stamp} eq {text}": lambda t, r: t == mark,
        f"{text} le {stamp}": lambda t, r: t >= mark,
        f"({stamp} ge {text}) and ({stamp} lt {later_text}) and statecode eq 1":
            lambda t, r: mark <= t < later and r["statecode"] == 1,
    }
    for text_filter, test in cases.items():
        got = _read(server, session, **{"$filter": text_filter, "$orderby": order})
        assert got == expected(test), text_filter
    assert _read(server, session, **{"$orderby": order}) == expected(lambda t, r: True)
    # The default order (by key) of a range read: same records, sorted by key.
    got = _read(server, session, **{"$filter": f"{stamp} ge {text}"})
    assert got == sorted(expected(lambda t, r: t >= mark))


def test_key_and_alternate_key_filters_find_their_records(
        loaded: tuple[EmulatorServer, list[dict]], session: requests.Session) -> None:
    server, rows = loaded
    entity_set = server.emulator.schema["accounts"]
    wanted = [rows[5][entity_set.key], rows[77][entity_set.key], rows[5][entity_set.key]]
    missing = str(uuid.uuid4())
    text = " or ".join(f"{entity_set.key} eq {k}" for k in [*wanted, missing])
    assert _read(server, session, **{"$filter": text}) == sorted(set(wanted))
    both = f"({entity_set.key} eq {wanted[0]}) and statecode eq 0"
    assert _read(server, session, **{"$filter": both}) == []  # rows[5] has statecode 1
    if entity_set.alternate_keys:  # Dataverse: accountnumber; case-insensitive, as there
        got = _read(server, session, **{"$filter": "accountnumber eq 'c00012' or "
                                                   "accountnumber eq 'C00013'"})
        assert sorted(got) == sorted([rows[12][entity_set.key], rows[13][entity_set.key]])


def test_a_read_sees_writes_made_between_its_pages(
        loaded: tuple[EmulatorServer, list[dict]], session: requests.Session) -> None:
    server, rows = loaded
    entity_set = server.emulator.schema["accounts"]
    key, stamp = entity_set.key, entity_set.modified_on
    url = f"{server.base_url}/accounts"
    params = {"$select": "name", "$orderby": f"{stamp} asc,{key} asc"}
    doc = session.get(url, params=params).json()
    seen = [r[key] for r in doc["value"]]
    session.delete(f"{url}({rows[-1][key]})")  # not read yet: must not come
    session.patch(f"{url}({rows[0][key]})", json={"name": "again"})  # read, and now newest
    while "@odata.nextLink" in doc:
        doc = session.get(urljoin(server.base_url + "/", doc["@odata.nextLink"])).json()
        seen += [r[key] for r in doc["value"]]
    assert rows[-1][key] not in seen
    assert seen[-1] == rows[0][key] and seen.count(rows[0][key]) == 2
    assert sorted(set(seen)) == sorted(r[key] for r in rows[:-1])


# -- at the store: how many records a page looks at ----------------------------------------

class CountingStore(Store):
    """A store that counts the records reads fetch and refuses whole-set scans."""

    looked_at = 0

    def get(self, set_name: str, key: str) -> dict[str, Any] | None:
        self.looked_at += 1
        return super().get(set_name, key)

    def scan(self, set_name: str, predicate: Any) -> list[dict[str, Any]]:
        raise AssertionError("a read scanned the whole set")


def _store(profile: str, count: int) -> CountingStore:
    store = CountingStore(profile_named(profile).schema())
    rows = stamped_accounts(profile, count, per_second=10)
    store.load({"versionnumber": count, "sets": {"accounts": rows}})
    return store


@pytest.mark.parametrize("profile", PROFILES)
def test_a_page_looks_only_at_the_records_it_returns(profile: str) -> None:
    store = _store(profile, 20_000)
    entity_set = store.schema["accounts"]
    key, stamp = entity_set.key, entity_set.modified_on
    since = (BASE + timedelta(seconds=1500)).strftime("%Y-%m-%dT%H:%M:%SZ")
    options = query.parse_query(entity_set, {
        "$filter": f"{stamp} ge {since} and statecode ge 0", "$orderby": f"{stamp},{key}"})
    store.looked_at = 0
    first = query.read_page(options, IndexedRows(store, entity_set, options), 50, None)
    assert len(first.rows) == 50 and store.looked_at == 51
    assert first.rows[0][stamp] == BASE + timedelta(seconds=1500)
    store.looked_at = 0
    second = query.read_page(options, IndexedRows(store, entity_set, options), 50,
                             first.next_token)
    assert store.looked_at == 51
    assert options.sort_values(second.rows[0]) > options.sort_values(first.rows[-1])
    wanted = [r[key] for r in first.rows[:10]]
    by_key = query.parse_query(entity_set, {
        "$filter": " or ".join(f"{key} eq {k}" for k in wanted)})
    store.looked_at = 0
    page = query.read_page(by_key, IndexedRows(store, entity_set, by_key), 50, None)
    assert sorted(r[key] for r in page.rows) == sorted(wanted) and store.looked_at == 10


OPS = st.sampled_from(["eq", "ge", "gt", "le", "lt"])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 40), min_size=1, max_size=60),
       st.lists(st.tuples(OPS, st.integers(-2, 42)), min_size=1, max_size=3),
       st.integers(1, 9), st.booleans())
def test_indexed_pages_equal_a_sorted_scan(seconds: list[int], terms: list[tuple[str, int]],
                                           page_size: int, by_key: bool) -> None:
    schema = profile_named("dataverse").schema()
    store = Store(schema)
    rows = [{"accountid": str(uuid.uuid4()), "name": f"n{n}",
             "modifiedon": (BASE + timedelta(seconds=s)).isoformat(), "versionnumber": n + 1}
            for n, s in enumerate(seconds)]
    store.load({"versionnumber": len(rows), "sets": {"accounts": rows}})
    entity_set = schema["accounts"]
    text = " and ".join(f"modifiedon {op} {(BASE + timedelta(seconds=s)).isoformat()}"
                        .replace("+00:00", "Z") for op, s in terms)
    params = {"$filter": text}
    if not by_key:
        params["$orderby"] = "modifiedon,accountid"
    options = query.parse_query(entity_set, params)
    got, token = [], None
    while True:
        page = query.read_page(options, IndexedRows(store, entity_set, options), page_size,
                               token)
        got += [r["accountid"] for r in page.rows]
        if not (token := page.next_token):
            break
    predicate = options.predicate
    assert predicate is not None
    expected = sorted((r for r in store.scan("accounts", None) if predicate(r)),
                      key=lambda r: r["accountid"] if by_key
                      else (r["modifiedon"], r["accountid"]))
    assert got == [r["accountid"] for r in expected]
