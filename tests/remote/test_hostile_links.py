"""Links in a reply are followed only on the connection's own origin: a hostile service's
next link or delta link (sent now, or stored by an earlier pass) never carries the token
elsewhere; and a service that sends new next links forever is followed no further than
``max_pages``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.hostile import TOKEN, Handler, HostileServer, Seen, client_of, hostile, never
from worker.remote.errors import RemoteProtocolError
from worker.runtime.probe import _delta_probe

ACCOUNT = {"accountid": "00000000-0000-0000-0000-000000000001", "name": "a"}


@pytest.fixture
def thief() -> Iterator[HostileServer]:
    """Another port on the same host, logging what it is sent."""
    with hostile(never) as server:
        yield server


@pytest.mark.parametrize("target", [
    "{thief}/steal",                          # another port
    "https://127.0.0.1:{port}/api/accounts",  # another scheme, same port
    "//localhost:{thief_port}/steal",         # scheme-relative, another host name
])
def test_a_next_link_to_another_origin_is_not_followed(thief: HostileServer,
                                                       target: str) -> None:
    def respond(handler: Handler, seen: Seen) -> None:
        link = target.format(thief=thief.origin, port=handler.server.server_address[1],
                             thief_port=thief.port)
        handler.json(200, {"value": [ACCOUNT], "@odata.nextLink": link})

    with hostile(respond) as crm, client_of(crm) as client, \
            pytest.raises(RemoteProtocolError) as caught:
        list(client.entity_set("accounts", "accountid").read())
    assert thief.seen == []  # 0 requests, 0 Authorization headers at the other port
    assert crm.authorizations() == [f"Bearer {TOKEN}"]
    message = str(caught.value)
    assert "another origin" in message and TOKEN not in message
    assert "\n" not in message


def test_a_delta_link_to_another_origin_is_not_stored(thief: HostileServer) -> None:
    def respond(handler: Handler, seen: Seen) -> None:
        handler.json(200, {"value": [ACCOUNT], "@odata.deltaLink": f"{thief.origin}/steal"})

    with hostile(respond) as crm, client_of(crm, change_tracking="true") as client:
        feed = client.entity_set("accounts", "accountid").read_changes()
        with pytest.raises(RemoteProtocolError, match=f"another origin \\({thief.origin}"):
            list(feed)
    assert feed.delta_link is None
    assert thief.seen == []


def test_a_stored_delta_link_to_another_origin_is_refused(thief: HostileServer) -> None:
    with hostile(never) as crm, client_of(crm, change_tracking="true") as client:
        accounts = client.entity_set("accounts", "accountid")
        with pytest.raises(RemoteProtocolError, match="stored"):
            list(accounts.read_changes(f"{thief.origin}/api/accounts?$deltatoken=1"))
        with pytest.raises(RemoteProtocolError, match="another origin"):
            _delta_probe(client, accounts.url, f"{thief.origin}/api/accounts?$deltatoken=1")
    assert thief.seen == [] and crm.seen == []


def test_links_on_the_own_origin_are_followed() -> None:
    def respond(handler: Handler, seen: Seen) -> None:
        if "page=2" in seen.path:
            handler.json(200, {"value": [ACCOUNT], "@odata.deltaLink": "accounts?$deltatoken=9"})
        else:
            port = handler.server.server_address[1]  # absolute, default port not written
            handler.json(200, {"value": [ACCOUNT], "@odata.nextLink":
                               f"HTTP://127.0.0.1:{port}/api/accounts?page=2"})

    with hostile(respond) as crm, client_of(crm, change_tracking="true") as client:
        feed = client.entity_set("accounts", "accountid").read_changes()
        assert len(list(feed)) == 2
    assert feed.delta_link == f"{crm.origin}/api/accounts?$deltatoken=9"


def test_a_service_sending_new_next_links_forever_stops_at_max_pages() -> None:
    def respond(handler: Handler, seen: Seen) -> None:
        n = int(seen.path.rpartition("n=")[2]) if "n=" in seen.path else 0
        handler.json(200, {"value": [ACCOUNT], "@odata.nextLink": f"accounts?n={n + 1}"})

    with hostile(respond) as crm, client_of(crm, max_pages=25) as client, \
            pytest.raises(RemoteProtocolError, match="more than max_pages 25 pages"):
        list(client.entity_set("accounts", "accountid").read())
    assert len(crm.seen) == 25
