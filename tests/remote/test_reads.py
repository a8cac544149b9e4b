"""Reads against the emulator over real HTTP: paging, incremental reads, reads by key."""

from __future__ import annotations

import json
import threading
import uuid
from collections import Counter
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from worker.emulator.server import EmulatorServer
from worker.remote.client import ODataClient
from worker.remote.config import load_connection
from worker.remote.errors import RemoteError, RemoteProtocolError
from worker.remote.filters import eq

from .helpers import client_for, marker, seed_accounts


def test_paging_10000_records_with_page_size_500_returns_each_once(
        emulator: EmulatorServer) -> None:
    tag = marker()
    keys = seed_accounts(emulator, 10_000, tag)
    with client_for(emulator, page_size=500) as client:
        accounts = client.entity_set("accounts", "accountid")
        pages = accounts.read_pages(select=["name"], filter=eq("description", tag))
        first = next(pages)  # a generator: the first page arrives before the rest is read
        assert len(first) == 500
        sizes = [len(first)]
        seen = Counter(r["accountid"] for r in first)
        for page in pages:
            sizes.append(len(page))
            seen.update(r["accountid"] for r in page)
    assert sizes == [500] * 20
    assert set(seen) == set(keys)
    assert max(seen.values()) == 1


def test_read_streams_records_with_select_filter_orderby_top(emulator: EmulatorServer) -> None:
    tag = marker()
    seed_accounts(emulator, 30, tag)
    with client_for(emulator, page_size=7) as client:
        accounts = client.entity_set("accounts", "accountid")
        rows = list(accounts.read(select="name,description", filter=eq("description", tag),
                                  orderby="name desc"))
        assert len(rows) == 30
        assert [r["name"] for r in rows] == sorted((r["name"] for r in rows), reverse=True)
        assert set(rows[0]) >= {"accountid", "name", "description"}
        assert "telephone1" not in rows[0]
        top = list(accounts.read(filter=eq("description", tag), orderby="name asc", top=3))
        assert [r["name"] for r in top] == [f"{tag} 0", f"{tag} 1", f"{tag} 10"]


def test_a_quote_in_a_value_cannot_change_the_filter(emulator: EmulatorServer) -> None:
    tag = marker()
    seed_accounts(emulator, 5, tag)
    with client_for(emulator) as client:
        accounts = client.entity_set("accounts", "accountid")
        key = str(uuid.uuid4())
        accounts.create(key, {"name": "O'Brien & Sons + Co", "description": tag})
        hostile = f"x' or description eq '{tag}"
        assert list(accounts.read(filter=eq("name", hostile))) == []
        found = list(accounts.read(filter=eq("name", "O'Brien & Sons + Co")))
        assert [r["accountid"] for r in found] == [key]


def test_read_modified_since_is_inclusive_with_overlap(emulator: EmulatorServer) -> None:
    tag = marker()
    with client_for(emulator) as client:
        accounts = client.entity_set("accounts", "accountid")
        created = [accounts.create(str(uuid.uuid4()), {"name": f"n{i}", "description": tag})
                   for i in range(5)]
        stamps = {c.modified_on for c in created}
        assert None not in stamps
        first = min(s for s in stamps if s is not None)
        last = max(s for s in stamps if s is not None)
        mine = eq("description", tag)
        rows = list(accounts.read_modified_since(first, select=["name"], filter=mine))
        assert {r["accountid"] for r in rows} == {c.key for c in created}
        # ordered by (modifiedon, key), and the key and stamp are always selected
        order = [(r["modifiedon"], r["accountid"]) for r in rows]
        assert order == sorted(order)
        # one second later still sees the last stamp: the overlap
        again = list(accounts.read_modified_since(last + timedelta(seconds=1), filter=mine))
        assert {r["accountid"] for r in again} >= {c.key for c in created
                                                   if c.modified_on == last}
        assert list(accounts.read_modified_since(last + timedelta(seconds=1), filter=mine,
                                                 overlap=timedelta(0))) == []
        everything = list(accounts.read_modified_since(None, filter=mine))
        assert len(everything) == 5


def test_read_by_keys_in_chunks(emulator: EmulatorServer) -> None:
    tag = marker()
    keys = seed_accounts(emulator, 23, tag)
    missing = str(uuid.uuid4())
    with client_for(emulator) as client:
        accounts = client.entity_set("accounts", "accountid")
        before = emulator.stats.snapshot()["requests"]
        rows = list(accounts.read_by_keys([*keys, missing, keys[0].upper()], select=["name"],
                                          chunk_size=5))
        requests = emulator.stats.snapshot()["requests"] - before
    assert sorted(r["accountid"] for r in rows) == sorted(keys)
    assert requests == 5  # 24 distinct keys in chunks of 5


def test_get_one_or_none(emulator: EmulatorServer) -> None:
    tag = marker()
    key = seed_accounts(emulator, 1, tag)[0]
    with client_for(emulator) as client:
        accounts = client.entity_set("accounts", "accountid")
        record = accounts.get(key, select=["name"])
        assert record is not None and record["name"] == f"{tag} 0"
        assert accounts.get(str(uuid.uuid4())) is None


def test_metadata_and_unknown_sets(emulator: EmulatorServer) -> None:
    with client_for(emulator) as client:
        assert "<edmx:Edmx" in client.metadata()
        with pytest.raises(RemoteError) as info:
            list(client.entity_set("nosuchthings", "id").read())
        assert info.value.status == 404
        assert info.value.message.startswith("Resource not found")


def test_a_repeated_next_link_is_an_error() -> None:
    """A service whose next link repeats would be read forever; the emulator never does
    that, so a minimal loopback server plays the broken service."""

    class Looping(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            port = self.server.server_address[1]  # type: ignore[index]
            page = {"value": [{"ID": "a"}],
                    "@odata.nextLink": f"http://127.0.0.1:{port}/svc/Items?$skiptoken=1"}
            body = json.dumps(page).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Looping)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        settings = load_connection(env={
            "CRMSYNC_CRM_URL": f"http://127.0.0.1:{server.server_port}/svc",
            "CRMSYNC_CRM_DIALECT": "odata", "CRMSYNC_CRM_KEY_TYPE": "string"})
        with ODataClient(settings) as client:
            items = client.entity_set("Items", "ID", "modifiedAt")
            pages = items.read_pages()
            assert next(pages) == [{"ID": "a"}]  # the first page, whose link is new
            # the page it links to links to itself
            with pytest.raises(RemoteProtocolError, match="same @odata.nextLink twice") as info:
                next(pages)
            assert str(info.value).startswith("GET /svc/Items: HTTP 200 ")
    finally:
        server.shutdown()
        server.server_close()
