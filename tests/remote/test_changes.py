"""Change tracking through delta links, against a minimal loopback OData service (the
emulator has no change tracking)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from worker.emulator.server import EmulatorServer
from worker.errors import ConfigurationError
from worker.remote.client import ODataClient
from worker.remote.config import load_connection
from worker.remote.errors import RemoteDeltaExpired, RemoteProtocolError

A, B, C = ("a0000000-0000-0000-0000-00000000000a", "b0000000-0000-0000-0000-00000000000b",
           "c0000000-0000-0000-0000-00000000000c")


class DeltaService(BaseHTTPRequestHandler):
    """``/svc/accounts``: two pages, then a delta link; ``$deltatoken=1`` has one change
    and two deletions (4.0 and 4.01 style); ``$deltatoken=0`` has expired."""

    prefers: list[str] = []

    def do_GET(self) -> None:
        self.prefers.append(self.headers.get("Prefer", ""))
        root = f"http://127.0.0.1:{self.server.server_address[1]}/svc"  # type: ignore[index]
        status, doc = 200, self.answer(root)
        if doc is None:
            status, doc = 410, {"error": {"code": "0x80044352", "message": "expired token"}}
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def answer(self, root: str) -> dict[str, Any] | None:
        if "$deltatoken=0" in self.path:
            return None
        if "$deltatoken=1" in self.path:
            return {"value": [
                {"accountid": A, "name": "changed"},
                {"@odata.context": f"{root}/$metadata#accounts/$deletedEntity", "id": B,
                 "reason": "deleted"},
                {"@removed": {"reason": "deleted"}, "@id": f"{root}/accounts({C})"},
            ], "@odata.deltaLink": f"{root}/accounts?$deltatoken=2"}
        if "$skiptoken=1" in self.path:
            return {"value": [{"accountid": B, "name": "b"}],
                    "@odata.deltaLink": f"{root}/accounts?$select=name&$deltatoken=1"}
        return {"value": [{"accountid": A, "name": "a"}],
                "@odata.nextLink": f"{root}/accounts?$select=name&$skiptoken=1"}

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def service() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), DeltaService)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                     daemon=True).start()
    DeltaService.prefers = []
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/svc"
    finally:
        server.shutdown()
        server.server_close()


def client(url: str, tracking: bool = True) -> ODataClient:
    return ODataClient(load_connection(env={
        "CRMSYNC_CRM_URL": url, "CRMSYNC_CRM_CHANGE_TRACKING": str(tracking).lower(),
        "CRMSYNC_CRM_PAGE_SIZE": "1"}))


def test_first_read_then_changes_and_deletions(service: str) -> None:
    with client(service) as c:
        accounts = c.entity_set("accounts", "accountid")
        first = accounts.read_changes(select=["name"])
        assert [(ch.key, ch.deleted) for ch in first] == [(A, False), (B, False)]
        assert first.delta_link == f"{service}/accounts?$select=name&$deltatoken=1"
        assert DeltaService.prefers[0] == "odata.track-changes,odata.maxpagesize=1"
        later = accounts.read_changes(first.delta_link)
        changes = list(later)
        assert [(ch.key, ch.deleted) for ch in changes] == [(A, False), (B, True), (C, True)]
        assert changes[0].record == {"accountid": A, "name": "changed"}
        assert later.delta_link == f"{service}/accounts?$deltatoken=2"


def test_an_expired_delta_link(service: str) -> None:
    with client(service) as c, pytest.raises(RemoteDeltaExpired) as info:
        list(c.entity_set("accounts", "accountid").read_changes(
            f"{service}/accounts?$deltatoken=0"))
    assert info.value.status == 410 and info.value.code == "0x80044352"


def test_change_tracking_must_be_switched_on(service: str) -> None:
    with client(service, tracking=False) as c, pytest.raises(ConfigurationError,
                                                             match="change tracking is off"):
        list(c.entity_set("accounts", "accountid").read_changes())


def test_a_service_without_delta_links(emulator: EmulatorServer) -> None:
    emulator.store.set_change_tracking("accounts", False)
    with client(emulator.base_url) as c, pytest.raises(RemoteProtocolError,
                                                       match="no @odata.deltaLink"):
        list(c.entity_set("accounts", "accountid").read_changes())
